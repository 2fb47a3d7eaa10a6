"""The operator console at `/console`: server-rendered pages for applications, connections,
Basic credentials, webhooks and their health, and API keys, signed in with an admin API key.

Register it on the web application with `setup(app)` (after `app[RESOURCES]` is set). It needs
no JavaScript except for the live event strip and the copy button.
"""

from __future__ import annotations

from aiohttp import web

from handlers.console import api_keys, keys, links, render, session, views, webhooks
from handlers.context import RESOURCES
from handlers.throttle import SIGN_IN_FAILURES, sign_in_limiter

STATIC = render.HERE / "static"


def setup(app: web.Application) -> None:
    """Add the console's routes, its static files, its signing secret and its hooks (once:
    calling it again on the same application does nothing)."""
    if render.ENV in app:
        return
    app[render.ENV] = render.create_env()
    app[session.SECRET] = session.derive_secret(app[RESOURCES])
    app[SIGN_IN_FAILURES] = sign_in_limiter()
    app.add_routes(views.routes)
    app.add_routes(webhooks.routes)
    app.add_routes(keys.routes)
    app.add_routes(api_keys.routes)
    app.add_routes(links.routes)
    app.router.add_static(render.PREFIX + "/static", STATIC, name="console_static")
    app.on_response_prepare.append(render.add_security_headers)


__all__ = ["setup"]
