"""The data gauges (connections by status, due backlog, outbox lag), read from Postgres.

Sampled rather than kept up to date on every change: a few indexed counts at most every
SAMPLE_EVERY seconds, by whichever process serves /metrics (web or worker)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from authbroker.metrics import (
    CONNECTIONS,
    DUE_BACKLOG,
    ENDPOINTS_UNAVAILABLE,
    OUTBOX_LAG_SECONDS,
)
from authbroker.states import Status

SAMPLE_EVERY = 10.0  # seconds; scrapes in between reuse the last sample
_sampled_at = 0.0
_lock = asyncio.Lock()


async def sample(pool: asyncpg.Pool, *, every: float | None = None) -> None:
    """Refresh the data gauges unless they were sampled within `every` seconds."""
    global _sampled_at
    every = SAMPLE_EVERY if every is None else every
    async with _lock:
        if time.monotonic() - _sampled_at < every:
            return
        async with pool.acquire() as conn:
            counts = dict(
                await conn.fetch("SELECT status, count(*) FROM connections GROUP BY status")
            )
            due = await conn.fetchval(
                """SELECT count(*) FROM connections
                   WHERE status = 'active' AND refresh_at IS NOT NULL AND refresh_at <= now()"""
            )
            unavailable = await conn.fetchval(
                "SELECT count(*) FROM token_endpoints WHERE NOT available"
            )
            lag = await conn.fetchval(
                """SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
                   FROM outbox WHERE relayed_at IS NULL"""
            )
        for status in Status:
            CONNECTIONS.labels(status).set(counts.get(status, 0))
        DUE_BACKLOG.set(due)
        ENDPOINTS_UNAVAILABLE.set(unavailable)
        OUTBOX_LAG_SECONDS.set(float(lag))
        _sampled_at = time.monotonic()
