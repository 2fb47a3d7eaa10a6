"""`/v1/connections/{id}/diagnosis` and `/v1/apps/{name}/diagnosis`: the checks of
`authbroker.diagnosis` over what storage recorded.

The core sees plain mappings of the rows without their sealed columns: only whether a token or a
secret is set, never its value.
"""

from __future__ import annotations

import dataclasses
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
from storage import apps
from storage.apps import App
from storage.connections import Connection
from storage.resources import Resources

routes = web.RouteTableDef()

RECENT_EVENTS = 20
_SEALED_CONNECTION = ("access_token", "refresh_token", "extra")
_SEALED_APP = ("client_secret", "client_secrets_previous")


def connection_facts(connection: Connection) -> dict[str, Any]:
    """The connection's recorded state for the diagnosis, without its sealed columns."""
    facts = {
        f.name: getattr(connection, f.name)
        for f in dataclasses.fields(connection)
        if f.name not in _SEALED_CONNECTION
    }
    facts["has_access_token"] = connection.access_token is not None
    facts["has_refresh_token"] = connection.refresh_token is not None
    return facts


def app_facts(app: App) -> dict[str, Any]:
    """The app's settings for the diagnosis, without its sealed columns."""
    facts = {
        f.name: getattr(app, f.name) for f in dataclasses.fields(app) if f.name not in _SEALED_APP
    }
    facts["client_secret_set"] = app.client_secret is not None
    facts["client_secrets_previous_set"] = app.client_secrets_previous is not None
    return facts


def _verdict(checks: list[diagnosis.Check]) -> dict[str, Any]:
    """The checks and the worst of their statuses, as both diagnoses answer them."""
    return {"checks": [models.Check.of(c) for c in checks], "summary": diagnosis.worst(checks)}


async def connection_checks(res: Resources, found: Connection) -> list[diagnosis.Check]:
    """Diagnose a connection from what was recorded: the API and the console both ask here."""
    app = await apps.get_by_id(res.pool, found.app_id)
    assert app is not None  # connections reference their app
    rows = await res.pool.fetch(
        """SELECT event FROM outbox WHERE event->>'connection_id' = $1
           ORDER BY id DESC LIMIT $2""",
        found.id,
        RECENT_EVENTS,
    )
    return diagnosis.diagnose_connection(
        connection_facts(found),
        app_facts(app),
        redirect_url=res.settings.redirect_url,
        recent_events=[row["event"] for row in rows],
    )


async def app_checks(res: Resources, app: App) -> list[diagnosis.Check]:
    """Diagnose an app's settings from its connections' states and problems."""
    async with res.pool.acquire() as conn:
        by_status = await conn.fetch(
            "SELECT status, count(*) AS n FROM connections WHERE app_id = $1 GROUP BY status",
            app.id,
        )
        by_problem = await conn.fetch(
            """SELECT problem, count(*) AS n FROM connections
               WHERE app_id = $1 AND problem IS NOT NULL AND status <> 'revoked'
               GROUP BY problem""",
            app.id,
        )
    return diagnosis.diagnose_app(
        app_facts(app),
        redirect_url=res.settings.redirect_url,
        connections_by_status={row["status"]: row["n"] for row in by_status},
        recent_problems={row["problem"]: row["n"] for row in by_problem},
    )


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

    Settings, redirect URL, scopes, client-credential placement, a refresh token missing or
    invalidated, unauthenticated requests, access restrictions: each check ok, warning or failing,
    with its evidence and remedy.
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
    """Check an application's settings against what its connections met."""
    app = await load_app(request)
    checks = await app_checks(resources(request), app)
    return ok(
        models.AppDiagnosis(
            app=app.name,
            status=app_status(app),
            **_verdict(checks),
        )
    )
