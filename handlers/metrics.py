"""`GET /metrics`: Prometheus text format, with the gauges that describe the data sampled at
scrape time (a few indexed counts) rather than kept up to date on every change."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from authbroker.metrics import CONNECTIONS, DUE_BACKLOG, OUTBOX_LAG_SECONDS
from handlers.context import resources
from storage.connections import LIVE
from storage.resources import Resources

routes = web.RouteTableDef()

SAMPLE_EVERY = 10.0  # seconds; scrapes in between reuse the last sample
_sampled_at = 0.0
_lock = asyncio.Lock()


async def sample(res: Resources) -> None:
    """Refresh the data gauges, at most once per SAMPLE_EVERY, whoever scrapes."""
    global _sampled_at
    async with _lock:
        if time.monotonic() - _sampled_at < SAMPLE_EVERY:
            return
        async with res.pool.acquire() as conn:
            counts = dict(
                await conn.fetch("SELECT status, count(*) FROM connections GROUP BY status")
            )
            due = await conn.fetchval(
                """SELECT count(*) FROM connections
                   WHERE status = 'active' AND refresh_at IS NOT NULL AND refresh_at <= now()"""
            )
            lag = await conn.fetchval(
                """SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)
                   FROM outbox WHERE relayed_at IS NULL"""
            )
        for status in (*LIVE, "revoked"):
            CONNECTIONS.labels(status).set(counts.get(status, 0))
        DUE_BACKLOG.set(due)
        OUTBOX_LAG_SECONDS.set(float(lag))
        _sampled_at = time.monotonic()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    await sample(resources(request))
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
