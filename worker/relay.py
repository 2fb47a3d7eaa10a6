"""The relay: outbox rows to the Redis stream and channel, at least once, in outbox order.

One relay runs at a time across all workers (a Postgres advisory lock on its own connection;
another worker takes over within seconds if that connection dies). It sleeps on LISTEN and wakes
on the NOTIFY each outbox write sends at commit, so events leave within milliseconds; a slow
poll covers a missed notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
from redis.asyncio import Redis

from authbroker.logs import get_logger
from authbroker.metrics import EVENTS_RELAYED
from storage import outbox

log = get_logger("authbroker.relay")

LOCK_ID = 0x61757468_72656C
STREAM_MAXLEN = 100_000


class Relay:
    def __init__(
        self,
        dsn: str,
        redis: Redis,
        *,
        stream: str,
        channel: str,
        batch: int = 500,
        poll_interval: float = 1.0,
    ):
        self.dsn = dsn
        self.redis = redis
        self.stream = stream
        self.channel = channel
        self.batch = batch
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._stopping = False

    async def run(self) -> None:
        """Relay until stopped; reconnect after any failure, with a pause."""
        while not self._stopping:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Postgres or Redis away: wait and try again
                log.warning("relay_interrupted", error=type(exc).__name__, detail=str(exc)[:200])
                await self._sleep(2.0)

    async def stop(self) -> None:
        """Stop after a last flush of what is committed."""
        self._stopping = True
        self._wake.set()

    async def _session(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
                if self._stopping:
                    return
                await self._sleep(2.0)
            await conn.add_listener(outbox.NOTIFY_CHANNEL, self._notified)
            log.info("relay_started")
            while True:
                self._wake.clear()
                moved = await self.flush(conn)
                if self._stopping:
                    return
                if moved < self.batch:
                    await self._sleep(self.poll_interval)
        finally:
            await conn.close()

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def flush(self, conn: asyncpg.Connection) -> int:
        """Relay one batch; the rows are marked only after Redis has them (at least once)."""
        rows = await outbox.pending(conn, self.batch)
        if not rows:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                event = row["event"]
                payload = json.dumps(event, separators=(",", ":"))
                pipe.xadd(
                    self.stream,
                    {"type": event["type"], "event": payload},
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
                pipe.publish(self.channel, payload)
            await pipe.execute()
        await outbox.mark_relayed(conn, [row["id"] for row in rows])
        EVENTS_RELAYED.inc(len(rows))
        return len(rows)
