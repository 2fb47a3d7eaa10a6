"""`GET /metrics`: Prometheus text format; the data gauges are sampled at scrape time."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from handlers.context import resources
from handlers.operations import STRING, Answer, operation
from storage import gauges

routes = web.RouteTableDef()


@routes.get("/metrics")
@operation(
    "metrics",
    "meta",
    {200: Answer("Prometheus text exposition format.", media={"text/plain": STRING})},
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics.

    The data gauges (backlog, connections by status, outbox lag) are sampled at scrape time.
    """
    await gauges.sample(resources(request).pool)
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
