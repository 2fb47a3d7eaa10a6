"""The jobs and periodic tasks workers run through arq: each translates between arq and a use
case (`services/`), nothing more. A use case's `Unavailable` becomes arq's `Retry`."""

from __future__ import annotations

import uuid
from typing import Any

from arq import Retry

from authbroker.logs import get_logger
from services import authorizations, probes, revocation
from services.errors import Unavailable
from storage import authorizations as stored_authorizations
from storage import connect_links, connections, outbox
from worker.context import WorkerContext

log = get_logger("authbroker.worker")


async def exchange_code(ctx: dict[str, Any], authorization_id: str) -> str:
    try:
        return await authorizations.exchange(WorkerContext.of(ctx), uuid.UUID(authorization_id))
    except Unavailable as exc:
        raise Retry(defer=exc.retry_after) from None


async def revoke_connection(ctx: dict[str, Any], connection_id: str) -> str:
    attempt = int(ctx.get("job_try", 1))
    try:
        return await revocation.revoke(WorkerContext.of(ctx), connection_id, attempt=attempt)
    except Unavailable as exc:
        raise Retry(defer=exc.retry_after) from None


async def probe_connection(ctx: dict[str, Any], connection_id: str) -> str:
    return await probes.probe(WorkerContext.of(ctx), connection_id)


# ------------------------------------------------------------------------------ periodic


async def sweep_codes(ctx: dict[str, Any]) -> int:
    return await authorizations.enqueue_stranded(WorkerContext.of(ctx).resources)


async def expire_authorizations(ctx: dict[str, Any]) -> int:
    return await authorizations.expire(WorkerContext.of(ctx).resources)


async def sweep_revocations(ctx: dict[str, Any]) -> int:
    return await revocation.enqueue_stranded(WorkerContext.of(ctx).resources)


async def schedule_probes(ctx: dict[str, Any]) -> int:
    return await probes.schedule(WorkerContext.of(ctx).resources)


async def mark_expired_tokens(ctx: dict[str, Any]) -> int:
    """Name `token_expired` on active connections whose token died while no refresh could run
    (the provider is unavailable, a worker died holding it): none says it is fine meanwhile."""
    count = await connections.mark_tokens_expired(WorkerContext.of(ctx).resources.pool)
    if count:
        log.warning("tokens_expired_unrefreshed", count=count)
    return count


async def prune(ctx: dict[str, Any]) -> None:
    """Forget relayed events, finished authorizations and expired connect links after a week."""
    async with WorkerContext.of(ctx).resources.pool.acquire() as conn:
        await outbox.prune(conn)
        await stored_authorizations.purge(conn)
        await connect_links.purge(conn)
