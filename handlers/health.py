"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from aiohttp import web

from handlers.context import resources as get_resources
from handlers.models import Health, Readiness, ReadinessChecks
from handlers.operations import Answer, operation
from handlers.responses import ok
from storage import pool

routes = web.RouteTableDef()


@routes.get("/healthz")
@operation("healthz", "health", {200: Answer("The process answers.", Health)})
async def healthz(_request: web.Request) -> web.Response:
    """Liveness.

    The process is alive and its event loop answers; dependencies are /readyz's concern.
    """
    return ok(Health(status="ok"))


@routes.get("/readyz")
@operation(
    "readyz",
    "health",
    {
        200: Answer("Ready.", Readiness),
        503: Answer("A dependency does not answer; `checks` says which.", Readiness),
    },
)
async def readyz(request: web.Request) -> web.Response:
    """Readiness: Postgres and Redis answer.

    Ready when Postgres and Redis both answer within two seconds; 503 names what does not.
    """
    resources = get_resources(request)

    async def postgres() -> None:
        await pool.ping(resources.pool)

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
    body = Readiness(status="ready" if ready else "unavailable", checks=ReadinessChecks(**checks))
    if failing:
        body.message = f"not reachable: {', '.join(failing)}"
    return ok(body, status=200 if ready else 503)
