"""The application's shared resources, typed, for every handler, and who is asking."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.access import Caller
from services.audit import CredentialReads
from storage.resources import Resources

RESOURCES = web.AppKey("resources", Resources)
# Reads of credentials, counted in memory and stored every few seconds (services/audit.py).
AUDIT = web.AppKey("credential_reads", CredentialReads)
# The API key of a `/v1` request, set by the API's middleware. Typed where aiohttp has request
# keys (3.12+), a plain string before.
_RequestKey: Any = getattr(web, "RequestKey", None)
CALLER: Any = _RequestKey("caller", Caller) if _RequestKey else "caller"


def resources(request: web.Request) -> Resources:
    return request.app[RESOURCES]


def caller(request: web.Request) -> Caller:
    """The key a `/v1` request was made with (the middleware has checked it)."""
    return request[CALLER]
