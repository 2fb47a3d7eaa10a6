"""Diagnose a connection or an app: gather what storage recorded (and, for an app, what its
authorization URL answers now), and let `authbroker.diagnosis` judge it. The API, the console
and through the API the CLI all ask here.
"""

from __future__ import annotations

import socket

import aiohttp

from authbroker import connection_settings, diagnosis, netguard
from authbroker.config import Settings
from authbroker.diagnosis import Check, EndpointAnswer
from authbroker.schemas import check_url
from storage import apps
from storage import diagnosis as facts
from storage.apps import App
from storage.connections import Connection
from storage.resources import Resources

# How long the authorization URL has to answer: a diagnosis should not keep its reader waiting,
# and an endpoint that exists answers a bare GET at once.
ANSWER_TIMEOUT = 5.0


async def connection_checks(res: Resources, connection: Connection) -> list[Check]:
    """Every check of a connection, from what was recorded."""
    app = await apps.get_by_id(res.pool, connection.app_id)
    assert app is not None  # connections reference their app
    return diagnosis.diagnose_connection(
        facts.connection_facts(connection),
        facts.app_facts(app.for_connection(connection.settings)),
        redirect_url=res.settings.redirect_url,
        recent_events=await facts.recent_events(res.pool, connection.id),
        endpoint=await facts.token_endpoint(
            res.pool, app.for_connection(connection.settings).token_url
        ),
        provider_timeout=res.settings.provider_timeout,
    )


async def app_checks(res: Resources, app: App) -> list[Check]:
    """Every check of an app: its settings against what its connections met, the health of its
    token endpoint, and what its authorization URL answers (not fetched when each connection
    fills it: there is no one URL to fetch)."""
    templated = connection_settings.placeholders_in(app.authorization_url)
    return diagnosis.diagnose_app(
        facts.app_facts(app),
        redirect_url=res.settings.redirect_url,
        history=await facts.app_history(res.pool, app),
        endpoint=await facts.token_endpoint(res.pool, app.token_url),
        authorization_answer=None
        if templated or not app.authorization_url
        else await answer_of(app.authorization_url, res.settings, timeout=ANSWER_TIMEOUT),
        provider_timeout=res.settings.provider_timeout,
    )


async def answer_of(
    url: str,
    settings: Settings,
    *,
    timeout: float,  # noqa: ASYNC109 - one request, its own limit
) -> EndpointAnswer:
    """What `url` answers to a bare GET, redirects not followed, under the rules every request
    to a provider follows (allowed schemes and hosts, the guarded resolver). No parameter is
    sent: a provider answers such a request with an error page, or a 404 where it has no
    endpoint."""
    try:
        check_url(url, allow_http=settings.allow_http, rules=settings.outbound)
    except ValueError as exc:
        return EndpointAnswer(url, error="not_allowed", detail=str(exc))
    async with netguard.provider_session(settings.outbound, per_host=1) as http:
        try:
            async with http.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as reply:
                return EndpointAnswer(url, status=reply.status)
        except TimeoutError:
            return EndpointAnswer(url, error="timeout", detail=f"no answer within {timeout:g} s")
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            return EndpointAnswer(url, error="tls", detail=_reason(exc))
        except aiohttp.ClientConnectorError as exc:
            return EndpointAnswer(url, error=_unreached(exc.os_error), detail=_reason(exc))
        except aiohttp.ClientError as exc:
            return EndpointAnswer(url, error="connection", detail=_reason(exc))


def _unreached(cause: OSError) -> str:
    if isinstance(cause, netguard.ForbiddenAddress):
        return "not_allowed"
    if isinstance(cause, socket.gaierror):
        return "unresolvable"
    if isinstance(cause, ConnectionRefusedError):
        return "refused"
    return "connection"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
