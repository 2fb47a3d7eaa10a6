"""The console's button for a new private_key_jwt signing key (the page shows the key ids; the
public JWKS to register is at GET /v1/apps/{name}/jwks or `authbroker apps keys jwks NAME`)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from handlers.apps import load_app
from handlers.console.render import FORM, PREFIX, action, see_other
from handlers.context import resources
from services import client_keys

routes = web.RouteTableDef()


@routes.post(PREFIX + "/apps/{name}/keys")
@action
async def generate_key(request: web.Request) -> web.StreamResponse:
    app = await load_app(request)
    alg = "ES256" if request[FORM].get("alg") == "ES256" else "RS256"
    updated = await client_keys.add(resources(request), app, alg=alg, via="console")
    kid = updated.jwks["keys"][0]["kid"]
    return see_other(
        request,
        f"{PREFIX}/apps/{quote(app.name, safe='')}",
        f"New {alg} signing key {kid}. Register its public key at the provider "
        f"(authbroker apps keys jwks {app.name}); the previous key is tried after it meanwhile.",
    )
