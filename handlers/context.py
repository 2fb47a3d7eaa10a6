"""The application's shared resources, typed, for every handler."""

from __future__ import annotations

from aiohttp import web

from storage.resources import Resources

RESOURCES = web.AppKey("resources", Resources)


def resources(request: web.Request) -> Resources:
    return request.app[RESOURCES]
