"""API keys on `/v1`: `Authorization: Bearer <key>`, checked against hashes in Postgres.

Every refusal is the same 401 whatever was wrong (missing, malformed, unknown, revoked), so the
answer reveals nothing about which keys exist.
"""

from __future__ import annotations

from aiohttp import web

from handlers.context import resources as get_resources
from handlers.responses import fail
from storage import api_keys

PROTECTED_PREFIX = "/v1/"


def _refuse() -> None:
    fail(
        401,
        "unauthorized",
        "a valid API key is required: send 'Authorization: Bearer <key>'",
        headers={"WWW-Authenticate": 'Bearer realm="authbroker"'},
    )


@web.middleware
async def api_key_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    if not request.path.startswith(PROTECTED_PREFIX):
        return await handler(request)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200 or not _printable_ascii(key):
        _refuse()
    resources = get_resources(request)
    found = await api_keys.verify(resources.pool, key)
    if found is None:
        _refuse()
    await api_keys.touch(resources.pool, found.id)
    return await handler(request)


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()
