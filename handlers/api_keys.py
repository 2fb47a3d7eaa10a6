"""`/v1/api-keys`: API keys, for admin keys. A key is shown once, when it is created; after that
its role, its apps, its last use and what it read."""

from __future__ import annotations

from aiohttp import web

from authbroker.roles import Permission
from authbroker.schemas import ApiKeyCreate
from handlers import models
from handlers.context import resources
from handlers.operations import NO_STORE, Answer, operation, path_param
from handlers.responses import ok, read_model
from services import api_keys as service

routes = web.RouteTableDef()

KEY_ID = path_param("key_id", "The key's id (`ab_<id>_…`).", {"type": "string", "maxLength": 64})
KEY_NOT_FOUND = "No API key of that id (`api_key_not_found`)."


@routes.post("/v1/api-keys")
@operation(
    "createApiKey",
    "api-keys",
    {201: Answer("Created; `key` is shown only now.", models.ApiKeyCreated, headers=NO_STORE)},
    body=ApiKeyCreate,
    permission=Permission.API_KEYS,
)
async def create_api_key(request: web.Request) -> web.Response:
    """Create an API key.

    `role`: `admin` (everything), `operator` (apps, connections, diagnosis, events; never a token
    or a password) or `runtime` (credentials, refresh, report, events, and reading the
    connections those need). A runtime key may be limited to `apps` (app or Basic credential
    names). The key is in this answer only: it is stored as a hash.
    """
    body = await read_model(request, ApiKeyCreate)
    key, plaintext = await service.create(resources(request).pool, body)
    return ok(
        models.ApiKeyCreated(**models.ApiKey.of(key).model_dump(), key=plaintext),
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/v1/api-keys")
@operation(
    "listApiKeys",
    "api-keys",
    {200: Answer("Every key, revoked ones too, oldest first.", models.ApiKeyList)},
    permission=Permission.API_KEYS,
)
async def list_api_keys(request: web.Request) -> web.Response:
    """List API keys (never their secrets)."""
    found = await service.list_all(resources(request).pool)
    return ok(models.ApiKeyList(items=[models.ApiKey.of(k) for k in found]))


@routes.get("/v1/api-keys/{key_id}")
@operation(
    "getApiKey",
    "api-keys",
    {200: Answer("The key and its reads.", models.ApiKeyShown), 404: KEY_NOT_FOUND},
    parameters=[KEY_ID],
    permission=Permission.API_KEYS,
)
async def show_api_key(request: web.Request) -> web.Response:
    """Show an API key: its last use and what it read.

    `reads`: each connection whose token and each Basic credential whose password the key read,
    how often and when (first and last read), over the days the audit keeps.
    """
    found = await service.show(resources(request).pool, request.match_info["key_id"])
    return ok(models.ApiKeyShown.shown(found))


@routes.delete("/v1/api-keys/{key_id}")
@operation(
    "revokeApiKey",
    "api-keys",
    {204: Answer("Revoked (or it already was)."), 404: KEY_NOT_FOUND},
    parameters=[KEY_ID],
    permission=Permission.API_KEYS,
)
async def revoke_api_key(request: web.Request) -> web.Response:
    """Revoke an API key.

    Requests with it are refused from now on; its event streams end within a minute.
    """
    await service.revoke(resources(request).pool, request.match_info["key_id"])
    return web.Response(status=204)
