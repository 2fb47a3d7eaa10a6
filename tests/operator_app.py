"""A web server with the operator routes (export/import, events) registered the way
`handlers.app.create_app` must register them: before `handlers.apps`, whose `/v1/apps/{name}`
would otherwise take `export` for an app's name.

Until create_app registers them itself, the application here is create_app's (its middlewares,
state and every route it has, including any added later) with these routes put in front, and
the diagnosis routes added when they exist but are not registered yet.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from authbroker.embedded import free_port
from handlers import events, transfer
from handlers.app import create_app
from storage.resources import Resources

FIRST = (transfer, events)


def _canonical(app: web.Application) -> set[str]:
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def operator_app(resources: Resources) -> web.Application:
    base = create_app(resources)
    registered = _canonical(base)
    if "/v1/apps/export" in registered and "/v1/events" in registered:
        app = base
    else:
        app = web.Application(middlewares=list(base.middlewares), client_max_size=256 * 1024)
        for key in base:
            app[key] = base[key]
        for module in FIRST:
            app.add_routes(module.routes)
        for route in base.router.routes():
            app.router.add_route(
                route.method, route.resource.canonical, route.handler, name=route.name
            )
    try:
        diagnosis = importlib.import_module("handlers.diagnosis")
    except ImportError:
        diagnosis = None
    if diagnosis is not None and "/v1/apps/{name}/diagnosis" not in _canonical(app):
        app.add_routes(diagnosis.routes)
    if events.close_streams not in app.on_shutdown:
        app.on_shutdown.append(events.close_streams)
    return app


@dataclass
class OperatorServer:
    url: str
    app: web.Application


@pytest.fixture(scope="session")
async def operator_server(resources: Resources) -> AsyncIterator[OperatorServer]:
    app = operator_app(resources)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield OperatorServer(f"http://127.0.0.1:{port}", app)
    await runner.cleanup()
