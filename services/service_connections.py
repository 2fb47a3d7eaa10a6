"""Service connections: tokens for the client itself, with the client credentials grant (RFC 6749
§4.4), for integrations that call a web service machine to machine, for no user.

A start creates the connection due now (or makes an existing one due with new scopes and
parameters) and wakes the refresh engine, which requests its token as it refreshes other
connections: the same claims and leases (one request per connection at a time), the same
backoff, endpoint health and events. There is no refresh token (§4.4.3): before each token
expires the engine asks for the next one the same way.

What differs from a refresh is only how the answer to a start ends: its first token authorizes
the connection (`connection.authorized`), and a refusal fails the start
(`connection.authorization_failed`, the connection `failed` unless it still holds a working
token) instead of pausing the app: a refused start is an operator's settings at work, not a
change at the provider that every connection of the app would meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authbroker import oauth
from authbroker.events import (
    AuthorizationFailed,
    AuthorizationStarted,
    Authorized,
    EventType,
    ScopesDenied,
    make_event,
)
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.states import Status
from services import apps as apps_service
from services.context import Context
from services.errors import Conflict
from services.tokens import TokenTimes, missing_scopes
from storage import connections, leases, outbox
from storage.apps import App
from storage.connections import CLIENT_CREDENTIALS, Connection, ConnectionConflict
from storage.resources import Resources

log = get_logger("authbroker.service_connections")


@dataclass(frozen=True)
class Started:
    connection_id: str
    status: str
    reauthorization: bool


async def start(
    res: Resources,
    app: App,
    *,
    connection_id: str | None,
    scopes: list[str] | None,
    token_params: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    settings: dict[str, str] | None = None,
) -> Started:
    """Create a service connection, or ask a new token for an existing one with these scopes
    and parameters (its current token keeps working until then). `scopes` None: the app's.
    `metadata` None keeps an existing connection's, `settings` None its connection settings
    (the values its app's URLs take for it)."""
    apps_service.require_authorizable(app, user=False)
    if not app.client_secret and not (app.client_auth == "private_key_jwt" and app.signing_keys):
        raise Conflict(
            "client_credentials_unavailable",
            f"app {app.name!r} has no client secret (or signing key for private_key_jwt): the "
            "client credentials grant authenticates the client itself",
        )
    connection_id = connection_id or connections.new_id()
    scopes = scopes if scopes is not None else app.scopes
    existing = await connections.get(res.pool, connection_id)
    own = existing.settings if existing and existing.app_id == app.id else None
    if settings is None:
        settings = {k: v for k, v in (own or {}).items() if k in app.connection_settings}
    elif own is not None and existing and existing.access_token and settings != own:
        # Its token stays until the next arrives, and was issued at its own URLs: refreshed,
        # probed and revoked anywhere else it would go astray.
        raise Conflict(
            "connection_settings",
            f"service connection {connection_id!r} holds a token issued with settings {own}: "
            "delete it first (its token is revoked where it was issued), or start another "
            "connection id with the new settings",
        )
    await apps_service.for_connection(res, app, settings)  # refuses what cannot be filled
    try:
        async with res.pool.acquire() as conn, conn.transaction():
            started = await connections.start_service(
                conn,
                connection_id=connection_id,
                app_id=app.id,
                requested_scopes=scopes,
                token_params=token_params,
                metadata=metadata,
                settings=settings,
            )
            reauthorization = started.authorized_at is not None
            await outbox.append(
                conn,
                make_event(
                    EventType.AUTHORIZATION_STARTED,
                    app=app.name,
                    connection_id=connection_id,
                    status=started.status,
                    detail="A token is requested with the client credentials grant.",
                    data=AuthorizationStarted(
                        reauthorization=reauthorization,
                        authorization_id=None,
                        expires_at=None,
                        grant=CLIENT_CREDENTIALS,
                    ),
                ),
            )
            await leases.wake_workers(conn)
    except ConnectionConflict as exc:
        raise Conflict("connection_exists", taken(connection_id, exc)) from None
    log.info(
        "authorization_started",
        app=app.name,
        connection_id=connection_id,
        reauthorization=reauthorization,
        grant=CLIENT_CREDENTIALS,
    )
    return Started(connection_id, started.status, reauthorization)


def taken(connection_id: str, exc: ConnectionConflict) -> str:
    """Why a start could not take the connection id (`connection_exists`)."""
    if exc.grant_type is None:
        return f"connection {connection_id!r} belongs to another app"
    if exc.grant_type == CLIENT_CREDENTIALS:
        return (
            f"connection {connection_id!r} is a service connection (client credentials, no user "
            "signs in for it), or one being revoked"
        )
    return (
        f"connection {connection_id!r} is authorized by a user (authorization code): a service "
        "connection needs an id of its own"
    )


async def authorized(
    wc: Context,
    app: App,
    current: Connection,
    holder: str,
    tokens: oauth.TokenResponse,
    times: TokenTimes,
) -> bool:
    """The token a start asked for arrived: store it and end the start, in one transaction.
    False when the connection was changed meanwhile by someone else (lease lost)."""
    res = wc.resources
    requested = current.requested_scopes
    granted = tokens.scopes  # None: the provider did not say (RFC 6749 §5.1: as requested)
    missing = missing_scopes(requested, granted)
    async with res.pool.acquire() as conn, conn.transaction():
        stored = await connections.store_tokens(
            conn,
            res.ring,
            current.id,
            tokens,
            expires_at=times.expires_at,
            refresh_at=times.refresh_at,
            refresh_token_expires_at=None,
            requested_scopes=None,
            granted_scopes=granted,
            problem=str(Problem.SCOPES_DENIED) if missing else None,
            authorized=True,
            lease_holder=holder,
            expected_version=current.version,
        )
        if stored is None:
            return False
        common: dict[str, Any] = {"app": app.name, "connection_id": current.id}
        news = [
            make_event(
                EventType.AUTHORIZED,
                **common,
                status=stored.status,
                detail="The service connection has its token (client credentials grant).",
                data=Authorized(
                    granted_scopes=granted,
                    expires_at=times.expires_at,
                    has_refresh_token=stored.refresh_token is not None,
                    reauthorization=current.authorized_at is not None,
                ),
            )
        ]
        if missing:
            news.append(
                make_event(
                    EventType.SCOPES_DENIED,
                    **common,
                    status=stored.status,
                    problem=Problem.SCOPES_DENIED,
                    data=ScopesDenied(
                        requested_scopes=list(requested),
                        granted_scopes=granted or [],
                        missing=missing,
                    ),
                )
            )
        await outbox.append(conn, *news)
    log.info(
        "connection_authorized",
        app=app.name,
        connection_id=current.id,
        grant=CLIENT_CREDENTIALS,
        granted_scopes=granted,
        missing_scopes=missing,
        expires_at=times.expires_at.isoformat() if times.expires_at else None,
    )
    return True


async def start_failed(
    wc: Context, app: App, current: Connection, holder: str, exc: oauth.ProviderRejected
) -> str:
    """The provider refused the token a start asked for: the start fails with the problem it
    names, and the connection with it unless it still holds a working token (a refused new
    grant leaves a working connection working until its token expires)."""
    problem = exc.problem or Problem.PROVIDER_ERROR
    error = {
        "stage": CLIENT_CREDENTIALS,
        "error": exc.error,
        "description": exc.description,
        "status": exc.status,
    }
    async with wc.resources.pool.acquire() as conn, conn.transaction():
        status = await connections.fail_start(
            conn,
            current.id,
            holder,
            current.version,
            problem=str(problem),
            detail=problem.remedy,
            last_error=error,
        )
        if status is not None:
            await outbox.append(
                conn,
                make_event(
                    EventType.AUTHORIZATION_FAILED,
                    app=app.name,
                    connection_id=current.id,
                    status=status,
                    problem=problem,
                    data=AuthorizationFailed(provider_error=exc.error, provider_status=exc.status),
                ),
            )
    if status is None:
        return "superseded"
    log.warning(
        "authorization_failed",
        app=app.name,
        connection_id=current.id,
        grant=CLIENT_CREDENTIALS,
        problem=str(problem),
        provider_error=exc.error,
        provider_status=exc.status,
    )
    return "failed" if status == Status.FAILED else "start refused"
