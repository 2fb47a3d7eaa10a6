"""`/v1/apps`: OAuth applications. Secrets go in, never come out; `redirect_url` always does."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from pydantic import Field

from authbroker import netguard, presets
from authbroker.config import Settings
from authbroker.logs import get_logger
from authbroker.schemas import NAME_PATTERN, AppCreate, AppUpdate
from handlers import models
from handlers.context import resources
from handlers.operations import Answer, operation, path_param, query_param
from handlers.responses import fail, ok, read_json, read_model, validate
from storage import apps, connections
from storage.apps import App
from storage.jobs import enqueue_revokes
from storage.resources import Resources

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

APP_NAME = path_param("name", "The app's name.", {"type": "string", "pattern": NAME_PATTERN})
APP_NOT_FOUND = "No app of that name (`app_not_found`)."


# Only described (in /openapi.json): `with_preset` applies a preset, then AppCreate validates.
class AppCreateFromPreset(AppCreate):
    """POST /v1/apps with a provider preset: the preset fills the URLs, scopes and the rest;
    whatever the body gives wins, and `placeholders` fill the preset's URL templates."""

    authorization_url: str = models.omitted(max_length=2048)
    token_url: str = models.omitted(max_length=2048)
    preset: str = Field(max_length=64, json_schema_extra={"enum": presets.names()})
    placeholders: dict[str, str] = models.omitted(
        'Values for the preset\'s URL placeholders, e.g. {"tenant": "contoso"}.'
    )


URL_FIELDS = ("authorization_url", "token_url", "revoke_url", "probe_url")


async def forbidden_host_errors(values: dict[str, Any], settings: Settings) -> list[dict[str, str]]:
    """The URL fields whose host resolves to a link-local or metadata address (validation has
    already refused such addresses written literally), as `[{field, message}]`."""
    if settings.allow_link_local:
        return []
    errors = []
    for field in URL_FIELDS:
        url = values.get(field)
        host = netguard.normalized_host(url) if url else None
        reason = await netguard.resolved_reason(host) if host else None
        if reason:
            errors.append({"field": field, "message": f"host {host} {reason}"})
    return errors


async def refuse_forbidden_hosts(
    values: dict[str, Any], settings: Settings, *, label: str = ""
) -> None:
    """400 naming each URL field whose host resolves to a forbidden address."""
    errors = [
        {"field": e["field"], "message": label + e["message"]}
        for e in await forbidden_host_errors(values, settings)
    ]
    if errors:
        names = ", ".join(e["field"] for e in errors)
        fail(400, "invalid_request", f"invalid fields: {names}", fields=errors)


def with_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Fill an app definition from its provider preset; what the caller gave wins.
    `placeholders` (e.g. {"tenant": "contoso"}) fill the preset's URL templates."""
    given = dict(data)
    name = given.pop("preset")
    placeholders = given.pop("placeholders", None)
    if not isinstance(name, str) or (
        placeholders is not None and not isinstance(placeholders, dict)
    ):
        fail(400, "invalid_request", "preset must be a name and placeholders an object")
    try:
        return presets.apply(name, given, placeholders)
    except KeyError as exc:
        fail(
            400,
            "unknown_preset",
            str(exc.args[0]),
            fields=[{"field": "preset", "message": str(exc.args[0])}],
        )
    except ValueError as exc:
        fail(
            400,
            "invalid_request",
            str(exc),
            fields=[{"field": "placeholders", "message": str(exc)}],
        )


async def load_app(request: web.Request) -> App:
    name = request.match_info["name"]
    app = await apps.get(resources(request).pool, name)
    if app is None:
        fail(404, "app_not_found", f"no app named {name!r}")
    return app


@routes.post("/v1/apps")
@operation(
    "createApp",
    "apps",
    {
        201: Answer("Created.", models.App),
        409: "An app of that name exists (`app_exists`).",
    },
    body=(AppCreate, AppCreateFromPreset),
)
async def create_app(request: web.Request) -> web.Response:
    """Register an OAuth application.

    The answer never holds a secret and always holds `redirect_url`, to register at the provider.
    """
    res = resources(request)
    data = await read_json(request)
    if data.get("preset") is not None:
        data = with_preset(data)
    body = validate(AppCreate, data, **res.settings.validation_context)
    values = body.model_dump()
    await refuse_forbidden_hosts(values, res.settings)
    try:
        async with res.pool.acquire() as conn:
            app = await apps.create(conn, res.ring, values)
    except asyncpg.UniqueViolationError:
        fail(409, "app_exists", f"an app named {body.name!r} already exists")
    log.info("app_created", app=app.name, client_auth=app.client_auth)
    return ok(models.App.of(app, res.settings.redirect_url), status=201)


@routes.get("/v1/apps")
@operation("listApps", "apps", {200: Answer("Every app, by name.", models.AppList)})
async def list_apps(request: web.Request) -> web.Response:
    """List OAuth applications."""
    res = resources(request)
    found = await apps.list_all(res.pool)
    return ok(models.AppList(items=[models.App.of(a, res.settings.redirect_url) for a in found]))


@routes.get("/v1/apps/{name}")
@operation(
    "getApp",
    "apps",
    {200: Answer("The app.", models.App), 404: APP_NOT_FOUND},
    parameters=[APP_NAME],
)
async def show_app(request: web.Request) -> web.Response:
    """Show an OAuth application."""
    return ok(models.App.of(await load_app(request), resources(request).settings.redirect_url))


@routes.patch("/v1/apps/{name}")
@operation(
    "updateApp",
    "apps",
    {200: Answer("The updated app.", models.App), 404: APP_NOT_FOUND},
    parameters=[APP_NAME],
    body=AppUpdate,
)
async def update_app(request: web.Request) -> web.Response:
    """Change an OAuth application.

    Only the fields given change; null clears the optional ones. Any change resumes an app
    paused for refused settings.
    """
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, AppUpdate, **res.settings.validation_context)
    changes = body.changes()
    await refuse_forbidden_hosts(changes, res.settings)
    async with res.pool.acquire() as conn:
        updated = await apps.update(conn, res.ring, app, changes)
    log.info("app_updated", app=app.name, fields=sorted(changes), resumed=app.paused_at is not None)
    return ok(models.App.of(updated, res.settings.redirect_url))


@routes.delete("/v1/apps/{name}")
@operation(
    "deleteApp",
    "apps",
    {
        202: Answer(
            "Its connections are being revoked; the app goes after them.", models.AppDeleting
        ),
        204: Answer("Deleted."),
        404: APP_NOT_FOUND,
        409: "The app has live connections and `cascade` was not given (`app_has_connections`, "
        "with `connections`).",
    },
    parameters=[
        APP_NAME,
        query_param(
            "cascade",
            "Revoke and delete the app's connections with it (`true`, `1` or `yes`).",
            {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
        ),
    ],
)
async def delete_app(request: web.Request) -> web.Response:
    """Delete an OAuth application."""
    res = resources(request)
    app = await load_app(request)
    cascade = request.query.get("cascade", "false").lower() in {"1", "true", "yes"}
    live = await connections.count_live(res.pool, app.id)
    if live and not cascade:
        fail(
            409,
            "app_has_connections",
            f"app {app.name!r} has {live} live connection(s); delete them first or pass "
            "?cascade=true to revoke and delete them with the app",
            connections=live,
        )
    pending = await delete_app_with_connections(res, app)
    if pending:
        return ok(
            models.AppDeleting(status="deleting", connections_revoking=pending, app=app.name),
            status=202,
        )
    return web.Response(status=204)


async def delete_app_with_connections(res: Resources, app: App) -> int:
    """Delete an app now if it has no live connection; otherwise revoke them all and let the
    last revocation delete the app (the revoke jobs need its client credentials)."""
    async with res.pool.acquire() as conn, conn.transaction():
        revoking = await connections.begin_revoke_app(conn, app.id)
        pending = await conn.fetchval(
            "SELECT count(*) FROM connections WHERE app_id = $1 AND status = 'revoking'", app.id
        )
        if not pending:
            await apps.delete(conn, app.id)
            log.info("app_deleted", app=app.name)
            return 0
        await apps.mark_deleting(conn, app.id)
    await enqueue_revokes(res, revoking)
    log.info("app_delete_requested", app=app.name, connections=pending)
    return pending
