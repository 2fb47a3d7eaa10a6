"""`/v1/connections/{id}/diagnosis` and `/v1/apps/{name}/diagnosis`: the checks of
`services.diagnosis`, rendered. (The console asks `connection_checks` and `app_checks` here.)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from authbroker import diagnosis
from authbroker.roles import Permission
from handlers import models
from handlers.apps import APP_NAME, APP_NOT_FOUND, load_app
from handlers.connections import CONNECTION_ID, CONNECTION_NOT_FOUND, load_connection
from handlers.context import resources
from handlers.operations import Answer, operation
from handlers.responses import ok
from services.diagnosis import app_checks, connection_checks
from storage.apps import App

__all__ = ["app_checks", "connection_checks", "routes"]

routes = web.RouteTableDef()


def _verdict(checks: list[diagnosis.Check]) -> dict[str, Any]:
    """The checks and the worst of their statuses, as both diagnoses answer them."""
    return {"checks": [models.Check.of(c) for c in checks], "summary": diagnosis.worst(checks)}


@routes.get("/v1/connections/{connection_id}/diagnosis")
@operation(
    "diagnoseConnection",
    "connections",
    {
        200: Answer("The checks, worst in `summary`.", models.ConnectionDiagnosis),
        404: CONNECTION_NOT_FOUND,
    },
    parameters=[CONNECTION_ID],
    permission=Permission.DIAGNOSIS,
)
async def diagnose_connection(request: web.Request) -> web.Response:
    """Walk the common failures of OAuth integrations for this connection.

    Settings, redirect URL, scopes (refused, denied, or not reported by the provider),
    client-credential placement, a refresh token missing, invalidated or lost in a rotation,
    the token endpoint's health, why an expired token was not refreshed, unauthenticated
    requests, access restrictions: each check ok, warning or failing, with its evidence and
    remedy.
    """
    found = await load_connection(request)
    checks = await connection_checks(resources(request), found)
    return ok(
        models.ConnectionDiagnosis(
            connection_id=found.id,
            app=found.app,
            status=found.status,
            **_verdict(checks),
        )
    )


def app_status(app: App) -> str:
    if app.deleting:
        return "deleting"
    return "paused" if app.paused_at is not None else "active"


@routes.get("/v1/apps/{name}/diagnosis")
@operation(
    "diagnoseApp",
    "apps",
    {200: Answer("The checks, worst first in `summary`.", models.AppDiagnosis), 404: APP_NOT_FOUND},
    parameters=[APP_NAME],
    permission=Permission.DIAGNOSIS,
)
async def diagnose_app(request: web.Request) -> web.Response:
    """Check an application's settings against what its connections met.

    Also fetches the authorization URL once (a bare GET, redirects not followed, 5 s at most):
    a 404 or a host that cannot be reached is a wrong setting.
    """
    app = await load_app(request)
    checks = await app_checks(resources(request), app)
    return ok(
        models.AppDiagnosis(
            app=app.name,
            status=app_status(app),
            **_verdict(checks),
        )
    )
