"""Refresh on behalf of a waiting runtime: make the connection due now, wake the workers, and
wait for the outcome's notification.

Across processes the worker's lease makes it one refresh (a connection already being refreshed
is joined, not refreshed again); within this process, concurrent requests for the same
connection share one waiter, so fifty requests cost one refresh and one wait, not fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

from authbroker.logs import get_logger
from storage import connections, leases
from storage.connections import Connection
from storage.resources import Resources

log = get_logger("authbroker.web")

WAIT_SECONDS = 10.0
# How often a waiter looks at the row itself, in case a notification was missed.
LOOK_EVERY = 1.0
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
    timeout: float = WAIT_SECONDS,  # noqa: ASYNC109
) -> Connection | None:
    """The connection after a refresh finished (successfully or not), or None on timeout."""
    waiter = _waiters.get(connection.id)
    if waiter is None:
        waiter = asyncio.ensure_future(_refresh_and_wait(res, connection, timeout))
        _waiters[connection.id] = waiter
        waiter.add_done_callback(lambda _: _waiters.pop(connection.id, None))
    return await asyncio.shield(waiter)


async def _refresh_and_wait(
    res: Resources,
    connection: Connection,
    timeout: float,  # noqa: ASYNC109
) -> Connection | None:
    """Whatever changes the connection's `updated_at` ends the wait: new tokens, a failure
    recorded, the grant refused. (A lease taken leaves it alone: a refresh began, not ended.)"""
    before = connection.updated_at
    with res.notifications.watch(connection.id) as news:
        if not await leases.request_refresh(res.pool, connection.id, connection.version):
            # Refreshed (or otherwise changed) since it was read: that is the news.
            return await connections.get(res.pool, connection.id)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), timeout=min(left, LOOK_EVERY))
            news.clear()
            current = await connections.get(res.pool, connection.id)
            if current is None or current.updated_at != before:
                return current
    return None


def seconds_until(moment: datetime | None, default: int = 5) -> int:
    if moment is None:
        return default
    return max(1, int((moment - datetime.now(UTC)).total_seconds()) + 1)
