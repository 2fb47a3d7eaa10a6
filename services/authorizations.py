"""Authorizations, from start to end: handing out an authorize URL, what the provider's redirect
says, exchanging the code for tokens, and ending the authorization when it fails or nobody
finishes it. Each way an authorization can end is decided here, once, with its event.

The order of the callback matters for safety: check the state under a row lock, store the
sealed code, commit, and only then enqueue; a Redis outage after the commit loses nothing
because the sweep enqueues stored codes. A bad callback changes nothing and enqueues nothing.
A code lives minutes at most, so transient provider failures of the exchange are retried only
while it can still be valid; a refusal is final and names its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from authbroker import oauth, presets, timing
from authbroker.events import (
    AuthorizationFailed,
    AuthorizationStarted,
    Authorized,
    EventType,
    RefreshTokenMissing,
    ScopesDenied,
    make_event,
)
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.states import AUTHORIZATION_LIFETIME, Status
from services import apps as apps_service
from services import client_auth, connect_links, queue, revocation, service_connections
from services.context import Context
from services.errors import Conflict, Invalid, Unavailable
from services.instrument import token_request
from services.tokens import TokenTimes, missing_scopes, token_times
from storage import apps, authorizations, connections, outbox
from storage.apps import App
from storage.authorizations import Authorization
from storage.connections import ConnectionConflict
from storage.resources import Resources

log = get_logger("authbroker.authorizations")

# Providers keep codes valid for a few minutes (RFC 6749 §4.1.2 recommends at most 10); past
# this age a retry would only be refused.
CODE_RETRY_WINDOW = 300.0
# Seconds a stored code may wait for its job before the sweep enqueues it again.
STRANDED_AFTER = 10.0
# How often a waiter looks at the row itself, in case a notification was missed.
LOOK_EVERY = 1.0


# ------------------------------------------------------------------------------ start


@dataclass(frozen=True)
class Started:
    connection_id: str
    authorize_url: str
    expires_at: datetime
    authorization_id: uuid.UUID
    status_url: str
    reauthorization: bool = False


async def start(
    res: Resources,
    app: App,
    *,
    connection_id: str | None,
    scopes: list[str] | None,
    metadata: dict[str, Any] | None,
    settings: dict[str, str] | None = None,
) -> Started:
    """Create a connection (or prepare an existing one for re-authorization) and an
    authorization for it: the authorize URL to send the user to. `metadata` None keeps an
    existing connection's metadata, `settings` None its connection settings (new ones are
    the authorization's, and become the connection's with the grant: see `_succeeded`)."""
    async with res.pool.acquire() as conn, conn.transaction():
        started = await _start(
            conn,
            res,
            app,
            connection_id=connection_id,
            scopes=scopes,
            metadata=metadata,
            settings=settings,
        )
    _log_started(app, started)
    return started


async def start_from_link(res: Resources, token: str) -> Started:
    """Open a connect link (`services.connect_links`): a fresh authorization (new state and
    PKCE) of the link's connection, the link used up in the same transaction. A link that
    cannot be used raises `NotFound` or `Gone`; an app that cannot authorize now, `Conflict`,
    and the link stays usable."""
    async with res.pool.acquire() as conn, conn.transaction():
        link = await connect_links.use(conn, token)
        app = await apps.get_by_id(conn, link.app_id)
        assert app is not None  # links are deleted with their app
        started = await _start(
            conn,
            res,
            app,
            connection_id=link.connection_id,
            scopes=link.scopes,
            metadata=None,
            settings=link.settings,
        )
        await connect_links.mark_used(conn, link, started.authorization_id)
    _log_started(app, started, via="connect_link")
    return started


async def _start(
    conn: asyncpg.Connection,
    res: Resources,
    app: App,
    *,
    connection_id: str | None,
    scopes: list[str] | None,
    metadata: dict[str, Any] | None,
    settings: dict[str, str] | None,
) -> Started:
    """Within the caller's transaction: the connection, its authorization and the event."""
    apps_service.require_authorizable(app)
    connection_id = connection_id or connections.new_id()
    scopes = scopes if scopes is not None else app.scopes
    if settings is None:
        existing = await connections.get(conn, connection_id)
        kept = existing.settings if existing and existing.app_id == app.id else {}
        settings = {k: v for k, v in kept.items() if k in app.connection_settings}
    filled = await apps_service.for_connection(res, app, settings)
    state = oauth.new_state()
    verifier = oauth.new_code_verifier() if app.pkce else None
    authorize_url = oauth.build_authorize_url(
        filled.client(res.ring),
        redirect_uri=res.settings.redirect_url,
        scopes=scopes,
        state=state,
        code_challenge=oauth.code_challenge(verifier) if verifier else None,
    )
    try:
        created = await connections.start(
            conn,
            connection_id=connection_id,
            app_id=app.id,
            requested_scopes=scopes,
            metadata=metadata,
            settings=settings,
        )
    except ConnectionConflict as exc:
        raise Conflict("connection_exists", service_connections.taken(connection_id, exc)) from None
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
        settings=settings,
    )
    current = await connections.get(conn, connection_id)
    await outbox.append(
        conn,
        make_event(
            EventType.AUTHORIZATION_STARTED,
            app=app.name,
            connection_id=connection_id,
            status=current.status if current else Status.PENDING,
            detail="An authorization was started: the user signs in at the provider.",
            data=AuthorizationStarted(
                reauthorization=not created,
                authorization_id=str(authorization_id),
                expires_at=expires_at,
            ),
        ),
    )
    return Started(
        connection_id=connection_id,
        authorize_url=authorize_url,
        expires_at=expires_at,
        authorization_id=authorization_id,
        status_url=f"{res.settings.public_url}/oauth/status/{authorization_id}",
        reauthorization=not created,
    )


def _log_started(app: App, started: Started, **how: str) -> None:
    log.info(
        "authorization_started",
        app=app.name,
        connection_id=started.connection_id,
        reauthorization=started.reauthorization,
        authorization_id=str(started.authorization_id),
        **how,
    )


# ------------------------------------------------------------------------------ callback


async def receive(res: Resources, params: dict[str, str]) -> Authorization:
    """What the provider's redirect says (RFC 6749 §4.1.2): a code is stored (sealed) and its
    exchange enqueued; an error ends the authorization. Anything that cannot be a genuine
    callback for a live authorization is refused with `Invalid`, and changes nothing."""
    state = params.get("state")
    if not state:
        raise Invalid("invalid_request", "The provider sent no state with this sign-in.")
    has_code, has_error = "code" in params, "error" in params
    if has_code and has_error:
        raise Invalid("invalid_request", "The callback carries both a code and an error.")
    if not has_code and not has_error:
        raise Invalid("invalid_request", "The provider sent neither a code nor an error.")
    if has_code and not params["code"]:
        raise Invalid("invalid_request", "The provider sent an empty code.")
    async with res.pool.acquire() as conn, conn.transaction():
        authorization = await authorizations.by_state(conn, oauth.state_digest(state))
        if authorization is None:
            raise Invalid(
                "invalid_state", "This sign-in was not started here, or its link is damaged."
            )
        if authorization.outcome == "cancelled":
            raise Invalid("cancelled", "This connection was deleted before sign-in finished.")
        if authorization.code is not None or (
            authorization.done and authorization.outcome != "expired"
        ):
            raise Invalid("state_used", "This sign-in link was already used.")
        if authorization.expires_at <= datetime.now(UTC):
            raise Invalid("state_expired", "This sign-in took too long and its link has expired.")
        app = await apps.get_by_id(conn, authorization.app_id)
        assert app is not None  # authorizations are deleted with their app
        issuer = app.for_connection(authorization.settings).issuer
        mixed_up = oauth.issuer_mismatch(
            issuer, required=app.require_iss, received=params.get("iss")
        )
        if mixed_up:
            # RFC 9207: whatever it says, the response is another server's; its code is not used.
            await _fail(
                conn,
                res,
                authorization,
                Problem.ISSUER_MISMATCH,
                AuthorizationFailed(provider_error=params.get("error", "")[:100] or None),
                {"stage": "authorize", "error": "issuer_mismatch", "description": mixed_up},
            )
        elif has_error:
            error = params["error"][:100]
            description = params.get("error_description", "")[:300] or None
            await _fail(
                conn,
                res,
                authorization,
                oauth.callback_problem(error, description),
                AuthorizationFailed(provider_error=error, provider_description=description),
                {"stage": "authorize", "error": error, "description": description},
            )
        else:
            kept = presets.callback_params(await apps.preset_of(conn, authorization.app_id))
            await authorizations.store_code(
                conn,
                res.ring,
                authorization.id,
                params["code"],
                {key: params[key] for key in kept if key in params},
            )
    log.info(
        "callback_accepted",
        app=authorization.app,
        connection_id=authorization.connection_id,
        outcome="issuer_mismatch" if mixed_up else "error" if has_error else "code",
    )
    if has_code and not mixed_up:
        try:
            await queue.enqueue_exchange(res, authorization.id)
        except Exception as exc:  # Redis down: the code is stored; the sweep enqueues it
            log.warning(
                "exchange_enqueue_failed",
                authorization_id=str(authorization.id),
                error=type(exc).__name__,
            )
    return authorization


async def outcome(
    res: Resources, authorization_id: uuid.UUID, *, wait: float = 0.0
) -> Authorization | None:
    """The authorization, once it is done or `wait` seconds have passed: the exchange's outcome
    arrives by notification (its events name the connection), with a look at the row now and
    then in case one was missed."""
    found = await authorizations.get(res.pool, authorization_id)
    if found is None or found.done or wait <= 0:
        return found
    deadline = time.monotonic() + wait
    with res.notifications.watch(found.connection_id) as news:
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), timeout=min(left, LOOK_EVERY))
            news.clear()
            found = await authorizations.get(res.pool, authorization_id)
            if found is None or found.done:
                break
    return found


# ------------------------------------------------------------------------------ exchange


async def exchange(context: Context, authorization_id: uuid.UUID) -> str:
    """Turn a stored code into tokens, once. Raises `Unavailable` (with `retry_after`) while a
    transient failure may still be retried within the code's life."""
    res = context.resources
    authorization = await authorizations.get(res.pool, authorization_id)
    if authorization is None or authorization.done or authorization.code is None:
        return "nothing to do"
    bound = log.bind(app=authorization.app, connection_id=authorization.connection_id)
    app = await apps.get_by_id(res.pool, authorization.app_id)
    assert app is not None  # authorizations are deleted with their app
    try:
        async with token_request(app.name, "authorization_code"):
            tokens = await oauth.exchange_code(
                context.http,
                app.for_connection(authorization.settings).client(res.ring),
                code=authorization.open_code(res.ring),
                redirect_uri=authorization.redirect_uri,
                code_verifier=authorization.open_verifier(res.ring),
                timeout=res.settings.provider_timeout,
                connect_timeout=res.settings.provider_connect_timeout,
            )
    except oauth.ProviderUnavailable as exc:
        async with res.pool.acquire() as conn:
            attempt = await authorizations.count_attempt(conn, authorization.id)
        delay = max(exc.retry_after or 0.0, timing.backoff(attempt, base=1.0, cap=60.0))
        received = authorization.code_received_at or datetime.now(UTC)
        age = (datetime.now(UTC) - received).total_seconds()
        if age + delay < CODE_RETRY_WINDOW:
            bound.warning(
                "exchange_retry", error=exc.error, attempt=attempt, retry_in=round(delay, 2)
            )
            raise Unavailable(exc.error, str(exc), retry_after=delay) from None
        await _failed_exchange(res, authorization, Problem.PROVIDER_ERROR, exc)
        return "failed"
    except oauth.OAuthError as exc:
        await _failed_exchange(res, authorization, exc.problem or Problem.PROVIDER_ERROR, exc)
        return "failed"
    if tokens.warnings:
        bound.warning("token_response_warnings", warnings=list(tokens.warnings))
    if authorization.callback_data:
        tokens = replace(tokens, extra={**authorization.callback_data, **tokens.extra})
    await _succeeded(context, authorization, app, tokens)
    return "succeeded"


async def _succeeded(
    context: Context, authorization: Authorization, app: App, tokens: oauth.TokenResponse
) -> None:
    """Store the grant. With connection settings other than the connection's (a
    re-authorization that gave new ones), the connection moves to them with it: nothing of
    its previous grant is kept, and that grant is revoked at its own URLs."""
    res = context.resources
    now = datetime.now(UTC)
    requested = authorization.requested_scopes
    # A response without `scope` leaves the granted scopes unknown (None): some providers
    # (Facebook) grant less than asked and say nothing, so equal to the request is a guess.
    granted = tokens.scopes
    missing = missing_scopes(requested, granted)
    own = app.for_connection(authorization.settings)
    async with res.pool.acquire() as conn, conn.transaction():
        current = await connections.get(conn, authorization.connection_id)
        moved = current is not None and current.settings != authorization.settings
        kept = None if moved else current
        has_refresh = bool(tokens.refresh_token) or bool(kept and kept.refresh_token)
        times = token_times(app, tokens, now, has_refresh_token=has_refresh)
        problem = None
        if missing:
            problem = Problem.SCOPES_DENIED
        elif not has_refresh and times.expires_at is not None:
            problem = Problem.REFRESH_TOKEN_MISSING
        stored = await connections.store_tokens(
            conn,
            res.ring,
            authorization.connection_id,
            tokens,
            expires_at=times.expires_at,
            refresh_at=times.refresh_at,
            refresh_token_expires_at=times.refresh_token_expires_at,
            requested_scopes=list(requested),
            granted_scopes=granted,
            problem=str(problem) if problem else None,
            authorized=True,
            settings=authorization.settings,
        )
        if stored is None:
            # Deleted while the user was at the provider: the new grant is not wanted.
            await authorizations.finish(conn, authorization.id, outcome="cancelled", problem=None)
        else:
            await _authorized(conn, res, own, authorization, stored, tokens, current, times)
    if stored is None:
        log.info("authorization_cancelled", connection_id=authorization.connection_id)
        await revocation.revoke_unwanted(
            context, own, refresh_token=tokens.refresh_token, access_token=tokens.access_token
        )
        return
    if moved and current is not None and current.access_token is not None:
        log.info(
            "connection_settings_changed",
            app=app.name,
            connection_id=stored.id,
            previous=current.settings,
            settings=stored.settings,
        )
        await revocation.revoke_unwanted(
            context,
            app.for_connection(current.settings),
            refresh_token=current.open_refresh_token(res.ring),
            access_token=current.open_access_token(res.ring),
        )
    log.info(
        "connection_authorized",
        app=app.name,
        connection_id=stored.id,
        granted_scopes=granted,
        missing_scopes=missing,
        has_refresh_token=stored.refresh_token is not None,
        expires_at=times.expires_at.isoformat() if times.expires_at else None,
    )


async def _authorized(
    conn: asyncpg.Connection,
    res: Resources,
    app: App,
    authorization: Authorization,
    stored: connections.Connection,
    tokens: oauth.TokenResponse,
    current: connections.Connection | None,
    times: TokenTimes,
) -> None:
    """Within the token write's transaction: end the authorization, record where the client
    credentials worked, and write the events."""
    requested = authorization.requested_scopes
    granted = stored.granted_scopes
    missing = missing_scopes(requested, granted)
    has_refresh = stored.refresh_token is not None
    await authorizations.finish(conn, authorization.id, outcome="succeeded", problem=None)
    await client_auth.note_placement(conn, app, tokens, connection_id=stored.id)
    common: dict[str, Any] = {"app": app.name, "connection_id": stored.id, "status": stored.status}
    events = [
        make_event(
            EventType.AUTHORIZED,
            **common,
            detail="The connection is authorized.",
            data=Authorized(
                granted_scopes=granted,
                expires_at=times.expires_at,
                has_refresh_token=has_refresh,
                reauthorization=bool(current and current.authorized_at),
            ),
        )
    ]
    if missing:
        events.append(
            make_event(
                EventType.SCOPES_DENIED,
                **common,
                problem=Problem.SCOPES_DENIED,
                data=ScopesDenied(
                    requested_scopes=list(requested),
                    granted_scopes=granted or [],
                    missing=missing,
                    reconnect_url=await connect_links.for_event(conn, res, app.id, stored.id),
                ),
            )
        )
    if not has_refresh:
        events.append(
            make_event(
                EventType.REFRESH_TOKEN_MISSING,
                **common,
                problem=Problem.REFRESH_TOKEN_MISSING,
                detail=_missing_refresh_detail(app, times.expires_at is None),
                data=RefreshTokenMissing(token_expires=times.expires_at is not None),
            )
        )
    await outbox.append(conn, *events)


def _missing_refresh_detail(app: App, non_expiring: bool) -> str:
    if non_expiring:
        return (
            "The provider issued no refresh token and the access token does not expire: "
            "nothing needs refreshing. If the provider does expire tokens, enable refresh tokens "
            "in its settings."
        )
    found = presets.refresh_token_cause(
        preset=app.preset,
        authorization_url=app.authorization_url,
        token_url=app.token_url,
        authorize_params=app.authorize_params,
        scopes=app.scopes,
    )
    return Problem.REFRESH_TOKEN_MISSING.remedy if found.cause == "unknown" else found.advice


async def _failed_exchange(
    res: Resources, authorization: Authorization, problem: Problem, exc: oauth.OAuthError
) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        await _fail(
            conn,
            res,
            authorization,
            problem,
            AuthorizationFailed(provider_error=exc.error, provider_status=exc.status),
            {
                "stage": "exchange",
                "error": exc.error,
                "description": exc.description,
                "status": exc.status,
            },
        )


# ------------------------------------------------------------------------------ endings


async def _fail(
    conn: asyncpg.Connection,
    res: Resources,
    authorization: Authorization,
    problem: Problem,
    data: AuthorizationFailed,
    last_error: dict[str, Any],
) -> None:
    """The one place an authorization fails: it ends with the problem, and the connection
    fails with it unless it still holds working tokens (a failed re-authorization leaves a
    working connection working); one event says so."""
    await authorizations.finish(conn, authorization.id, outcome="failed", problem=str(problem))
    current = await connections.get(conn, authorization.connection_id)
    status = Status.FAILED if current is None or current.access_token is None else None
    await connections.set_problem(
        conn,
        authorization.connection_id,
        problem=str(problem),
        detail=problem.remedy,
        status=status,
        last_error=last_error,
    )
    await outbox.append(
        conn,
        make_event(
            EventType.AUTHORIZATION_FAILED,
            app=authorization.app,
            connection_id=authorization.connection_id,
            status=status or (current.status if current else None),
            problem=problem,
            data=replace(
                data,
                reconnect_url=await connect_links.for_event(
                    conn, res, authorization.app_id, authorization.connection_id
                ),
            ),
        ),
    )
    log.warning(
        "authorization_failed",
        app=authorization.app,
        connection_id=authorization.connection_id,
        problem=str(problem),
        provider_error=data.provider_error,
        provider_status=data.provider_status,
        stage=last_error.get("stage"),
    )


async def expire(res: Resources) -> int:
    """End authorizations nobody finished in time; a connection that was only waiting for them
    fails with `authorization_expired`."""
    async with res.pool.acquire() as conn, conn.transaction():
        rows = await authorizations.expire_unfinished(conn)
        for row in rows:
            reconnect_url = await connect_links.for_event(conn, res, row["app_id"], row["id"])
            await outbox.append(
                conn,
                make_event(
                    EventType.AUTHORIZATION_FAILED,
                    app=row["app"],
                    connection_id=row["id"],
                    status=Status.FAILED,
                    problem=Problem.AUTHORIZATION_EXPIRED,
                    data=AuthorizationFailed(reconnect_url=reconnect_url),
                ),
            )
    return len(rows)


async def enqueue_stranded(res: Resources) -> int:
    """Enqueue the exchange of stored codes whose job never ran (Redis was down at the
    callback); the job id deduplicates."""
    stranded = await authorizations.stranded_codes(
        res.pool, older_than_seconds=STRANDED_AFTER, limit=500
    )
    for authorization_id in stranded:
        await queue.enqueue_exchange(res, authorization_id)
    if stranded:
        log.info("stranded_codes_enqueued", count=len(stranded))
    return len(stranded)
