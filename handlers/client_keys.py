"""An app's keys for private_key_jwt: `POST /v1/apps/{name}/keys` makes (or takes) a signing
key, `GET /v1/apps/{name}/jwks` shows the public keys to register at the provider, and
`GET /oauth/jwks/{name}` publishes them, without an API key, for apps that ask for it
(`jwks_public`) and providers that fetch a JWKS URL. Private keys never come out."""

from __future__ import annotations

from aiohttp import web

from authbroker.roles import Permission
from authbroker.schemas import NAME_PATTERN, KeyCreate
from handlers import models
from handlers.context import resources
from handlers.operations import Answer, operation, path_param
from handlers.responses import ok, read_model
from services import apps as apps_service
from services import client_keys

routes = web.RouteTableDef()

APP_NAME = path_param("name", "The app's name.", {"type": "string", "pattern": NAME_PATTERN})
APP_NOT_FOUND = "No app of that name (`app_not_found`)."
CACHE = {"Cache-Control": {"description": "`max-age=300`.", "schema": {"type": "string"}}}


@routes.post("/v1/apps/{name}/keys")
@operation(
    "addAppKey",
    "apps",
    {
        201: Answer("The new signing key's id and the app's public keys.", models.AppKeyAdded),
        404: APP_NOT_FOUND,
    },
    parameters=[APP_NAME],
    body=KeyCreate,
    body_required=False,
    permission=Permission.APPS_WRITE,
)
async def add_key(request: web.Request) -> web.Response:
    """Give the app a new signing key for private_key_jwt.

    Generated (RS256 by default, or ES256), or the operator's own PEM private key
    (`private_key_pem`, invalid ones answer `invalid_key`). The app signs its client assertions
    with it from now on; the key it replaces is kept as the previous one, tried after it, unless
    `keep_previous` is false. Register the public key (in the answer's `jwks`) at the provider.
    """
    res = resources(request)
    app = await apps_service.get(res, request.match_info["name"])
    body = await read_model(request, KeyCreate) if request.can_read_body else KeyCreate()
    updated = await client_keys.add(
        res,
        app,
        alg=body.alg,
        private_key_pem=body.private_key_pem,
        keep_previous=body.keep_previous,
    )
    jwks = models.Jwks.model_validate(updated.jwks)
    return ok(models.AppKeyAdded(app=app.name, kid=jwks.keys[0].kid, jwks=jwks), status=201)


@routes.get("/v1/apps/{name}/jwks")
@operation(
    "getAppJwks",
    "apps",
    {200: Answer("The app's public keys (empty without keys).", models.Jwks), 404: APP_NOT_FOUND},
    parameters=[APP_NAME],
    permission=Permission.APPS_READ,
)
async def app_jwks(request: web.Request) -> web.Response:
    """The app's public keys as a JWK Set, to register at the provider."""
    app = await apps_service.get(resources(request), request.match_info["name"])
    return ok(models.Jwks.model_validate(app.jwks))


@routes.get("/oauth/jwks/{name}")
@operation(
    "publishedJwks",
    "providers",
    {
        200: Answer("The app's public keys.", models.Jwks, headers=CACHE),
        404: "No app of that name publishes its keys (`jwks_not_found`).",
    },
    parameters=[APP_NAME],
)
async def published_jwks(request: web.Request) -> web.Response:
    """The public keys of an app that publishes them (`jwks_public`), for its provider to fetch.

    No API key: this is the JWKS URL to register at a provider that fetches keys itself.
    """
    jwks = await client_keys.published_jwks(resources(request), request.match_info["name"])
    return ok(models.Jwks.model_validate(jwks), headers={"Cache-Control": "max-age=300"})
