"""`/v1/apps`: OAuth applications. Secrets go in, never come out; `redirect_url` always does."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from authbroker import presets
from authbroker.logs import get_logger
from authbroker.roles import Permission
from authbroker.schemas import NAME_PATTERN, AppCreate, AppUpdate
from handlers import models
from handlers.context import caller, resources
from handlers.operations import Answer, operation, path_param, query_param
from handlers.responses import ok, query_value, read_json, read_model, validate
from services import access
from services import apps as service
from storage import apps
from storage.apps import App

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

APP_NAME = path_param("name", "The app's name.", {"type": "string", "pattern": NAME_PATTERN})
APP_NOT_FOUND = "No app of that name (`app_not_found`)."


# Only described (in /openapi.json): `with_preset` applies a preset, then AppCreate validates.
class AppCreateFromPreset(AppCreate):
    """POST /v1/apps with a provider preset: the preset fills the URLs, scopes and the rest;
    whatever the body gives wins, and `placeholders` fill the preset's URL templates."""

    token_url: str = models.omitted(max_length=2048)
    preset: str = Field(max_length=64, json_schema_extra={"enum": presets.names()})
    placeholders: dict[str, str] = models.omitted(
        'Values for the preset\'s URL placeholders, e.g. {"tenant": "contoso"}. A placeholder '
        "the preset takes per connection (Zendesk's subdomain) may be left out: the app then "
        "takes it from each connection (`connection_settings`)."
    )


async def load_app(request: web.Request) -> App:
    """The app the path names, if the caller reaches it."""
    name = request.match_info["name"]
    access.require_app(caller(request), name)
    return await service.get(resources(request), name)


@routes.post("/v1/apps")
@operation(
    "createApp",
    "apps",
    {
        201: Answer("Created.", models.App),
        409: "An app of that name exists (`app_exists`).",
    },
    body=(AppCreate, AppCreateFromPreset),
    permission=Permission.APPS_WRITE,
)
async def create_app(request: web.Request) -> web.Response:
    """Register an OAuth application.

    The answer never holds a secret and always holds `redirect_url`, to register at the provider.
    """
    res = resources(request)
    data = await read_json(request)
    if data.get("preset") is not None:
        data = service.with_preset(data)
    body = validate(AppCreate, data, **res.settings.validation_context)
    app = await service.create(res, body.model_dump())
    return ok(models.App.of(app, res.settings.redirect_url), status=201)


@routes.get("/v1/apps")
@operation(
    "listApps",
    "apps",
    {200: Answer("Every app, by name.", models.AppList)},
    permission=Permission.APPS_READ,
)
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
    permission=Permission.APPS_READ,
)
async def show_app(request: web.Request) -> web.Response:
    """Show an OAuth application."""
    return ok(models.App.of(await load_app(request), resources(request).settings.redirect_url))


@routes.patch("/v1/apps/{name}")
@operation(
    "updateApp",
    "apps",
    {
        200: Answer("The updated app.", models.App),
        404: APP_NOT_FOUND,
        409: "A URL that receives secrets changed without `client_secret` in the same request "
        "or an admin's `confirm_secret_destination` (`secret_destination`, with `fields`).",
    },
    parameters=[APP_NAME],
    body=AppUpdate,
    permission=Permission.APPS_WRITE,
)
async def update_app(request: web.Request) -> web.Response:
    """Change an OAuth application.

    Only the fields given change; null clears the optional ones. Any change resumes an app
    paused for refused settings. Changing `token_url`, `revoke_url`, `probe_url` or
    `authorization_url` changes where the app's secrets and tokens go: it needs `client_secret`
    in the same request (the previous secrets are dropped unless given too), or an admin key
    with `"confirm_secret_destination": true`.
    """
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, AppUpdate, **res.settings.validation_context)
    updated = await service.update(
        res,
        app,
        body.changes(),
        caller=caller(request),
        confirmed=body.confirm_secret_destination,  # type: ignore[attr-defined]
    )
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
    permission=Permission.APPS_WRITE,
)
async def delete_app(request: web.Request) -> web.Response:
    """Delete an OAuth application."""
    res = resources(request)
    app = await load_app(request)
    cascade = (query_value(request, "cascade") or "false").lower() in {"1", "true", "yes"}
    pending = await service.delete(res, app, cascade=cascade)
    if pending:
        return ok(
            models.AppDeleting(status="deleting", connections_revoking=pending, app=app.name),
            status=202,
        )
    return web.Response(status=204)
