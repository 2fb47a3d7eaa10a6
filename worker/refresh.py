"""Refreshing tokens before they expire, one refresh of a connection at a time, anywhere.

The lease is the single-flight: a conditional UPDATE only one worker wins. The provider's answer
is written in one statement the moment it arrives, because a rotated refresh token exists only
in that answer. Transient failures back off (full jitter, `Retry-After` honoured) and are kept in
Postgres as the next `refresh_at`; only the provider refusing the grant marks a connection dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from authbroker import oauth, timing
from authbroker.config import Settings
from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from authbroker.metrics import REFRESH_LAG_SECONDS
from authbroker.problems import Problem
from storage import apps, connections, outbox
from storage.apps import App
from storage.connections import Connection
from storage.jobs import enqueue_refresh
from storage.sealing import SealError
from worker.context import WorkerContext
from worker.instrument import token_request
from worker.tokens import TokenTimes, token_times

log = get_logger("authbroker.refresh")
T = TypeVar("T")

SCHEDULER_BATCH = 500
BACKOFF_BASE = 5.0
BACKOFF_CAP = 900.0
# Problems that say the app's settings are wrong, not the connection: pause the app. Only
# when the provider names the client credentials: a bare or unknown 401 about one grant must
# not pause every connection of the app.
APP_PROBLEMS = frozenset({Problem.INVALID_SETTINGS, Problem.CLIENT_AUTH_METHOD})
CLIENT_CREDENTIAL_ERRORS = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",
        "invalid_client_id",
        "bad_client_secret",
    }
)
# Problems a refresh cannot cure: it never adds scopes.
SCOPE_PROBLEMS = frozenset({Problem.SCOPES_DENIED, Problem.INSUFFICIENT_SCOPE})
# The longest wait a provider's Retry-After may impose before the next attempt.
RETRY_AFTER_CAP = 3600.0
# Problems that say the grant itself is gone. (invalid_scope on a refresh, which sends no
# scope, is a registration problem: named on the connection and retried, not fatal.)
DEAD_GRANT = frozenset({Problem.REFRESH_TOKEN_INVALIDATED})


def lease_seconds(settings: Settings) -> float:
    """Long enough for a few token requests (auto placement and previous secrets may take
    several), short enough that a dead worker's lease lapses soon."""
    return 4 * settings.provider_timeout + 30


async def schedule_refreshes(ctx: dict[str, Any]) -> int:
    """Enqueue due connections, oldest first, a bounded batch per pass; job ids deduplicate."""
    wc = WorkerContext.of(ctx)
    due = await connections.due(wc.resources.pool, SCHEDULER_BATCH)
    for connection_id in due:
        await enqueue_refresh(wc.resources, connection_id)
    if due:
        log.debug("refreshes_scheduled", count=len(due))
    return len(due)


async def refresh_connection(ctx: dict[str, Any], connection_id: str, force: bool = False) -> str:
    """Refresh one connection if it is due (or `force`), under its lease."""
    wc = WorkerContext.of(ctx)
    res = wc.resources
    holder = f"{wc.worker_id}:{ctx.get('job_id', '')}"
    current = await connections.take_lease(
        res.pool, connection_id, holder, lease_seconds(wc.resources.settings)
    )
    if current is None:
        return "busy or not active"
    now = datetime.now(UTC)
    if not force and (current.refresh_at is None or current.refresh_at > now):
        await connections.release_lease(res.pool, connection_id, holder)
        return "not due"
    app = await apps.get_by_id(res.pool, current.app_id)
    assert app is not None
    if app.paused_at is not None:
        await connections.postpone(res.pool, connection_id, holder, None)
        return "app paused"
    if current.refresh_token is None:
        return await _without_refresh_token(wc, current, holder, now)
    return await _refresh(wc, app, current, holder)


async def _refresh(wc: WorkerContext, app: App, current: Connection, holder: str) -> str:
    res = wc.resources
    bound = log.bind(app=app.name, connection_id=current.id)
    started = datetime.now(UTC)
    lag = (started - current.refresh_at).total_seconds() if current.refresh_at else None
    if lag is not None:
        REFRESH_LAG_SECONDS.observe(max(lag, 0.0))
    try:
        client, refresh_token = app.client(res.ring), current.open_refresh_token(res.ring) or ""
    except SealError as exc:
        # A key is missing from the ring: an operator's mistake, not the provider's verdict.
        bound.error("refresh_token_unreadable", error=str(exc))
        retry = datetime.now(UTC) + timedelta(minutes=10)
        await connections.postpone(res.pool, current.id, holder, retry)
        return "unreadable"
    try:
        # Never act on a lapsed lease: give up before another worker may take over.
        async with (
            asyncio.timeout(lease_seconds(wc.resources.settings) - 15),
            token_request(app.name, "refresh_token"),
        ):
            tokens = await oauth.refresh_token(
                wc.http,
                client,
                refresh_token=refresh_token,
                timeout=res.settings.provider_timeout,
            )
    except TimeoutError:
        exc = oauth.ProviderUnavailable("timeout", "the refresh outlasted its lease", status=None)
        return await _failed(wc, app, current, holder, exc)
    except oauth.OAuthError as exc:
        return await _failed(wc, app, current, holder, exc)
    if tokens.warnings:
        bound.warning("token_response_warnings", warnings=list(tokens.warnings))
    issued_at = datetime.now(UTC)
    times = token_times(app, tokens, issued_at, has_refresh_token=True)
    stored = await _write_with_retry(
        res.pool, lambda conn: _store_refreshed(conn, wc, app, current, holder, tokens, times)
    )
    if stored is None:
        bound.error("refresh_lost_lease", detail="another writer changed the connection first")
        return "lost lease"
    bound.info(
        "connection_refreshed",
        rotated=bool(tokens.refresh_token),
        expires_at=times.expires_at.isoformat() if times.expires_at else None,
        refresh_lag_s=round(lag, 3) if lag is not None else None,
    )
    return "refreshed"


async def _store_refreshed(
    conn: asyncpg.Connection,
    wc: WorkerContext,
    app: App,
    current: Connection,
    holder: str,
    tokens: oauth.TokenResponse,
    times: TokenTimes,
) -> Connection | None:
    async with conn.transaction():
        granted = tokens.scopes if tokens.scopes is not None else current.granted_scopes
        stored = await connections.store_tokens(
            conn,
            wc.resources.ring,
            current.id,
            tokens,
            expires_at=times.expires_at,
            refresh_at=times.refresh_at,
            refresh_token_expires_at=times.refresh_token_expires_at,
            requested_scopes=None,
            granted_scopes=granted or [],
            # A refresh clears transient trouble; missing scopes stay missing.
            problem=current.problem if current.problem in SCOPE_PROBLEMS else None,
            authorized=False,
            lease_holder=holder,
            expected_version=current.version,
        )
        if stored is None:
            return None
        await outbox.append(
            conn,
            make_event(
                EventType.REFRESHED,
                app=app.name,
                connection_id=current.id,
                status="active",
                detail="The access token was refreshed.",
                data={
                    "expires_at": times.expires_at.isoformat() if times.expires_at else None,
                    "refresh_token_rotated": bool(tokens.refresh_token),
                },
            ),
        )
        return stored


async def _write_with_retry(
    pool: asyncpg.Pool, write: Callable[[asyncpg.Connection], Awaitable[T]], attempts: int = 10
) -> T:
    """The provider has answered; if Postgres is briefly away (a restart), keep trying for a
    while rather than drop tokens that may be the only working ones."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            async with pool.acquire() as conn:
                return await write(conn)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            if attempt == attempts:
                raise
            log.warning("token_write_retry", error=type(exc).__name__, attempt=attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


async def _failed(
    wc: WorkerContext, app: App, current: Connection, holder: str, exc: oauth.OAuthError
) -> str:
    res = wc.resources
    problem = exc.problem or Problem.PROVIDER_ERROR
    error = {
        "stage": "refresh",
        "error": exc.error,
        "description": exc.description,
        "status": exc.status,
    }
    bound = log.bind(app=app.name, connection_id=current.id, provider_error=exc.error)
    app_settings_refused = problem in APP_PROBLEMS and (
        problem == Problem.CLIENT_AUTH_METHOD or exc.error in CLIENT_CREDENTIAL_ERRORS
    )
    if isinstance(exc, oauth.ProviderRejected) and app_settings_refused:
        async with res.pool.acquire() as conn, conn.transaction():
            await connections.postpone(conn, current.id, holder, None)
            if await apps.pause(conn, app.id, str(problem)):
                await connections.hold_app(conn, app.id)
                await outbox.append(
                    conn,
                    make_event(
                        EventType.APP_SETTINGS_INVALID,
                        app=app.name,
                        connection_id=current.id,
                        problem=problem,
                        data={"provider_error": exc.error, "provider_status": exc.status},
                    ),
                )
                bound.error("app_paused", problem=str(problem))
        return "app paused"
    if isinstance(exc, oauth.ProviderRejected) and problem in DEAD_GRANT:
        problem = Problem.REFRESH_TOKEN_INVALIDATED
        async with res.pool.acquire() as conn, conn.transaction():
            ended = await connections.end_grant(
                conn,
                current.id,
                holder,
                current.version,
                problem=str(problem),
                detail=problem.remedy,
                last_error=error,
            )
            if ended:
                await outbox.append(
                    conn,
                    make_event(
                        EventType.INVALIDATED,
                        app=app.name,
                        connection_id=current.id,
                        status="failed",
                        problem=problem,
                        data={"provider_error": exc.error},
                    ),
                )
        if not ended:
            bound.info("refusal_of_replaced_grant_ignored")
            return "superseded"
        bound.warning("connection_invalidated", problem=str(problem))
        return "invalidated"
    # Anything else is transient: never mark a connection dead for it. A failure that is not
    # an outage (a malformed answer, an unexpected refusal) is still named on the connection.
    attempt = current.failed_attempts + 1
    retry_after = min(exc.retry_after or 0.0, RETRY_AFTER_CAP)
    delay = max(retry_after, timing.backoff(attempt, base=BACKOFF_BASE, cap=BACKOFF_CAP), 1.0)
    next_attempt = datetime.now(UTC) + timedelta(seconds=delay)
    named = None if isinstance(exc, oauth.ProviderUnavailable) else str(problem)
    async with res.pool.acquire() as conn, conn.transaction():
        attempts = await connections.record_transient_failure(
            conn,
            current.id,
            holder,
            current.version,
            next_attempt_at=next_attempt,
            last_error=error,
            problem=named,
        )
        if attempts is not None:
            await outbox.append(
                conn,
                make_event(
                    EventType.REFRESH_FAILED,
                    app=app.name,
                    connection_id=current.id,
                    status="active",
                    problem=Problem(named) if named else None,
                    detail="The provider could not refresh the token now; authbroker retries.",
                    data={
                        "attempt": attempts,
                        "next_attempt_at": next_attempt.isoformat(),
                        "provider_error": exc.error,
                        "provider_status": exc.status,
                    },
                ),
            )
    if attempts is None:
        bound.info("failure_of_replaced_grant_ignored")
        return "superseded"
    bound.warning("refresh_retry", attempt=attempts, retry_in=round(delay, 2))
    return "retrying"


async def _without_refresh_token(
    wc: WorkerContext, current: Connection, holder: str, now: datetime
) -> str:
    """No refresh token: at expiry the connection is expired, and says so once."""
    res = wc.resources
    if current.expires_at is None:
        await connections.postpone(res.pool, current.id, holder, None)
        return "never expires"
    if current.expires_at > now:
        await connections.postpone(res.pool, current.id, holder, current.expires_at)
        return "not expired yet"
    problem = Problem.TOKEN_EXPIRED
    async with res.pool.acquire() as conn, conn.transaction():
        expired = await connections.mark_expired(
            conn, current.id, holder, current.version, detail=problem.remedy
        )
        if expired:
            await outbox.append(
                conn,
                make_event(
                    EventType.EXPIRED,
                    app=current.app,
                    connection_id=current.id,
                    status="expired",
                    problem=problem,
                    detail="The access token expired and there is no refresh token: "
                    "authorize the connection again.",
                ),
            )
    if not expired:
        return "superseded"
    log.info("connection_expired", app=current.app, connection_id=current.id)
    return "expired"
