"""`GET /oauth/callback`: where providers send the user's browser back with a code, and
`/oauth/status/{id}`, where the callback page follows the exchange. What the redirect means is
decided by `services.authorizations`; this module reads the request and renders the page."""

from __future__ import annotations

import uuid

from aiohttp import web

from authbroker import text
from authbroker.logs import get_logger
from handlers.context import resources
from handlers.models import CallbackOutcome, Error
from handlers.operations import STRING, Answer, operation, path_param, query_param
from handlers.pages import page, wants_json
from handlers.responses import ok
from services import authorizations
from services.errors import Invalid

routes = web.RouteTableDef()
log = get_logger("authbroker.callback")

MAX_PARAM = 4096
EXPECTED = ("state", "code", "error", "error_description", "error_uri", "iss", "scope")
MAX_EXTRA_PARAMS = 20  # a provider's own parameters kept for the use case to pick from
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
    """A request that cannot be a provider's callback at all (repeated or oversized
    parameters)."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error = error
        self.message = message


def _params(request: web.Request) -> dict[str, str]:
    """The callback's parameters, refusing repeated or oversized ones (RFC 6749 §3.1) and any
    that could not be kept (`authbroker.text`). Besides the protocol's, a provider may add its
    own (QuickBooks' `realmId`): the use case keeps those its preset names."""
    if len(request.query_string) > 4 * MAX_PARAM:
        raise BadCallback("invalid_request", "The address is too long to be a real callback.")
    params: dict[str, str] = {}
    for key, value in request.query.items():
        if key in params:
            raise BadCallback("invalid_request", f"The parameter '{key}' appears more than once.")
        if len(value) > MAX_PARAM:
            raise BadCallback("invalid_request", f"The parameter '{key}' is too long.")
        if key not in EXPECTED and len(params) >= MAX_EXTRA_PARAMS + len(EXPECTED):
            continue
        why = text.flaw(value)
        if why:
            raise BadCallback("invalid_request", f"The parameter '{key}' {why}.")
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
        authorization = await authorizations.receive(res, params)
    except (BadCallback, Invalid) as exc:
        code = exc.error if isinstance(exc, BadCallback) else exc.code
        log.info("callback_refused", reason=code, message=exc.message)
        return _bad(request, code, exc.message)
    wait = 0.0 if "error" in params else WAIT_FOR_OUTCOME
    return await _outcome_response(request, authorization.id, wait=wait)


async def _outcome_response(
    request: web.Request, authorization_id: uuid.UUID, *, wait: float = 0.0
) -> web.Response:
    """Answer with the exchange's outcome, waiting up to `wait` seconds for it to finish."""
    found = await authorizations.outcome(resources(request), authorization_id, wait=wait)
    assert found is not None
    outcome = CallbackOutcome.of(found)
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
    found = await authorizations.outcome(resources(request), authorization_id)
    if found is None:
        return _bad(request, "not_found", "No such sign-in.", status=404)
    return await _outcome_response(request, authorization_id, wait=2.0)
