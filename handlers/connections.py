"""Connections: start an authorization, look at connections, hand out credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import get_args

from aiohttp import web

from authbroker import oauth
from authbroker.events import ConnectionStatus, EventType, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.schemas import CONNECTION_ID_PATTERN, ConnectionStart, Report
from handlers import models
from handlers.apps import APP_NAME, APP_NOT_FOUND, load_app
from handlers.context import resources
from handlers.operations import NO_STORE, RETRY_AFTER, Answer, operation, path_param, query_param
from handlers.refreshing import expiring, refresh_and_wait, seconds_until
from handlers.responses import fail, ok, read_model
from storage import authorizations, connections, outbox
from storage.apps import App
from storage.connections import Connection, ConnectionConflict
from storage.jobs import enqueue_revokes
from storage.resources import Resources

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

AUTHORIZATION_LIFETIME = 600  # seconds; the state is single use and dies after 10 minutes
STATUSES = get_args(ConnectionStatus)

CONNECTION_ID = path_param(
    "connection_id", "The connection's id.", {"type": "string", "pattern": CONNECTION_ID_PATTERN}
)
CONNECTION_NOT_FOUND = "No connection of that id (`connection_not_found`)."
NOT_USABLE = (
    "The connection has no usable token and will not get one by waiting (`connection_not_active`, "
    "`token_expired`, `refresh_token_missing`): `status`, `problem` and `detail` say why and what "
    "to do."
)
UNAVAILABLE = Answer(
    "No valid token now, but it may come back (refresh pending or retrying, or the app's settings "
    "were refused): `problem`, `detail` and `Retry-After`.",
    models.Error,
    headers=RETRY_AFTER,
)


async def load_connection(request: web.Request) -> Connection:
    connection_id = request.match_info["connection_id"]
    found = await connections.get(resources(request).pool, connection_id)
    if found is None:
        fail(404, "connection_not_found", f"no connection with id {connection_id!r}")
    return found


@routes.post("/v1/apps/{name}/connections")
@operation(
    "startAuthorization",
    "connections",
    {
        201: Answer("The authorize URL, valid ten minutes.", models.AuthorizationStarted),
        404: APP_NOT_FOUND,
        409: "The app is being deleted (`app_deleting`), waits for its client secret "
        "(`app_awaiting_secret`), or the connection id belongs to another app "
        "(`connection_exists`).",
    },
    parameters=[APP_NAME],
    body=ConnectionStart,
    body_required=False,
)
async def start_authorization(request: web.Request) -> web.Response:
    """Start an authorization: get the URL to send the user to.

    The connection becomes active once a worker has exchanged the code for tokens. An existing
    connection id of the same app is authorized again; its current tokens keep working until the
    new ones arrive.
    """
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, ConnectionStart)
    return ok(await begin_authorization(res, app, body), status=201)


async def begin_authorization(
    res: Resources, app: App, body: ConnectionStart
) -> models.AuthorizationStarted:
    """Create (or re-authorize) a connection and its authorization; the API and the console
    both start connections here. Raises ApiError (409) when the app cannot authorize."""
    if app.deleting:
        fail(409, "app_deleting", f"app {app.name!r} is being deleted")
    if app.awaiting_secret:
        fail(
            409,
            "app_awaiting_secret",
            f"app {app.name!r} was imported without its client secret: set it first "
            "(PATCH /v1/apps/{name} with client_secret)",
        )
    connection_id = body.connection_id or f"conn_{uuid.uuid4().hex}"
    scopes = body.scopes if body.scopes is not None else app.scopes
    state = oauth.new_state()
    verifier = oauth.new_code_verifier() if app.pkce else None
    authorize_url = oauth.build_authorize_url(
        app.client(res.ring),
        redirect_uri=res.settings.redirect_url,
        scopes=scopes,
        state=state,
        code_challenge=oauth.code_challenge(verifier) if verifier else None,
    )
    try:
        async with res.pool.acquire() as conn, conn.transaction():
            created = await connections.start(
                conn,
                connection_id=connection_id,
                app_id=app.id,
                requested_scopes=scopes,
                metadata=body.metadata if "metadata" in body.model_fields_set else None,
            )
            authorization_id, expires_at = await authorizations.create(
                conn,
                res.ring,
                state_hash=oauth.state_digest(state),
                app_id=app.id,
                connection_id=connection_id,
                code_verifier=verifier,
                requested_scopes=scopes,
                redirect_uri=res.settings.redirect_url,
                lifetime_seconds=AUTHORIZATION_LIFETIME,
            )
    except ConnectionConflict:
        fail(409, "connection_exists", f"connection {connection_id!r} belongs to another app")
    log.info(
        "authorization_started",
        app=app.name,
        connection_id=connection_id,
        reauthorization=not created,
        authorization_id=str(authorization_id),
    )
    return models.AuthorizationStarted(
        connection_id=connection_id,
        authorize_url=authorize_url,
        expires_at=expires_at,
        authorization_id=authorization_id,
        status_url=f"{res.settings.public_url}/oauth/status/{authorization_id}",
    )


@routes.get("/v1/connections")
@operation(
    "listConnections",
    "connections",
    {
        200: Answer("A page of connections.", models.ConnectionPage),
        400: "Invalid `status` or `limit` (`invalid_status`, `invalid_limit`).",
    },
    parameters=[
        query_param("app", "Only this app's connections.", {"type": "string"}),
        query_param(
            "status", "Only connections in this status.", {"type": "string", "enum": list(STATUSES)}
        ),
        query_param(
            "limit",
            "Page size.",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        ),
        query_param("after", "The `next` of the previous page.", {"type": "string"}),
    ],
)
async def list_connections(request: web.Request) -> web.Response:
    """List connections, a page at a time (by id)."""
    res = resources(request)
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        fail(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    if not 1 <= limit <= 1000:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    found = await connections.page(
        res.pool,
        app=request.query.get("app"),
        status=status,
        after=request.query.get("after"),
        limit=limit + 1,
    )
    more = len(found) > limit
    items = found[:limit]
    return ok(
        models.ConnectionPage(
            items=[models.Connection.of(c) for c in items], next=items[-1].id if more else None
        )
    )


@routes.get("/v1/connections/{connection_id}")
@operation(
    "getConnection",
    "connections",
    {200: Answer("The connection.", models.Connection), 404: CONNECTION_NOT_FOUND},
    parameters=[CONNECTION_ID],
)
async def show_connection(request: web.Request) -> web.Response:
    """Show a connection (never its tokens).

    Its status, problem and remedy, requested and granted scopes, expiry and last error.
    """
    return ok(models.Connection.of(await load_connection(request)))


def _unavailable(found: Connection, app_paused: str | None = None) -> None:
    """Answer why there is no usable token: 503 while it may come back, 409 when it will not."""
    if found.status != "active":
        fail(
            409,
            "connection_not_active",
            f"connection is {found.status}"
            + (f": {found.problem}" if found.problem else "")
            + (" (authorization not completed yet)" if found.status == "pending" else ""),
            status=found.status,
            problem=found.problem,
            detail=Problem.remedy_of(found.problem),
        )
    retry_at = found.next_attempt_at
    if app_paused:
        problem, why = app_paused, "the app's settings were refused by the provider"
    elif found.provider_unavailable_until is not None:
        problem, why = str(Problem.PROVIDER_UNAVAILABLE), "the provider's token endpoint is down"
        retry_at = found.provider_unavailable_until
    else:
        problem, why = str(Problem.TOKEN_EXPIRED), "refresh pending"
    fail(
        503,
        problem,
        f"no valid access token now: {why}",
        problem=problem,
        detail=Problem.remedy_of(problem),
        next_attempt_at=retry_at,
        headers={"Retry-After": str(seconds_until(retry_at))},
    )


def _credentials(res: Resources, found: Connection) -> web.Response:
    access_token = found.open_access_token(res.ring)
    token_type = found.token_type or "Bearer"
    scopes = found.granted_scopes if found.granted_scopes is not None else found.requested_scopes
    return ok(
        models.OAuthCredentials(
            type="oauth2",
            access_token=access_token,
            token_type=token_type,
            expires_at=found.expires_at,
            scopes=scopes,
            authorization=f"{token_type} {access_token}",
        ),
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@routes.get("/v1/connections/{connection_id}/credentials")
@operation(
    "connectionCredentials",
    "connections",
    {
        200: Answer("The credentials.", models.OAuthCredentials, headers=NO_STORE),
        404: CONNECTION_NOT_FOUND,
        409: NOT_USABLE,
        503: UNAVAILABLE,
    },
    parameters=[CONNECTION_ID],
)
async def connection_credentials(request: web.Request) -> web.Response:
    """A valid access token and a ready Authorization value.

    A token about to expire is refreshed first (joining a refresh in flight); the request waits
    at most ten seconds.
    """
    res = resources(request)
    found = await load_connection(request)
    if found.status != "active" or found.access_token is None:
        _unavailable(found)
    now = datetime.now(UTC)
    backing_off = found.next_attempt_at is not None and found.next_attempt_at > now
    refreshable = (
        found.refresh_token is not None
        and found.app_paused is None
        and found.provider_unavailable_until is None
    )
    if expiring(found, now) and refreshable and not backing_off:
        found = await refresh_and_wait(res, found) or found
    now = datetime.now(UTC)
    if found.status != "active" or found.access_token is None:
        _unavailable(found)
    if found.expires_at is not None and found.expires_at <= now:
        if found.refresh_token is None:
            fail(
                409,
                "token_expired",
                "the access token expired and there is no refresh token",
                status=found.status,
                problem=str(Problem.TOKEN_EXPIRED),
                detail="Authorize the connection again.",
            )
        _unavailable(found, found.app_paused)
    return _credentials(res, found)


async def require_refreshable(res: Resources, found: Connection) -> None:
    """Stop with the reason when no refresh can run: not active, no refresh token, its app
    paused because the provider refused the app's settings, or its token endpoint down."""
    if found.status != "active":
        _unavailable(found)
    if found.refresh_token is None:
        fail(
            409,
            "refresh_token_missing",
            "this connection has no refresh token: authorize it again",
            problem=str(Problem.REFRESH_TOKEN_MISSING),
            detail=Problem.REFRESH_TOKEN_MISSING.remedy,
        )
    if found.app_paused is not None or found.provider_unavailable_until is not None:
        _unavailable(found, found.app_paused)


@routes.post("/v1/connections/{connection_id}/refresh")
@operation(
    "refreshConnection",
    "connections",
    {
        200: Answer("The outcome.", models.RefreshOutcome),
        404: CONNECTION_NOT_FOUND,
        409: NOT_USABLE,
        503: Answer(
            "The refresh did not finish within ten seconds (`refresh_pending`), or the app's "
            "settings were refused.",
            models.Error,
            headers=RETRY_AFTER,
        ),
    },
    parameters=[CONNECTION_ID],
)
async def force_refresh(request: web.Request) -> web.Response:
    """Refresh now and tell what happened.

    The refresh runs whatever the schedule says; the request waits for it at most ten seconds.
    """
    res = resources(request)
    found = await load_connection(request)
    await require_refreshable(res, found)
    after = await refresh_and_wait(res, found)
    if after is None:
        fail(
            503,
            "refresh_pending",
            "the refresh did not finish within 10 seconds; it goes on in the background",
            headers={"Retry-After": "5"},
        )
    return ok(
        models.RefreshOutcome(
            outcome=refresh_outcome(found, after), connection=models.Connection.of(after)
        )
    )


def refresh_outcome(before: Connection, after: Connection) -> str:
    """What a finished refresh did: `refreshed`, `failed` (the grant is gone) or `retrying`."""
    if after.status != "active":
        return "failed"
    return "refreshed" if after.version > before.version else "retrying"


@routes.post("/v1/connections/{connection_id}/report")
@operation(
    "reportConnection",
    "connections",
    {
        200: Answer("What authbroker did.", models.ReportOutcome),
        404: CONNECTION_NOT_FOUND,
        409: NOT_USABLE,
        503: UNAVAILABLE,
    },
    parameters=[CONNECTION_ID],
    body=Report,
)
async def report(request: web.Request) -> web.Response:
    """Tell what the web service answered (401/403 and its WWW-Authenticate).

    RFC 6750 §3: `invalid_token` or a bare 401 refreshes (and invalidates the connection if the
    provider then refuses the grant); `insufficient_scope` is recorded; a 403 without a Bearer
    error gets a hint that no token may have been sent at all.
    """
    res = resources(request)
    found = await load_connection(request)
    body = await read_model(request, Report)
    challenge = oauth.parse_bearer_challenge(body.www_authenticate)
    record = {
        "status": body.status,
        "error": challenge.error if challenge else None,
        "scope": challenge.scope if challenge else None,
        "at": datetime.now(UTC).isoformat(),
    }
    await connections.record_report(res.pool, found.id, record)
    bound = log.bind(app=found.app, connection_id=found.id, reported_status=body.status)
    if challenge is not None and challenge.error == "insufficient_scope":
        needed = challenge.scope or []
        async with res.pool.acquire() as conn, conn.transaction():
            await connections.set_problem(
                conn,
                found.id,
                problem=str(Problem.INSUFFICIENT_SCOPE),
                detail=Problem.INSUFFICIENT_SCOPE.remedy
                + (f" Required: {' '.join(needed)}." if needed else ""),
            )
            await outbox.append(
                conn,
                make_event(
                    EventType.INSUFFICIENT_SCOPE,
                    app=found.app,
                    connection_id=found.id,
                    status=found.status,
                    problem=Problem.INSUFFICIENT_SCOPE,
                    data={"required_scopes": needed, "granted_scopes": found.granted_scopes},
                ),
            )
        bound.info("insufficient_scope_reported", required=needed)
        return ok(
            models.ScopeRecorded(
                action="recorded", problem=Problem.INSUFFICIENT_SCOPE, required_scopes=needed
            )
        )
    token_refused = body.status == 401 or (
        challenge is not None and challenge.error == "invalid_token"
    )
    if token_refused:
        await require_refreshable(res, found)
        after = await refresh_and_wait(res, found)
        bound.info("invalid_token_reported", outcome=after.status if after else "pending")
        return ok(
            models.TokenRefreshed(
                action="refreshed" if after and after.status == "active" else "refresh_attempted",
                connection=models.Connection.of(after or found),
            )
        )
    hint = (
        "The web service answered 403 without a Bearer challenge: the request may have been sent "
        "without the Authorization header, or the provider restricts access (IP ranges, "
        "domains, plan). Check that the runtime sends the `authorization` value it received."
    )
    bound.info("forbidden_reported", bearer_challenge=challenge is not None)
    return ok(models.ReportHint(action="none", hint=hint))


@routes.delete("/v1/connections/{connection_id}")
@operation(
    "deleteConnection",
    "connections",
    {
        202: Answer("Revocation started.", models.ConnectionRevoking),
        204: Answer("Already revoked."),
        404: CONNECTION_NOT_FOUND,
    },
    parameters=[CONNECTION_ID],
)
async def delete_connection(request: web.Request) -> web.Response:
    """Revoke the grant at the provider, then forget the tokens.

    A worker revokes the refresh and access tokens at the app's revoke URL, then wipes them:
    202 while that happens.
    """
    found = await load_connection(request)
    if not await request_delete(resources(request), found):
        return web.Response(status=204)
    return ok(models.ConnectionRevoking(connection_id=found.id, status="revoking"), status=202)


async def request_delete(res: Resources, found: Connection) -> bool:
    """Start revoking a connection; False when it is already revoked."""
    if found.status == "revoked":
        return False
    async with res.pool.acquire() as conn, conn.transaction():
        await connections.begin_revoke(conn, found.id)
    await enqueue_revokes(res, [found.id])
    log.info("connection_delete_requested", app=found.app, connection_id=found.id)
    return True
