"""`GET /v1/credential-reads`: the credential audit, for admin and operator keys: which key read
which connection's token or Basic credential's password, on which days, how often."""

from __future__ import annotations

from aiohttp import web

from authbroker.roles import Permission
from handlers import models
from handlers.context import resources
from handlers.operations import Answer, operation, query_param
from handlers.responses import fail, ok, query_value
from services import audit

routes = web.RouteTableDef()

MAX_ITEMS = 1000


@routes.get("/v1/credential-reads")
@operation(
    "listCredentialReads",
    "api-keys",
    {
        200: Answer("Reads per key, subject and day, newest first.", models.CredentialReadList),
        400: "Invalid `days`, `limit` or filter, or both `connection` and `basic` "
        "(`invalid_days`, `invalid_limit`, `invalid_filter`, `invalid_request`).",
    },
    parameters=[
        query_param("key", "Only this key's reads (its id).", {"type": "string"}),
        query_param("connection", "Only reads of this connection's token.", {"type": "string"}),
        query_param("basic", "Only reads of this Basic credential.", {"type": "string"}),
        query_param(
            "days",
            "How many days back, today included.",
            {"type": "integer", "minimum": 1, "maximum": audit.MAX_DAYS, "default": 30},
        ),
        query_param(
            "limit",
            "At most this many rows.",
            {"type": "integer", "minimum": 1, "maximum": MAX_ITEMS, "default": MAX_ITEMS},
        ),
    ],
    permission=Permission.AUDIT,
)
async def credential_reads(request: web.Request) -> web.Response:
    """Who read which credentials, when and how often.

    One row per key, subject (a connection or a Basic credential) and day (UTC), with the count
    and the first and last read. Counts reach the audit within a few seconds of the reads.
    """
    days = _integer(query_value(request, "days", "30"), "days")
    limit = _integer(query_value(request, "limit", str(MAX_ITEMS)), "limit")
    if not 1 <= limit <= MAX_ITEMS:
        fail(400, "invalid_limit", f"limit must be an integer between 1 and {MAX_ITEMS}")
    found = await audit.find(
        resources(request).pool,
        key_id=query_value(request, "key"),
        connection_id=query_value(request, "connection"),
        basic=query_value(request, "basic"),
        days=days,
        limit=limit,
    )
    return ok(models.CredentialReadList(items=[models.CredentialRead.of(r) for r in found]))


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        fail(400, f"invalid_{name}", f"{name} must be an integer")
