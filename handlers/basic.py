"""`/v1/basic`: Basic credentials, handed to runtimes as a ready `Authorization` value."""

from __future__ import annotations

import base64

from aiohttp import web

from authbroker.logs import get_logger
from authbroker.schemas import BasicCredentialIn, is_valid_name
from handlers.context import resources
from handlers.responses import fail, ok, read_model
from storage import basic
from storage.basic import BasicCredential

routes = web.RouteTableDef()
log = get_logger("authbroker.api")


def basic_view(credential: BasicCredential) -> dict[str, object]:
    return {
        "name": credential.name,
        "login": credential.login,
        "created_at": credential.created_at,
        "updated_at": credential.updated_at,
    }


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_valid_name(name):
        fail(400, "invalid_name", "name must be 1-63 letters, digits, '.', '_' or '-'")
    return name


@routes.put("/v1/basic/{name}")
async def put_basic(request: web.Request) -> web.Response:
    res = resources(request)
    name = _name(request)
    body = await read_model(request, BasicCredentialIn)
    credential, created = await basic.put(res.pool, res.ring, name, body.login, body.password)
    log.info("basic_credential_set", name=name, created=created)
    return ok(basic_view(credential), status=201 if created else 200)


@routes.get("/v1/basic")
async def list_basic(request: web.Request) -> web.Response:
    found = await basic.list_all(resources(request).pool)
    return ok({"items": [basic_view(c) for c in found]})


@routes.get("/v1/basic/{name}/credentials")
async def basic_credentials(request: web.Request) -> web.Response:
    res = resources(request)
    name = _name(request)
    credential = await basic.get(res.pool, name)
    if credential is None:
        fail(404, "basic_not_found", f"no Basic credential named {name!r}")
    password = credential.open_password(res.ring)
    token = base64.b64encode(f"{credential.login}:{password}".encode()).decode()
    return ok(
        {
            "type": "basic",
            "login": credential.login,
            "password": password,
            "authorization": f"Basic {token}",
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.delete("/v1/basic/{name}")
async def delete_basic(request: web.Request) -> web.Response:
    name = _name(request)
    if not await basic.delete(resources(request).pool, name):
        fail(404, "basic_not_found", f"no Basic credential named {name!r}")
    log.info("basic_credential_deleted", name=name)
    return web.Response(status=204)
