"""`GET /oauth/callback`: where providers send the user's browser back with a code.

The order matters for safety: check the state under a row lock, store the sealed code, commit,
and only then enqueue; a Redis outage after the commit loses nothing because the worker's sweep
picks up stored codes. A bad request changes nothing and enqueues nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from authbroker import oauth
from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from handlers.context import resources
from handlers.models import CallbackOutcome, Error
from handlers.operations import STRING, Answer, operation, path_param, query_param
from handlers.pages import page, wants_json
from handlers.responses import ok
from storage import authorizations, connections, outbox
from storage.authorizations import Authorization
from storage.jobs import enqueue_exchange
from storage.resources import Resources

routes = web.RouteTableDef()
log = get_logger("authbroker.callback")

MAX_PARAM = 4096
EXPECTED = ("state", "code", "error", "error_description", "error_uri", "iss", "scope")
WAIT_FOR_OUTCOME = 8.0  # seconds the callback page waits for the exchange before polling

OUTCOME = Answer(
    "The outcome: an HTML page for browsers, JSON when `Accept` asks for it.",
    CallbackOutcome,
    media={"text/html": STRING},
)
REFUSED = Answer(
    "A link that cannot be used (missing, unknown, expired or reused state; duplicated or "
    "oversized parameters; unknown sign-in): HTML, or JSON when asked.",
    Error,
    media={"text/html": STRING},
)


class BadCallback(Exception):
    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error = error
        self.message = message


def _params(request: web.Request) -> dict[str, str]:
    """The callback's parameters, refusing repeated or oversized ones (RFC 6749 §3.1)."""
    if len(request.query_string) > 4 * MAX_PARAM:
        raise BadCallback("invalid_request", "The address is too long to be a real callback.")
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key in params:
            raise BadCallback("invalid_request", f"The parameter '{key}' appears more than once.")
        if len(value) > MAX_PARAM:
            raise BadCallback("invalid_request", f"The parameter '{key}' is too long.")
        if key in EXPECTED:
            params[key] = value
    return params


def _bad(request: web.Request, error: str, message: str, status: int = 400) -> web.Response:
    if wants_json(request):
        return ok(Error(error=error, message=message), status=status)
    return page(
        "This sign-in link cannot be used",
        [message, "Start the connection again from the application that sent you here."],
        tone="bad",
        status=status,
    )


@routes.get("/oauth/callback")
@operation(
    "oauthCallback",
    "browser",
    {200: OUTCOME, 400: REFUSED},
    parameters=[
        query_param("state", "The state authbroker sent.", STRING),
        query_param("code", "The authorization code.", STRING),
        query_param("error", "The provider's error code.", STRING),
        query_param("error_description", "The provider's description.", STRING),
        query_param("error_uri", "A page about the error.", STRING),
        query_param("iss", "The issuer (RFC 9207).", STRING),
        query_param("scope", "Scopes granted, when the provider says.", STRING),
    ],
)
async def callback(request: web.Request) -> web.Response:
    """Where providers send the user's browser back.

    RFC 6749 §4.1.2: the provider redirects here with `code` and `state`, or with `error`. The
    code is stored and exchanged by a worker.
    """
    res = resources(request)
    try:
        params = _params(request)
        authorization = await _accept(res, params)
    except BadCallback as exc:
        log.info("callback_refused", reason=exc.error, message=exc.message)
        return _bad(request, exc.error, exc.message)
    if "error" in params:
        return await _outcome_response(request, authorization.id)
    try:
        await enqueue_exchange(res, authorization.id)
    except Exception as exc:  # Redis down: the code is stored; the sweep will enqueue it
        log.warning(
            "exchange_enqueue_failed",
            authorization_id=str(authorization.id),
            error=type(exc).__name__,
        )
    return await _outcome_response(request, authorization.id, wait=WAIT_FOR_OUTCOME)


async def _accept(res: Resources, params: dict[str, str]) -> Authorization:
    state = params.get("state")
    if not state:
        raise BadCallback("invalid_request", "The provider sent no state with this sign-in.")
    has_code, has_error = "code" in params, "error" in params
    if has_code and has_error:
        raise BadCallback("invalid_request", "The callback carries both a code and an error.")
    if not has_code and not has_error:
        raise BadCallback("invalid_request", "The provider sent neither a code nor an error.")
    if has_code and not params["code"]:
        raise BadCallback("invalid_request", "The provider sent an empty code.")
    async with res.pool.acquire() as conn, conn.transaction():
        authorization = await authorizations.by_state(conn, oauth.state_digest(state))
        if authorization is None:
            raise BadCallback(
                "invalid_state", "This sign-in was not started here, or its link is damaged."
            )
        if authorization.outcome == "cancelled":
            raise BadCallback("cancelled", "This connection was deleted before sign-in finished.")
        if authorization.code is not None or (
            authorization.done and authorization.outcome != "expired"
        ):
            raise BadCallback("state_used", "This sign-in link was already used.")
        if authorization.expires_at <= datetime.now(UTC):
            raise BadCallback(
                "state_expired", "This sign-in took too long and its link has expired."
            )
        if has_error:
            await _provider_error(conn, authorization, params)
        else:
            await authorizations.store_code(conn, res.ring, authorization.id, params["code"])
    log.info(
        "callback_accepted",
        app=authorization.app,
        connection_id=authorization.connection_id,
        outcome="error" if has_error else "code",
    )
    return authorization


async def _provider_error(conn: Any, authorization: Authorization, params: dict[str, str]) -> None:
    """The provider ended the authorization (the user declined, a setting is wrong, …)."""
    error = params["error"][:100]
    description = params.get("error_description", "")[:300] or None
    problem = oauth.callback_problem(error, description)
    await authorizations.finish(conn, authorization.id, outcome="failed", problem=str(problem))
    current = await connections.get(conn, authorization.connection_id)
    # A failed re-authorization leaves a working connection working.
    status = "failed" if current is None or current.access_token is None else None
    await connections.set_problem(
        conn,
        authorization.connection_id,
        problem=str(problem),
        detail=problem.remedy,
        status=status,
        last_error={"stage": "authorize", "error": error, "description": description},
    )
    await outbox.append(
        conn,
        make_event(
            EventType.AUTHORIZATION_FAILED,
            app=authorization.app,
            connection_id=authorization.connection_id,
            status=status or (current.status if current else None),
            problem=problem,
            data={"provider_error": error, "provider_description": description},
        ),
    )
    log.info(
        "authorization_failed",
        app=authorization.app,
        connection_id=authorization.connection_id,
        problem=str(problem),
        provider_error=error,
    )


async def _outcome_response(
    request: web.Request, authorization_id: uuid.UUID, *, wait: float = 0.0
) -> web.Response:
    """Answer with the exchange's outcome, waiting up to `wait` seconds for it to finish."""
    res = resources(request)
    deadline = time.monotonic() + wait
    while True:
        authorization = await authorizations.get(res.pool, authorization_id)
        assert authorization is not None
        if authorization.done or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    outcome = CallbackOutcome.of(authorization)
    if wants_json(request):
        return ok(outcome)
    return outcome_page(outcome)


def outcome_page(outcome: CallbackOutcome) -> web.Response:
    app = outcome.app
    if outcome.status == "succeeded":
        return page(
            "Connected",
            [f"Your account is now connected to {app}.", "You can close this window."],
            tone="ok",
        )
    if outcome.status == "failed":
        return page(
            "The connection did not succeed",
            [f"Problem: {outcome.problem}.", outcome.detail or ""],
            tone="bad",
        )
    return page(
        "Finishing the connection…",
        [f"Waiting for {app} to confirm. This page updates by itself."],
        tone="wait",
        refresh_url=outcome.status_url,
    )


@routes.get("/oauth/status/{authorization_id}")
@operation(
    "oauthStatus",
    "browser",
    {200: OUTCOME, 404: REFUSED},
    parameters=[
        path_param(
            "authorization_id",
            "From `status_url` of a started authorization.",
            {"type": "string", "format": "uuid"},
        )
    ],
)
async def status(request: web.Request) -> web.Response:
    """The outcome of an authorization, for the callback page.

    Where the callback page follows a slow exchange: waits up to 2 s for a pending exchange, and
    shows no secret, only the outcome. An unknown id answers 404 `not_found`.
    """
    try:
        authorization_id = uuid.UUID(request.match_info["authorization_id"])
    except ValueError:
        return _bad(request, "not_found", "No such sign-in.", status=404)
    found = await authorizations.get(resources(request).pool, authorization_id)
    if found is None:
        return _bad(request, "not_found", "No such sign-in.", status=404)
    return await _outcome_response(request, authorization_id, wait=2.0)
