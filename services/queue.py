"""The job queue: the work the web side (and the sweeps) hand to workers through arq, by names
both sides take from here.

Job ids carry the deployment's Redis prefix (arq's job keys are global) and the object they work
on, so enqueuing the same work twice is a no-op while the first is queued, running or done.
Refreshes are not jobs: workers claim due connections from Postgres themselves (worker/engine.py).
"""

from __future__ import annotations

import uuid

from arq.jobs import Job

from authbroker.logs import get_logger
from storage import authorizations
from storage.resources import Resources

log = get_logger("authbroker.queue")

EXCHANGE = "exchange_code"
REVOKE = "revoke_connection"
PROBE = "probe_connection"


def job_id(resources: Resources, kind: str, key: object) -> str:
    return f"{resources.settings.redis_prefix}:{kind}:{key}"


async def enqueue_exchange(resources: Resources, authorization_id: uuid.UUID) -> Job | None:
    job = await resources.redis.enqueue_job(
        EXCHANGE,
        str(authorization_id),
        _job_id=job_id(resources, "exchange", authorization_id),
    )
    await authorizations.mark_enqueued(resources.pool, authorization_id)
    return job


async def enqueue_revoke(resources: Resources, connection_id: str) -> Job | None:
    return await resources.redis.enqueue_job(
        REVOKE, connection_id, _job_id=job_id(resources, "revoke", connection_id)
    )


async def enqueue_revokes(resources: Resources, connection_ids: list[str]) -> None:
    """Enqueue revocations. With Redis down the connections stay `revoking` and the worker's
    sweep enqueues them later, so the caller's request still succeeds."""
    for connection_id in connection_ids:
        try:
            await enqueue_revoke(resources, connection_id)
        except Exception as exc:  # Redis unavailable
            log.warning(
                "revoke_enqueue_failed", connection_id=connection_id, error=type(exc).__name__
            )


async def enqueue_probe(resources: Resources, connection_id: str) -> Job | None:
    return await resources.redis.enqueue_job(
        PROBE, connection_id, _job_id=job_id(resources, "probe", connection_id)
    )
