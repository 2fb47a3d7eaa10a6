"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from aiohttp import web

from handlers.context import resources as get_resources

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.Response:
    """The process is alive and its event loop answers; dependencies are /readyz's concern."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when Postgres and Redis both answer within two seconds; 503 names what does not."""
    resources = get_resources(request)

    async def postgres() -> None:
        await resources.pool.fetchval("SELECT 1")

    async def redis() -> None:
        await resources.redis.ping()

    checks = {}
    for name, check in (("postgres", postgres), ("redis", redis)):
        try:
            await asyncio.wait_for(check(), timeout=2)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which and why
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    failing = [name for name, value in checks.items() if value != "ok"]
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    if failing:
        body["message"] = f"not reachable: {', '.join(failing)}"
    return web.json_response(body, status=200 if ready else 503)
