"""One refresh of one connection, under its lease: what the provider's answer means, and what is
written because of it.

The answer to a refresh may hold the only copy of a rotated refresh token, so it is written in
one statement the moment it arrives, and a sent request is never abandoned early: the wait for
an answer is long, and the lease outlives it (`worker.engine` renews it). When an answer is lost
anyway (a timeout, a dropped connection, a gateway's 5xx), the refresh is retried at once with
the same refresh token, inside the reuse grace most rotating providers keep; if the provider
refuses it, the connection fails with `rotation_lost`, which says what happened.

Transient failures back off per connection, but never past the access token's expiry, and are
counted per token endpoint: enough in a row make the endpoint unavailable (`storage.endpoints`),
after which one connection at a time probes it, and its first answer releases the backlog.
Only the provider refusing the grant marks a connection dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from authbroker import events, oauth, presets, timing
from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from authbroker.metrics import LOST_ANSWERS, PROBES, REFRESH_LAG_SECONDS
from authbroker.problems import Problem
from services import client_auth, connect_links, service_connections
from services.context import Context
from services.instrument import token_request
from services.tokens import TokenTimes, token_times
from storage import apps, connections, endpoints, leases, outbox
from storage.apps import App
from storage.connections import Connection
from storage.leases import Claimed
from storage.sealing import SealError

log = get_logger("authbroker.refresh")
T = TypeVar("T")

# A lease lapses this long after its holder stopped renewing it (`worker.engine` renews every
# few seconds): how soon another worker takes over from a dead one.
LEASE_SECONDS = 15.0
# Per-connection backoff: full jitter from 5 s up to 15 min, capped by the token's expiry.
BACKOFF_BASE = 5.0
BACKOFF_CAP = 900.0
# The longest wait a provider's Retry-After may impose before the next attempt.
RETRY_AFTER_CAP = 3600.0
# Problems that say the app's settings are wrong, not the connection: pause the app. Only
# when the provider names the client credentials: a bare or unknown 401 about one grant must
# not pause every connection of the app.
APP_PROBLEMS = frozenset({Problem.INVALID_SETTINGS, Problem.CLIENT_AUTH_METHOD})
# Problems a refresh cannot cure: it never adds scopes.
SCOPE_PROBLEMS = frozenset({Problem.SCOPES_DENIED, Problem.INSUFFICIENT_SCOPE})


@dataclass(frozen=True)
class Probe:
    """This refresh probes an unavailable token endpoint; `probes` counts the probes so far."""

    token_url: str
    probes: int


async def refresh_one(wc: Context, connection_id: str, *, force: bool = False) -> str:
    """Refresh one connection now if it is due (or `force`), under a lease of its own: for probes
    of a web service, for the operator's tools and tests. The refresh engine (worker/engine.py)
    refreshes due connections in batches."""
    res = wc.resources
    holder = wc.new_holder()
    current = await leases.take_lease(res.pool, connection_id, holder, LEASE_SECONDS)
    if current is None:
        return "busy or not active"
    with wc.holding(connection_id, holder):
        now = datetime.now(UTC)
        if not force and (current.refresh_at is None or current.refresh_at > now):
            await leases.release_lease(res.pool, connection_id, holder)
            return "not due"
        app = await apps.get_by_id(res.pool, current.app_id)
        assert app is not None
        if app.paused_at is not None:
            await connections.postpone(res.pool, connection_id, holder, None)
            return "app paused"
        return await refresh(wc, Claimed(current, app, None), holder)


async def refresh(wc: Context, claimed: Claimed, holder: str, *, probe: Probe | None = None) -> str:
    """Refresh a connection this holder has leased, and write what came of it."""
    current, app = claimed.connection, claimed.app
    res = wc.resources
    now = datetime.now(UTC)
    if not current.renewable:
        return await _without_refresh_token(wc, current, holder, now)
    bound = log.bind(app=app.name, connection_id=current.id)
    lag = (now - current.refresh_at).total_seconds() if current.refresh_at else None
    if lag is not None:
        REFRESH_LAG_SECONDS.observe(max(lag, 0.0))
    try:
        client, refresh_token = (
            wc.client(app, current.settings),
            current.open_refresh_token(res.ring),
        )
    except SealError as exc:
        # A key is missing from the ring: an operator's mistake, not the provider's verdict.
        bound.error("refresh_token_unreadable", error=str(exc))
        retry = datetime.now(UTC) + timedelta(minutes=10)
        await connections.postpone(res.pool, current.id, holder, retry)
        return "unreadable"

    waits = {
        "timeout": res.settings.provider_timeout,
        "connect_timeout": res.settings.provider_connect_timeout,
    }

    async def ask() -> oauth.TokenResponse:
        if current.service:
            async with token_request(app.name, "client_credentials"):
                return await oauth.client_credentials(
                    wc.http,
                    client,
                    scopes=current.requested_scopes,
                    params=current.token_params,
                    **waits,
                )
        async with token_request(app.name, "refresh_token"):
            return await oauth.refresh_token(
                wc.http, client, refresh_token=refresh_token or "", **waits
            )

    try:
        tokens = await ask()
    except oauth.ProviderUnavailable as exc:
        if not exc.answer_lost or current.service:
            # A service connection's lost answer costs nothing: the next request gets a token.
            return await _failed(wc, claimed, holder, exc, probe=probe)
        # The provider may have rotated the token and its answer is gone: ask again with the
        # same one now, while a rotating provider's reuse grace may still accept it.
        bound.warning("refresh_answer_lost", provider_error=exc.error, status=exc.status)
        try:
            tokens = await ask()
        except oauth.OAuthError as again:
            return await _failed(wc, claimed, holder, again, probe=probe, answer_lost=True)
        LOST_ANSWERS.labels("recovered").inc()
        bound.info("refresh_answer_recovered")
    except oauth.OAuthError as exc:
        return await _failed(wc, claimed, holder, exc, probe=probe)
    if tokens.warnings:
        bound.warning("token_response_warnings", warnings=list(tokens.warnings))
    issued_at = datetime.now(UTC)
    times = token_times(app, tokens, issued_at, has_refresh_token=True)
    if current.authorization_pending:
        stored = await _write_with_retry(
            lambda: service_connections.authorized(wc, app, current, holder, tokens, times)
        )
    else:
        stored = await _store(wc, app, current, holder, tokens, times)
    await client_auth.note_placement(res.pool, app, tokens, connection_id=current.id)
    if probe is not None or claimed.endpoint_failures != 0:
        await _endpoint_answered(wc, _token_url(claimed), probe)
    if not stored:
        bound.error("refresh_lost_lease", detail="another writer changed the connection first")
        return "lost lease"
    bound.debug(
        "connection_refreshed",
        rotated=bool(tokens.refresh_token),
        expires_at=times.expires_at.isoformat() if times.expires_at else None,
        refresh_lag_s=round(lag, 3) if lag is not None else None,
    )
    return "refreshed"


async def _store(
    wc: Context,
    app: App,
    current: Connection,
    holder: str,
    tokens: oauth.TokenResponse,
    times: TokenTimes,
) -> bool:
    """The tokens, the schedule and the event, written the moment the answer arrives; answers
    that arrive together are stored together (one round trip, one commit)."""
    granted = tokens.scopes if tokens.scopes is not None else current.granted_scopes
    if tokens.extra and current.extra is not None:
        # What the provider said before (instance_url, realmId) stays unless it says otherwise.
        tokens = replace(tokens, extra={**current.open_extra(wc.resources.ring), **tokens.extra})
    refreshed = connections.Refreshed(
        connection_id=current.id,
        tokens=tokens,
        expires_at=times.expires_at,
        refresh_at=times.refresh_at,
        refresh_token_expires_at=times.refresh_token_expires_at,
        granted_scopes=granted,
        # A refresh clears transient trouble; missing scopes stay missing.
        problem=current.problem if current.problem in SCOPE_PROBLEMS else None,
        lease_holder=holder,
        expected_version=current.version,
        event=make_event(
            EventType.REFRESHED,
            app=app.name,
            connection_id=current.id,
            status="active",
            detail="The access token was refreshed.",
            data=events.Refreshed(
                expires_at=times.expires_at, refresh_token_rotated=bool(tokens.refresh_token)
            ),
        ),
    )
    return await _write_with_retry(lambda: wc.refreshes.submit(refreshed))


async def _write_with_retry(write: Callable[[], Awaitable[T]], attempts: int = 10) -> T:
    """The provider has answered; if Postgres is briefly away (a restart), keep trying for a
    while rather than drop tokens that may be the only working ones."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return await write()
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            if attempt == attempts:
                raise
            log.warning("token_write_retry", error=type(exc).__name__, attempt=attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


async def _failed(
    wc: Context,
    claimed: Claimed,
    holder: str,
    exc: oauth.OAuthError,
    *,
    probe: Probe | None,
    answer_lost: bool = False,
) -> str:
    current, app = claimed.connection, claimed.app
    if not isinstance(exc, oauth.ProviderUnavailable) and (
        probe is not None or claimed.endpoint_failures != 0
    ):
        await _endpoint_answered(wc, _token_url(claimed), probe)  # a refusal is an answer too
    problem = exc.problem or Problem.PROVIDER_ERROR
    if isinstance(exc, oauth.ProviderRejected):
        if current.authorization_pending:
            return await service_connections.start_failed(wc, app, current, holder, exc)
        if problem in APP_PROBLEMS and (
            problem == Problem.CLIENT_AUTH_METHOD or exc.error in oauth.CLIENT_CREDENTIAL_ERRORS
        ):
            return await _pause_app(wc, current, app, holder, exc, problem)
        if problem == Problem.REFRESH_TOKEN_INVALIDATED:
            return await _grant_refused(wc, current, app, holder, exc, answer_lost)
    return await _retry_later(wc, claimed, holder, exc, probe=probe, answer_lost=answer_lost)


def _error(exc: oauth.OAuthError) -> dict[str, Any]:
    return {
        "stage": "refresh",
        "error": exc.error,
        "description": exc.description,
        "status": exc.status,
    }


async def _pause_app(
    wc: Context,
    current: Connection,
    app: App,
    holder: str,
    exc: oauth.OAuthError,
    problem: Problem,
) -> str:
    async with wc.resources.pool.acquire() as conn, conn.transaction():
        await connections.postpone(conn, current.id, holder, None)
        refused = list(getattr(exc, "placements_refused", ()))
        if await apps.pause(conn, app.id, str(problem), {**_error(exc), "placements": refused}):
            await connections.hold_app(conn, app.id)
            await outbox.append(
                conn,
                make_event(
                    EventType.APP_SETTINGS_INVALID,
                    app=app.name,
                    connection_id=current.id,
                    problem=problem,
                    data=events.SettingsInvalid(
                        provider_error=exc.error,
                        provider_status=exc.status,
                        provider_description=exc.description,
                        placements_refused=refused,
                    ),
                ),
                make_event(
                    EventType.APP_REFRESHES_PAUSED,
                    app=app.name,
                    problem=problem,
                    detail="The app's refreshes wait until its settings are changed.",
                    data=events.RefreshesPaused(problem=str(problem)),
                ),
            )
            log.error("app_paused", app=app.name, connection_id=current.id, problem=str(problem))
    return "app paused"


async def _grant_refused(
    wc: Context,
    current: Connection,
    app: App,
    holder: str,
    exc: oauth.OAuthError,
    answer_lost: bool,
) -> str:
    """The provider refuses the refresh token. If an answer carrying its successor was lost
    (now, or by a worker that died mid-refresh) and the provider may rotate tokens, the grant
    was lost in transit rather than revoked: say so."""
    rotation = presets.rotation(app.preset)
    lost = (answer_lost or current.answer_lost_at is not None) and rotation.may_rotate
    problem = Problem.ROTATION_LOST if lost else Problem.REFRESH_TOKEN_INVALIDATED
    detail = problem.remedy
    if lost and rotation.reuse_grace is not None:
        detail += (
            f" (This provider accepts a replaced refresh token for {rotation.reuse_grace} s.)"
            if rotation.reuse_grace
            else " (This provider accepts a refresh token only once.)"
        )
    async with wc.resources.pool.acquire() as conn, conn.transaction():
        ended = await connections.end_grant(
            conn,
            current.id,
            holder,
            current.version,
            problem=str(problem),
            detail=detail,
            last_error=_error(exc),
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
                    detail=detail,
                    data=events.Invalidated(
                        provider_error=exc.error,
                        answer_lost=lost,
                        reconnect_url=await connect_links.for_event(
                            conn, wc.resources, app.id, current.id
                        ),
                    ),
                ),
            )
    bound = log.bind(app=app.name, connection_id=current.id)
    if not ended:
        bound.info("refusal_of_replaced_grant_ignored")
        return "superseded"
    if lost:
        LOST_ANSWERS.labels("rotation_lost").inc()
    bound.warning("connection_invalidated", problem=str(problem), provider_error=exc.error)
    return "invalidated"


async def _retry_later(
    wc: Context,
    claimed: Claimed,
    holder: str,
    exc: oauth.OAuthError,
    *,
    probe: Probe | None,
    answer_lost: bool,
) -> str:
    """Anything else is transient: never mark a connection dead for it. A failure that is not an
    outage (a malformed answer, an unexpected refusal) is named on the connection, and so is an
    access token that has expired meanwhile."""
    current, app = claimed.connection, claimed.app
    res = wc.resources
    now = datetime.now(UTC)
    attempt = current.failed_attempts + 1
    left = (current.expires_at - now).total_seconds() if current.expires_at else None
    delay = timing.retry_delay(
        attempt,
        seconds_left=left,
        retry_after=exc.retry_after,
        base=BACKOFF_BASE,
        cap=BACKOFF_CAP,
        retry_after_cap=RETRY_AFTER_CAP,
    )
    next_attempt = now + timedelta(seconds=delay)
    outage = isinstance(exc, oauth.ProviderUnavailable)
    named: Problem | None = None
    if not outage:
        named = exc.problem or Problem.PROVIDER_ERROR
    elif left is not None and left <= 0:
        named = Problem.TOKEN_EXPIRED
    error = _error(exc)
    async with res.pool.acquire() as conn, conn.transaction():
        attempts = await connections.record_transient_failure(
            conn,
            current.id,
            holder,
            current.version,
            next_attempt_at=next_attempt,
            last_error=error,
            problem=str(named) if named else None,
            answer_lost=answer_lost,
        )
        news = []
        if attempts is not None:
            news.append(
                make_event(
                    EventType.REFRESH_FAILED,
                    app=app.name,
                    connection_id=current.id,
                    status=current.status,
                    problem=named,
                    detail="The provider could not refresh the token now; authbroker retries.",
                    data=events.RefreshFailed(
                        attempt=attempts,
                        next_attempt_at=next_attempt,
                        provider_error=exc.error,
                        provider_status=exc.status,
                    ),
                )
            )
        if outage:
            news += await _endpoint_failed(conn, _token_url(claimed), exc, error, probe)
        await outbox.append(conn, *news)
    bound = log.bind(app=app.name, connection_id=current.id)
    if attempts is None:
        bound.info("failure_of_replaced_grant_ignored")
        return "superseded"
    if answer_lost:
        LOST_ANSWERS.labels("pending").inc()
    bound.warning(
        "refresh_retry",
        attempt=attempts,
        retry_in=round(delay, 2),
        provider_error=exc.error,
        answer_lost=answer_lost or None,
    )
    return "retrying"


async def _endpoint_failed(
    conn: asyncpg.Connection,
    url: str,
    exc: oauth.OAuthError,
    error: dict[str, Any],
    probe: Probe | None,
) -> list[dict[str, Any]]:
    """Count an outage of the token endpoint; the events to publish if it just turned
    unavailable. A failed probe only sets when the next one goes."""
    if probe is not None:
        PROBES.labels("failed").inc()
        urgent = await endpoints.urgent(
            conn, url, within=timing.probe_interval(probe.probes, urgent=False)
        )
        wait = timing.probe_interval(probe.probes, urgent=urgent, retry_after=exc.retry_after)
        await endpoints.schedule_probe(conn, url, error, wait=wait)
        log.info("endpoint_probe_failed", endpoint=_shown(url), next_probe_in=round(wait, 1))
        return []
    failure = await endpoints.record_failure(
        conn,
        url,
        error,
        retry_after=exc.retry_after,
        first_probe_in=timing.probe_interval(1, urgent=False),
    )
    if not failure.turned_unavailable:
        return []
    log.error("endpoint_unavailable", endpoint=_shown(url), failures=failure.failures)
    data = events.ProviderUnavailable(
        token_endpoint=_shown(url),
        failures=failure.failures,
        provider_error=exc.error,
        provider_status=exc.status,
    )
    return [
        make_event(
            EventType.APP_PROVIDER_UNAVAILABLE,
            app=name,
            problem=Problem.PROVIDER_UNAVAILABLE,
            detail=(
                f"The token endpoint failed {failure.failures} times in a row: refreshes wait, "
                "and one connection at a time probes it."
            ),
            data=data,
        )
        for name in await endpoints.apps_using(conn, url)
    ]


def _token_url(claimed: Claimed) -> str:
    """The token URL whose health a refresh tells of: the connection's own, its settings filled
    (`storage.connections.TOKEN_URL` in SQL), so one tenant's outage holds back only its own."""
    return claimed.app.for_connection(claimed.connection.settings).token_url


async def _endpoint_answered(wc: Context, url: str, probe: Probe | None) -> None:
    """The token endpoint answered: forget its failures, and if it was unavailable, release the
    connections that were waiting for it at full speed."""
    async with wc.resources.pool.acquire() as conn, conn.transaction():
        since = await endpoints.record_success(conn, url)
        if since is None:
            if probe is not None:
                PROBES.labels("ok").inc()
            return
        released = await connections.release_backlog(conn, url)
        outage = (datetime.now(UTC) - since).total_seconds()
        await outbox.append(
            conn,
            *(
                make_event(
                    EventType.APP_PROVIDER_RECOVERED,
                    app=name,
                    detail="The token endpoint answers again: waiting refreshes go ahead now.",
                    data=events.ProviderRecovered(
                        token_endpoint=_shown(url), unavailable_seconds=round(outage, 1)
                    ),
                )
                for name in await endpoints.apps_using(conn, url)
            ),
        )
        await leases.wake_workers(conn)
    if probe is not None:
        PROBES.labels("ok").inc()
    log.warning(
        "endpoint_recovered",
        endpoint=_shown(url),
        unavailable_s=round(outage, 1),
        released=released,
    )


def _shown(url: str) -> str:
    """A token URL as logs and events show it: no query string (it could carry anything)."""
    return url.split("?", 1)[0]


async def _without_refresh_token(
    wc: Context, current: Connection, holder: str, now: datetime
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
                    data=events.Expired(
                        reconnect_url=await connect_links.for_event(
                            conn, res, current.app_id, current.id
                        )
                    ),
                ),
            )
    if not expired:
        return "superseded"
    log.info("connection_expired", app=current.app, connection_id=current.id)
    return "expired"
