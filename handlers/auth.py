"""API keys on `/v1`: `Authorization: Bearer <key>`, checked against hashes in Postgres, then the
key's role against the permission the route declares (`handlers.operations`, `authbroker.roles`).

Every refusal of the key is the same 401 whatever was wrong (missing, malformed, unknown,
revoked), so the answer reveals nothing about which keys exist. Failed keys are counted per
client address (handlers/throttle.py): past a burst, 429 with Retry-After. A key whose role
lacks the route's permission gets 403 `forbidden` naming the role and what it lacks; a route
that declares none is for admin keys only.
"""

from __future__ import annotations

from aiohttp import web

from authbroker.roles import Permission
from handlers.context import CALLER
from handlers.context import resources as get_resources
from handlers.operations import described
from handlers.responses import fail
from handlers.throttle import API_FAILURES, client_address
from services import access
from storage import api_keys

PROTECTED_PREFIX = "/v1/"


def _refuse() -> None:
    fail(
        401,
        "unauthorized",
        "a valid API key is required: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="authbroker"'},
    )


def permission_of(request: web.Request) -> Permission | None:
    """The permission the matched route declares (None: admin keys only)."""
    found = described(request.match_info.route.handler)
    return found.permission if found is not None else None


@web.middleware
async def api_key_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if not request.path.startswith(PROTECTED_PREFIX):
        return await handler(request)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        _refuse()
    limiter = request.app[API_FAILURES]
    address = client_address(request)
    wait = limiter.refused(address, key)
    if wait is not None:
        fail(
            429,
            "too_many_failures",
            f"too many requests with invalid API keys from this address; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    found = None
    if len(key) <= 200 and key.isascii() and key.isprintable():
        found = await api_keys.verify(get_resources(request).pool, key)
    if found is None:
        limiter.failed(address)
        _refuse()
    limiter.trust(key)
    await api_keys.touch(get_resources(request).pool, found.id)
    caller = access.Caller.of(found)
    if request.match_info.http_exception is None:  # unknown paths answer 404 / 405 as before
        access.require(caller, permission_of(request))
    request[CALLER] = caller
    return await handler(request)
