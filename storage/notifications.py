"""Waiting for news of a connection without polling: one LISTEN connection per web process.

Every outbox write notifies with the id of the connection its events are about
(`storage.outbox`), so a runtime waiting for a refresh learns of its outcome the moment the
worker commits. Waiters still look at the row now and then: a notification can be missed while
the listening connection reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import asyncpg

from authbroker.logs import get_logger
from storage import outbox

log = get_logger("authbroker.notifications")


class Notifications:
    """`watch(key)` gives an event set whenever a notification names `key`."""

    def __init__(self, dsn: str, channel: str = outbox.NOTIFY_CHANNEL) -> None:
        self.dsn = dsn
        self.channel = channel
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                listen(self.dsn, self.channel, self._notified), name="notifications"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        """Watch before acting (enqueuing, marking due), so the answer cannot come first."""
        self.start()
        event = asyncio.Event()
        self._watchers.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._watchers.get(payload, ()):
            event.set()


async def listen(dsn: str, channel: str | Sequence[str], callback: Callable[..., None]) -> None:
    """LISTEN on `channel` (or on each of several) for as long as the task runs, reconnecting
    after any failure; `callback(connection, pid, channel, payload)` gets every notification."""
    channels = (channel,) if isinstance(channel, str) else tuple(channel)
    while True:
        try:
            conn = await asyncpg.connect(dsn)
        except Exception as exc:  # Postgres away: waiters fall back to looking
            log.debug("listen_unavailable", channel=channel, error=type(exc).__name__)
            await asyncio.sleep(2.0)
            continue
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn, closed=closed: closed.set())
        try:
            for name in channels:
                await conn.add_listener(name, callback)
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), timeout=30.0)
                if not closed.is_set():
                    await conn.execute("SELECT 1")  # a vanished server shows only when used
        except Exception as exc:
            log.debug("listen_lost", channel=channel, error=type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        await asyncio.sleep(1.0)
