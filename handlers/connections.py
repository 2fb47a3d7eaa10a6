"""Connections: start an authorization, look at connections, hand out credentials."""

from __future__ import annotations

from aiohttp import web

from authbroker import provider_data
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.roles import Permission
from authbroker.schemas import CONNECTION_ID_PATTERN, ConnectionStart, Report
from authbroker.states import Status
from handlers import models
from handlers.apps import APP_NAME, APP_NOT_FOUND, load_app
from handlers.context import AUDIT, caller, resources
from handlers.operations import NO_STORE, RETRY_AFTER, Answer, operation, path_param, query_param
from handlers.responses import fail, ok, query_value, read_model
from services import access, authorizations, revocation, service_connections
from services import connections as service
from storage import connections
from storage.connections import Connection
from storage.resources import Resources

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

STATUSES = tuple(Status)

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
    """The connection the path names, if the caller reaches its app."""
    found = await service.get(resources(request), request.match_info["connection_id"])
    access.require_app(caller(request), found.app, what="connection's app")
    return found


@routes.post("/v1/apps/{name}/connections")
@operation(
    "startAuthorization",
    "connections",
    {
        201: Answer("The authorize URL, valid ten minutes.", models.AuthorizationStarted),
        202: Answer(
            "A service connection (client credentials): its token is being requested.",
            models.ServiceConnectionStarted,
        ),
        400: "Invalid body; or `settings` that lack one the app needs, name one it does not "
        "take, hold a value that is not one DNS label, or fill a URL the outbound rules refuse "
        "(`fields` names each, `settings.NAME`).",
        404: APP_NOT_FOUND,
        409: "The app is being deleted (`app_deleting`), waits for its client secret "
        "(`app_awaiting_secret`), has no authorization URL for a user to sign in at "
        "(`authorization_url_missing`) or no client secret for the client credentials grant "
        "(`client_credentials_unavailable`), the connection id belongs to another app or "
        "another grant (`connection_exists`), or a service connection holding a token would "
        "move to other settings (`connection_settings`: delete it first).",
    },
    parameters=[APP_NAME],
    body=ConnectionStart,
    body_required=False,
    permission=Permission.CONNECTIONS_WRITE,
)
async def start_authorization(request: web.Request) -> web.Response:
    """Start an authorization: get the URL to send the user to, or a service connection.

    The connection becomes active once a worker has exchanged the code for tokens. An existing
    connection id of the same app is authorized again; its current tokens keep working until the
    new ones arrive. With `"grant": "client_credentials"` there is no user: a worker requests
    the token at once (`connection.authorized`, or `connection.authorization_failed` naming
    the problem) and each next one before the current one expires.

    An app with `connection_settings` needs their values in `settings`; every URL of the
    connection is filled with them. A re-authorization without `settings` keeps the
    connection's; with other ones, the connection moves to them when the new grant arrives (its
    previous grant is revoked, nothing of it kept).
    """
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, ConnectionStart)
    metadata = body.metadata if "metadata" in body.model_fields_set else None
    if body.grant == "client_credentials":
        service = await service_connections.start(
            res,
            app,
            connection_id=body.connection_id,
            scopes=body.scopes,
            token_params=body.request_params(),
            metadata=metadata,
            settings=body.settings,
        )
        return ok(models.ServiceConnectionStarted.of(service, res.settings.public_url), status=202)
    started = await authorizations.start(
        res,
        app,
        connection_id=body.connection_id,
        scopes=body.scopes,
        metadata=metadata,
        settings=body.settings,
    )
    return ok(models.AuthorizationStarted.of(started), status=201)


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
    permission=Permission.CONNECTIONS_READ,
)
async def list_connections(request: web.Request) -> web.Response:
    """List connections, a page at a time (by id)."""
    res = resources(request)
    status = query_value(request, "status")
    if status is not None and status not in STATUSES:
        fail(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    try:
        limit = int(query_value(request, "limit", "100"))
    except ValueError:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    if not 1 <= limit <= 1000:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    app = query_value(request, "app")
    found = await connections.page(
        res.pool,
        apps=caller(request).limited_to([app] if app is not None else []),
        status=status,
        after=query_value(request, "after"),
        limit=limit + 1,
    )
    more = len(found) > limit
    items = found[:limit]
    return ok(
        models.ConnectionPage(
            items=[models.Connection.of(c, res.ring) for c in items],
            next=items[-1].id if more else None,
        )
    )


@routes.get("/v1/connections/{connection_id}")
@operation(
    "getConnection",
    "connections",
    {200: Answer("The connection.", models.Connection), 404: CONNECTION_NOT_FOUND},
    parameters=[CONNECTION_ID],
    permission=Permission.CONNECTIONS_READ,
)
async def show_connection(request: web.Request) -> web.Response:
    """Show a connection (never its tokens).

    Its status, problem and remedy, requested and granted scopes, expiry and last error.
    """
    return ok(models.Connection.of(await load_connection(request), resources(request).ring))


def _credentials(res: Resources, found: Connection) -> web.Response:
    access_token = found.open_access_token(res.ring)
    token_type = found.token_type or "Bearer"
    scopes = found.granted_scopes
    return ok(
        models.OAuthCredentials(
            type="oauth2",
            access_token=access_token,
            token_type=token_type,
            expires_at=found.expires_at,
            scopes=scopes,
            authorization=f"{token_type} {access_token}",
            provider_data=provider_data.for_runtime(found.open_extra(res.ring)),
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
    permission=Permission.CREDENTIALS_READ,
)
async def connection_credentials(request: web.Request) -> web.Response:
    """A valid access token and a ready Authorization value.

    A token about to expire is refreshed first (joining a refresh in flight); the request waits
    at most ten seconds.
    """
    res = resources(request)
    found = await service.credentials(res, await load_connection(request))
    request.app[AUDIT].count(caller(request).key_id, "connection", found.id)
    return _credentials(res, found)


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
    permission=Permission.CONNECTIONS_REFRESH,
)
async def force_refresh(request: web.Request) -> web.Response:
    """Refresh now and tell what happened.

    The refresh runs whatever the schedule says; the request waits for it at most ten seconds.
    """
    res = resources(request)
    done = await service.refresh_now(res, await load_connection(request))
    return ok(
        models.RefreshOutcome(
            outcome=done.outcome, connection=models.Connection.of(done.connection, res.ring)
        )
    )


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
    permission=Permission.CONNECTIONS_REFRESH,
)
async def report(request: web.Request) -> web.Response:
    """Tell what the web service answered (401/403 and its WWW-Authenticate).

    RFC 6750 §3: `invalid_token` or a bare 401 refreshes (and invalidates the connection if the
    provider then refuses the grant); `insufficient_scope` is recorded; a 403 without a Bearer
    error gets a hint that no token may have been sent at all. A connection without a refresh
    token cannot be refreshed: `invalid_token`, or a bare 401 the app's probe URL confirms,
    marks it failed (`token_revoked`); a bare 401 nothing confirms is counted, and the app's
    `reports_to_invalidate`-th within an hour marks it failed.
    """
    res = resources(request)
    found = await load_connection(request)
    body = await read_model(request, Report)
    done = await service.report(
        res, found, status=body.status, www_authenticate=body.www_authenticate
    )
    if done.action == "recorded":
        return ok(
            models.ScopeRecorded(
                action="recorded",
                problem=Problem.INSUFFICIENT_SCOPE,
                required_scopes=list(done.required_scopes),
            )
        )
    if done.action == "invalidated" and done.connection is not None:
        return ok(
            models.TokenInvalidated(
                action="invalidated",
                problem=Problem.TOKEN_REVOKED,
                confirmed_by=done.confirmed_by,  # type: ignore[arg-type]
                connection=models.Connection.of(done.connection, res.ring),
            )
        )
    if done.action == "counted":
        return ok(
            models.ReportCounted(
                action="counted",
                reports=done.reports or 0,
                confirms_at=done.confirms_at or 0,
                since=done.since,
            )
        )
    if done.connection is not None:
        return ok(
            models.TokenRefreshed(
                action=done.action,  # type: ignore[arg-type]
                connection=models.Connection.of(done.connection, res.ring),
            )
        )
    return ok(models.ReportHint(action="none", hint=done.hint or ""))


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
    permission=Permission.CONNECTIONS_WRITE,
)
async def delete_connection(request: web.Request) -> web.Response:
    """Revoke the grant at the provider, then forget the tokens.

    A worker revokes the refresh and access tokens at the app's revoke URL, then wipes them:
    202 while that happens.
    """
    found = await load_connection(request)
    if not await revocation.request_delete(resources(request), found):
        return web.Response(status=204)
    return ok(models.ConnectionRevoking(connection_id=found.id, status="revoking"), status=202)
