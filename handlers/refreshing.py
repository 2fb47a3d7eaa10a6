"""Refresh on behalf of a waiting runtime: enqueue (or join) the connection's refresh job and
wait for its outcome.

Across processes the job id and the worker's lease make it one refresh; within this process,
concurrent requests for the same connection share one waiter, so fifty requests cost one job
and one poll loop, not fifty.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from authbroker.logs import get_logger
from storage import connections
from storage.connections import Connection
from storage.jobs import enqueue_refresh
from storage.resources import Resources

log = get_logger("authbroker.web")

WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
# Refresh on demand when the token expires within this many seconds, or within half its
# lifetime if that is shorter.
ON_DEMAND_WINDOW = 60.0

_waiters: dict[str, asyncio.Future[Connection | None]] = {}


def expiring(connection: Connection, now: datetime, window: float = ON_DEMAND_WINDOW) -> bool:
    if connection.expires_at is None:
        return False
    issued = connection.last_refresh_at or connection.authorized_at or connection.created_at
    lifetime = (connection.expires_at - issued).total_seconds()
    threshold = min(window, max(lifetime, 0) / 2)
    return (connection.expires_at - now).total_seconds() <= threshold


async def refresh_and_wait(
    res: Resources,
    connection: Connection,
    *,
    force: bool = True,
    timeout: float = WAIT_SECONDS,  # noqa: ASYNC109
) -> Connection | None:
    """The connection after a refresh finished (successfully or not), or None on timeout."""
    waiter = _waiters.get(connection.id)
    if waiter is None:
        waiter = asyncio.ensure_future(_refresh_and_wait(res, connection, force, timeout))
        _waiters[connection.id] = waiter
        waiter.add_done_callback(lambda _: _waiters.pop(connection.id, None))
    return await asyncio.shield(waiter)


async def _refresh_and_wait(
    res: Resources,
    connection: Connection,
    force: bool,
    timeout: float,  # noqa: ASYNC109
) -> Connection | None:
    before = connection.updated_at
    try:
        await enqueue_refresh(res, connection.id, force=force)
    except Exception as exc:  # Redis away: nothing will refresh now; say so quickly
        log.warning("refresh_enqueue_failed", connection_id=connection.id, error=type(exc).__name__)
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        current = await connections.get(res.pool, connection.id)
        if current is None or current.updated_at != before:
            return current
    return None


def seconds_until(moment: datetime | None, default: int = 5) -> int:
    if moment is None:
        return default
    return max(1, int((moment - datetime.now(UTC)).total_seconds()) + 1)
