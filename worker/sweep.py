"""Housekeeping that keeps promises the web side made: stored codes get exchanged even if their
job was never enqueued (Redis was down at the callback), and authorizations nobody completed
end with a named problem instead of a connection pending forever."""

from __future__ import annotations

from typing import Any

from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from storage import authorizations, connections, outbox
from storage.jobs import enqueue_exchange, enqueue_revoke
from worker.context import WorkerContext

log = get_logger("authbroker.sweep")

STRANDED_AFTER = 10.0  # seconds a stored code may wait for its job before the sweep steps in


async def sweep_codes(ctx: dict[str, Any]) -> int:
    """Enqueue the exchange of codes whose job never ran; the job id deduplicates."""
    res = WorkerContext.of(ctx).resources
    stranded = await authorizations.stranded_codes(
        res.pool, older_than_seconds=STRANDED_AFTER, limit=500
    )
    for authorization_id in stranded:
        await enqueue_exchange(res, authorization_id)
    if stranded:
        log.info("stranded_codes_enqueued", count=len(stranded))
    return len(stranded)


async def expire_authorizations(ctx: dict[str, Any]) -> int:
    """End authorizations past their lifetime with no callback; a connection that was only
    waiting for them fails with `authorization_expired`."""
    res = WorkerContext.of(ctx).resources
    async with res.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """WITH ended AS (
                   UPDATE authorizations SET done = true, done_at = now(), outcome = 'expired',
                          problem = 'authorization_expired', code_verifier = NULL
                   WHERE NOT done AND code IS NULL AND expires_at < now()
                   RETURNING connection_id)
               UPDATE connections c SET status = 'failed', problem = 'authorization_expired',
                      problem_detail = NULL, updated_at = now()
               FROM apps a
               WHERE c.id IN (SELECT connection_id FROM ended) AND c.status = 'pending'
                 AND a.id = c.app_id
                 AND NOT EXISTS (SELECT 1 FROM authorizations z
                                 WHERE z.connection_id = c.id AND NOT z.done
                                   AND z.expires_at >= now())
               RETURNING c.id, a.name AS app"""
        )
        await outbox.append(
            conn,
            *(
                make_event(
                    EventType.AUTHORIZATION_FAILED,
                    app=row["app"],
                    connection_id=row["id"],
                    status="failed",
                    problem=Problem.AUTHORIZATION_EXPIRED,
                )
                for row in rows
            ),
        )
    return len(rows)


async def mark_expired_tokens(ctx: dict[str, Any]) -> int:
    """Name `token_expired` on active connections whose token died while no refresh could run
    (the provider is unavailable, a worker died holding it): none says it is fine meanwhile."""
    res = WorkerContext.of(ctx).resources
    count = await connections.mark_tokens_expired(res.pool)
    if count:
        log.warning("tokens_expired_unrefreshed", count=count)
    return count


async def prune(ctx: dict[str, Any]) -> None:
    """Forget relayed events and finished authorizations after a week."""
    res = WorkerContext.of(ctx).resources
    async with res.pool.acquire() as conn:
        await outbox.prune(conn)
        await authorizations.purge(conn)


async def sweep_revocations(ctx: dict[str, Any]) -> int:
    """Enqueue revocations whose job never ran (Redis was down at the DELETE)."""
    res = WorkerContext.of(ctx).resources
    stranded = await connections.stranded_revocations(res.pool, older_than_seconds=60, limit=500)
    for connection_id in stranded:
        await enqueue_revoke(res, connection_id)
    return len(stranded)
