"""The aiohttp application: routes, middlewares and the resources they share."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import redis.exceptions
import structlog
from aiohttp import web

from authbroker.logs import get_logger
from authbroker.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from handlers import (
    api_keys,
    apps,
    audit,
    basic,
    basic_transfer,
    callback,
    client_keys,
    connect_links,
    connections,
    console,
    diagnosis,
    events,
    health,
    metrics,
    openapi,
    transfer,
    webhooks,
)
from handlers.auth import api_key_middleware
from handlers.context import AUDIT, RESOURCES
from handlers.models import Error
from handlers.responses import ApiError, check_path, ok, translate
from handlers.throttle import API_FAILURES, api_limiter
from services.audit import CredentialReads
from services.errors import DomainError
from storage.resources import Resources

log = get_logger("authbroker.web")

# Errors that mean Postgres or Redis cannot be reached right now, not that the request is bad.
UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


@web.middleware
async def context_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Bind a request id to every log line of the request and answer errors as JSON."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        check_path(request)
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except DomainError as exc:
        response = translate(exc).response()
    except web.HTTPException as exc:
        # API errors answer in JSON; redirects and every other path keep aiohttp's answer.
        if not request.path.startswith("/v1/") or exc.status < 400:
            raise
        response = ok(
            Error(error=exc.reason.lower().replace(" ", "_"), message=exc.text or exc.reason),
            status=exc.status,
        )
    except UNAVAILABLE as exc:
        # A dependency is away (a restart, a failover): say so and when to retry, briefly.
        log.warning("dependency_unavailable", route=_route(request), error=type(exc).__name__)
        response = ok(
            Error(error="unavailable", message="a backing service is unavailable; retry shortly"),
            status=503,
            headers={"Retry-After": "2"},
        )
    except Exception:
        log.exception("request_failed", method=request.method, route=_route(request))
        response = ok(
            Error(error="internal", message="internal error", request_id=request_id), status=500
        )
    response.headers["X-Request-Id"] = request_id
    route = _route(request)
    elapsed = time.perf_counter() - started
    HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
    HTTP_REQUEST_SECONDS.labels(route, request.method).observe(elapsed)
    log.debug(
        "request",
        method=request.method,
        route=route,
        status=response.status,
        ms=round(elapsed * 1000, 2),
    )
    return response


def _route(request: web.Request) -> str:
    """The route pattern, never the concrete path (it may carry ids worth not logging)."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


async def _listen_for_news(app: web.Application) -> None:
    """Outcomes of refreshes reach waiting requests by notification (storage.notifications)."""
    app[RESOURCES].notifications.start()


async def _count_reads(app: web.Application) -> AsyncIterator[None]:
    """Reads of credentials are stored every few seconds while serving, and once more at the
    end (services/audit.py)."""
    app[AUDIT].start()
    yield
    await app[AUDIT].close()


def create_app(resources: Resources) -> web.Application:
    app = web.Application(
        middlewares=[context_middleware, api_key_middleware], client_max_size=256 * 1024
    )
    app[RESOURCES] = resources
    app[API_FAILURES] = api_limiter()
    app[AUDIT] = CredentialReads(resources.pool)
    # With a metrics listener of its own (AUTHBROKER_METRICS_LISTEN), /metrics is not public.
    public_metrics = (metrics,) if resources.settings.metrics_listen is None else ()
    # transfer before apps: /v1/apps/export must not be read as an app named "export".
    modules = (
        health,
        *public_metrics,
        transfer,
        events,
        apps,
        client_keys,
        basic_transfer,
        basic,
        connections,
        connect_links,
        callback,
        diagnosis,
        webhooks,
        api_keys,
        audit,
    )
    for module in (*modules, openapi):
        app.add_routes(module.routes)
    app.on_startup.append(_listen_for_news)
    app.cleanup_ctx.append(_count_reads)
    app.on_shutdown.append(events.close_streams)  # end open event streams at shutdown
    console.setup(app)
    return app


def create_metrics_app(resources: Resources) -> web.Application:
    """`/metrics` alone, for a listener of its own (AUTHBROKER_METRICS_LISTEN): scrapers reach
    it on an internal address while the public port shows only the callback, the API and the
    console."""
    app = web.Application()
    app[RESOURCES] = resources
    app.add_routes(metrics.routes)
    return app
