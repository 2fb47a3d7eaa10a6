"""`exchange_code`: turn a stored authorization code into tokens, once.

A code lives minutes at most, so transient provider failures are retried only while it can
still be valid; a refusal is final and names its cause. The tokens, the connection's new state,
the end of the authorization and the events are one transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq import Retry

from authbroker import oauth, presets, timing
from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from storage import apps, authorizations, connections, outbox
from storage.authorizations import Authorization
from worker.context import WorkerContext
from worker.instrument import token_request
from worker.tokens import TokenTimes, token_times

log = get_logger("authbroker.exchange")

# Providers keep codes valid for a few minutes (RFC 6749 §4.1.2 recommends at most 10); past
# this age a retry would only be refused.
CODE_RETRY_WINDOW = 300.0


async def exchange_code(ctx: dict[str, Any], authorization_id: str) -> str:
    wc = WorkerContext.of(ctx)
    res = wc.resources
    authorization = await authorizations.get(res.pool, uuid.UUID(authorization_id))
    if authorization is None or authorization.done or authorization.code is None:
        return "nothing to do"
    bound = log.bind(app=authorization.app, connection_id=authorization.connection_id)
    app = await apps.get_by_id(res.pool, authorization.app_id)
    assert app is not None  # authorizations are deleted with their app
    client = app.client(res.ring)
    try:
        async with token_request(app.name, "authorization_code"):
            tokens = await oauth.exchange_code(
                wc.http,
                client,
                code=authorization.open_code(res.ring),
                redirect_uri=authorization.redirect_uri,
                code_verifier=authorization.open_verifier(res.ring),
                timeout=res.settings.provider_timeout,
            )
    except oauth.ProviderUnavailable as exc:
        async with res.pool.acquire() as conn:
            attempt = await authorizations.count_attempt(conn, authorization.id)
        delay = max(exc.retry_after or 0.0, timing.backoff(attempt, base=1.0, cap=60.0))
        age = (
            datetime.now(UTC) - (authorization.code_received_at or datetime.now(UTC))
        ).total_seconds()
        if age + delay < CODE_RETRY_WINDOW:
            bound.warning(
                "exchange_retry", error=exc.error, attempt=attempt, retry_in=round(delay, 2)
            )
            raise Retry(defer=delay) from None
        await _fail(wc, authorization, Problem.PROVIDER_ERROR, exc, "provider unavailable")
        return "failed"
    except oauth.OAuthError as exc:
        await _fail(wc, authorization, exc.problem or Problem.PROVIDER_ERROR, exc, exc.error)
        return "failed"
    if tokens.warnings:
        bound.warning("token_response_warnings", warnings=list(tokens.warnings))
    await _succeed(wc, authorization, app, tokens)
    return "succeeded"


async def _succeed(
    wc: WorkerContext, authorization: Authorization, app: apps.App, tokens: oauth.TokenResponse
) -> None:
    res = wc.resources
    now = datetime.now(UTC)
    requested = authorization.requested_scopes
    granted = tokens.scopes if tokens.scopes is not None else list(requested)
    missing = [s for s in requested if s not in granted]
    async with res.pool.acquire() as conn, conn.transaction():
        current = await connections.get(conn, authorization.connection_id)
        has_refresh = bool(tokens.refresh_token) or bool(current and current.refresh_token)
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
        )
        if stored is None:
            # Deleted while the user was at the provider: the new grant is not wanted.
            await authorizations.finish(conn, authorization.id, outcome="cancelled", problem=None)
        else:
            await _record_success(conn, app, authorization, stored, tokens, current, times)
    if stored is None:
        log.info("authorization_cancelled", connection_id=authorization.connection_id)
        await _revoke_unwanted(wc, app, tokens)
        return
    log.info(
        "connection_authorized",
        app=app.name,
        connection_id=stored.id,
        granted_scopes=granted,
        missing_scopes=missing,
        has_refresh_token=stored.refresh_token is not None,
        expires_at=_iso(times.expires_at),
    )


async def _record_success(
    conn: asyncpg.Connection,
    app: apps.App,
    authorization: Authorization,
    stored: connections.Connection,
    tokens: oauth.TokenResponse,
    current: connections.Connection | None,
    times: TokenTimes,
) -> None:
    """Within the token write's transaction: end the authorization, remember what `auto`
    found, and write the events."""
    requested = authorization.requested_scopes
    granted = stored.granted_scopes or []
    missing = [s for s in requested if s not in granted]
    has_refresh = stored.refresh_token is not None
    await authorizations.finish(conn, authorization.id, outcome="succeeded", problem=None)
    if app.client_auth == "auto" and await apps.remember_placement(conn, app.id, tokens.placement):
        log.info("client_auth_detected", app=app.name, placement=tokens.placement)
    common = {"app": app.name, "connection_id": stored.id, "status": stored.status}
    events = [
        make_event(
            EventType.AUTHORIZED,
            **common,
            detail="The connection is authorized.",
            data={
                "granted_scopes": granted,
                "expires_at": _iso(times.expires_at),
                "has_refresh_token": has_refresh,
                "reauthorization": bool(current and current.authorized_at),
            },
        )
    ]
    if missing:
        events.append(
            make_event(
                EventType.SCOPES_DENIED,
                **common,
                problem=Problem.SCOPES_DENIED,
                data={"requested_scopes": requested, "granted_scopes": granted, "missing": missing},
            )
        )
    if not has_refresh:
        events.append(
            make_event(
                EventType.REFRESH_TOKEN_MISSING,
                **common,
                problem=Problem.REFRESH_TOKEN_MISSING,
                detail=_missing_refresh_detail(app, times.expires_at is None),
                data={"token_expires": times.expires_at is not None},
            )
        )
    await outbox.append(conn, *events)


async def _revoke_unwanted(wc: WorkerContext, app: apps.App, tokens: oauth.TokenResponse) -> None:
    """A grant obtained for a connection deleted meanwhile: end it at the provider (best
    effort; the tokens were never stored)."""
    if not app.revoke_url:
        return
    token, hint = (
        (tokens.refresh_token, "refresh_token")
        if tokens.refresh_token
        else (tokens.access_token, "access_token")
    )
    try:
        async with token_request(app.name, "revoke"):
            await oauth.revoke_token(
                wc.http,
                app.client(wc.resources.ring),
                token=token,
                token_type_hint=hint,  # type: ignore[arg-type]
                timeout=wc.resources.settings.provider_timeout,
            )
    except oauth.OAuthError as exc:
        log.warning("unwanted_grant_not_revoked", app=app.name, error=exc.error)


def _missing_refresh_detail(app: apps.App, non_expiring: bool) -> str:
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


async def _fail(
    wc: WorkerContext,
    authorization: Authorization,
    problem: Problem,
    exc: oauth.OAuthError,
    reason: str,
) -> None:
    res = wc.resources
    error = {
        "stage": "exchange",
        "error": exc.error,
        "description": exc.description,
        "status": exc.status,
    }
    async with res.pool.acquire() as conn, conn.transaction():
        await authorizations.finish(conn, authorization.id, outcome="failed", problem=str(problem))
        current = await connections.get(conn, authorization.connection_id)
        status = "failed" if current is None or current.access_token is None else None
        await connections.set_problem(
            conn,
            authorization.connection_id,
            problem=str(problem),
            detail=problem.remedy,
            status=status,
            last_error=error,
        )
        await outbox.append(
            conn,
            make_event(
                EventType.AUTHORIZATION_FAILED,
                app=authorization.app,
                connection_id=authorization.connection_id,
                status=status or (current.status if current else None),
                problem=problem,
                data={"provider_error": exc.error, "provider_status": exc.status},
            ),
        )
    log.warning(
        "authorization_failed",
        app=authorization.app,
        connection_id=authorization.connection_id,
        problem=str(problem),
        provider_error=exc.error,
        provider_status=exc.status,
        reason=reason,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
