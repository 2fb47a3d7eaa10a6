"""`/v1/basic`: Basic credentials, handed to runtimes as a ready `Authorization` value."""

from __future__ import annotations

import base64

from aiohttp import web

from authbroker.logs import get_logger
from authbroker.roles import Permission
from authbroker.schemas import NAME_PATTERN, BasicCredentialIn, is_valid_name
from handlers import models
from handlers.context import AUDIT, caller, resources
from handlers.operations import NO_STORE, Answer, operation, path_param
from handlers.responses import fail, ok, read_model
from services import access
from services import basic as basic_service
from storage import basic

routes = web.RouteTableDef()
log = get_logger("authbroker.api")


BASIC_NAME = path_param(
    "name", "The Basic credential's name.", {"type": "string", "pattern": NAME_PATTERN}
)
BASIC_NOT_FOUND = "No Basic credential of that name (`basic_not_found`)."
INVALID_NAME = "Invalid name (`invalid_name`)."


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_valid_name(name):
        fail(400, "invalid_name", "name must be 1-63 letters, digits, '.', '_' or '-'")
    return name


@routes.put("/v1/basic/{name}")
@operation(
    "putBasic",
    "basic",
    {200: Answer("Replaced.", models.Basic), 201: Answer("Created.", models.Basic)},
    parameters=[BASIC_NAME],
    body=BasicCredentialIn,
    permission=Permission.BASIC_WRITE,
)
async def put_basic(request: web.Request) -> web.Response:
    """Create or replace a Basic credential.

    A name that is not 1-63 letters, digits, `.`, `_` or `-` is refused with 400 `invalid_name`.
    """
    res = resources(request)
    name = _name(request)
    body = await read_model(request, BasicCredentialIn)
    credential, created = await basic.put(res.pool, res.ring, name, body.login, body.password)
    log.info("basic_credential_set", name=name, created=created)
    return ok(models.Basic.of(credential), status=201 if created else 200)


@routes.get("/v1/basic")
@operation(
    "listBasic",
    "basic",
    {200: Answer("Every Basic credential, by name.", models.BasicList)},
    permission=Permission.BASIC_READ,
)
async def list_basic(request: web.Request) -> web.Response:
    """List Basic credentials (never their passwords)."""
    found = await basic.list_all(resources(request).pool)
    return ok(models.BasicList(items=[models.Basic.of(c) for c in found]))


@routes.get("/v1/basic/{name}/credentials")
@operation(
    "basicCredentials",
    "basic",
    {
        200: Answer("The credential.", models.BasicCredentials, headers=NO_STORE),
        400: INVALID_NAME,
        404: BASIC_NOT_FOUND,
        409: "Imported without its password (`awaiting_password`): set it with PUT.",
    },
    parameters=[BASIC_NAME],
    permission=Permission.CREDENTIALS_READ,
)
async def basic_credentials(request: web.Request) -> web.Response:
    """The login, password and ready Authorization value."""
    res = resources(request)
    name = _name(request)
    access.require_app(caller(request), name, what="Basic credential")
    credential = await basic.get(res.pool, name)
    if credential is None:
        fail(404, "basic_not_found", f"no Basic credential named {name!r}")
    request.app[AUDIT].count(caller(request).key_id, "basic", name)
    password = basic_service.password_of(res, credential)
    token = base64.b64encode(f"{credential.login}:{password}".encode()).decode()
    return ok(
        models.BasicCredentials(
            type="basic", login=credential.login, password=password, authorization=f"Basic {token}"
        ),
        headers={"Cache-Control": "no-store"},
    )


@routes.delete("/v1/basic/{name}")
@operation(
    "deleteBasic",
    "basic",
    {204: Answer("Deleted."), 400: INVALID_NAME, 404: BASIC_NOT_FOUND},
    parameters=[BASIC_NAME],
    permission=Permission.BASIC_WRITE,
)
async def delete_basic(request: web.Request) -> web.Response:
    """Delete a Basic credential."""
    name = _name(request)
    if not await basic.delete(resources(request).pool, name):
        fail(404, "basic_not_found", f"no Basic credential named {name!r}")
    log.info("basic_credential_deleted", name=name)
    return web.Response(status=204)
