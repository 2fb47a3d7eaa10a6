"""What runtimes ask of a connection: its credentials (refreshed first when about to expire), a
refresh now, and a report of what the web service answered them (RFC 6750 §3).

Waiting for a refresh: the connection is made due now and the workers woken (they claim it like
any due one, joining a refresh already in flight); the outcome arrives by notification. Within a
process, concurrent requests for the same connection share one wait, so fifty requests cost one
refresh and one wait, not fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import aiohttp

from authbroker import netguard, oauth
from authbroker.events import EventType, InsufficientScope, Invalidated, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.states import UNCONFIRMED_401_WINDOW, Status
from services import revoked_tokens
from services.errors import Conflict, NotFound, Unavailable
from storage import apps, connections, leases, outbox
from storage.connections import Connection
from storage.resources import Resources

log = get_logger("authbroker.connections")

WAIT_SECONDS = 10.0
# How often a waiter looks at the row itself, in case a notification was missed.
LOOK_EVERY = 1.0
# Refresh on demand when the token expires within this many seconds, or within half its
# lifetime if that is shorter.
ON_DEMAND_WINDOW = 60.0

_waiters: dict[str, asyncio.Future[Connection | None]] = {}


async def get(res: Resources, connection_id: str) -> Connection:
    found = await connections.get(res.pool, connection_id)
    if found is None:
        raise NotFound("connection_not_found", f"no connection with id {connection_id!r}")
    return found


# ------------------------------------------------------------------------------ credentials


async def credentials(res: Resources, found: Connection) -> Connection:
    """The connection with a token a runtime can use now: refreshed first when it is about to
    expire (waiting at most WAIT_SECONDS). Otherwise says why not: `Conflict` when waiting will
    not help, `Unavailable` (with when to retry) when it may."""
    if found.status != Status.ACTIVE or found.access_token is None:
        unusable(found)
    now = datetime.now(UTC)
    backing_off = found.next_attempt_at is not None and found.next_attempt_at > now
    refreshable = (
        found.renewable and found.app_paused is None and found.provider_unavailable_until is None
    )
    if expiring(found, now) and refreshable and not backing_off:
        found = await refresh_and_wait(res, found) or found
    now = datetime.now(UTC)
    if found.status != Status.ACTIVE or found.access_token is None:
        unusable(found)
    if found.expires_at is not None and found.expires_at <= now:
        if not found.renewable:
            expired_for_good(found)
        unusable(found)
    return found


def expired_for_good(found: Connection) -> NoReturn:
    """The access token expired and there is no refresh token to get another."""
    raise Conflict(
        "token_expired",
        "the access token expired and there is no refresh token",
        status=found.status,
        problem=str(Problem.TOKEN_EXPIRED),
        detail="Authorize the connection again.",
    )


def expiring(connection: Connection, now: datetime, window: float = ON_DEMAND_WINDOW) -> bool:
    if connection.expires_at is None:
        return False
    issued = connection.last_refresh_at or connection.authorized_at or connection.created_at
    lifetime = (connection.expires_at - issued).total_seconds()
    threshold = min(window, max(lifetime, 0) / 2)
    return (connection.expires_at - now).total_seconds() <= threshold


def unusable(found: Connection) -> NoReturn:
    """Why there is no usable token: `Conflict` when it will not come back by waiting,
    `Unavailable` while it may (with when to try again)."""
    if found.status != Status.ACTIVE:
        raise Conflict(
            "connection_not_active",
            f"connection is {found.status}"
            + (f": {found.problem}" if found.problem else "")
            + (" (authorization not completed yet)" if found.status == Status.PENDING else ""),
            status=found.status,
            problem=found.problem,
            detail=Problem.remedy_of(found.problem),
        )
    retry_at = found.next_attempt_at
    if found.app_paused:
        problem, why = found.app_paused, "the app's settings were refused by the provider"
    elif found.provider_unavailable_until is not None:
        problem, why = str(Problem.PROVIDER_UNAVAILABLE), "the provider's token endpoint is down"
        retry_at = found.provider_unavailable_until
    else:
        problem, why = str(Problem.TOKEN_EXPIRED), "refresh pending"
    raise Unavailable(
        problem,
        f"no valid access token now: {why}",
        retry_after=_seconds_until(retry_at),
        problem=problem,
        detail=Problem.remedy_of(problem),
        next_attempt_at=retry_at,
    )


def _seconds_until(moment: datetime | None, default: float = 5.0) -> float:
    if moment is None:
        return default
    return max(1.0, (moment - datetime.now(UTC)).total_seconds())


# ------------------------------------------------------------------------------ refresh now


def require_refreshable(found: Connection) -> None:
    """Stop with the reason when no refresh can run: not active, no refresh token (nor the
    client credentials grant), its app paused because the provider refused the app's settings,
    or its token endpoint down."""
    if found.status != Status.ACTIVE:
        unusable(found)
    if not found.renewable:
        raise Conflict(
            "refresh_token_missing",
            "this connection has no refresh token: authorize it again",
            problem=str(Problem.REFRESH_TOKEN_MISSING),
            detail=Problem.REFRESH_TOKEN_MISSING.remedy,
        )
    if found.app_paused is not None or found.provider_unavailable_until is not None:
        unusable(found)


@dataclass(frozen=True)
class Refreshed:
    """What a refresh asked for now did: `refreshed`, `failed` (the grant is gone) or
    `retrying` (a transient failure; it goes on later)."""

    outcome: str
    connection: Connection


async def refresh_now(res: Resources, found: Connection) -> Refreshed:
    require_refreshable(found)
    after = await refresh_and_wait(res, found)
    if after is None:
        raise Unavailable(
            "refresh_pending",
            f"the refresh did not finish within {WAIT_SECONDS:g} seconds; it goes on in the "
            "background",
            retry_after=5,
        )
    return Refreshed(_outcome(found, after), after)


def _outcome(before: Connection, after: Connection) -> str:
    if after.status != Status.ACTIVE:
        return "failed"
    return "refreshed" if after.version > before.version else "retrying"


async def refresh_and_wait(
    res: Resources,
    connection: Connection,
    *,
    timeout: float = WAIT_SECONDS,  # noqa: ASYNC109
) -> Connection | None:
    """The connection after a refresh finished (successfully or not), or None on timeout."""
    waiter = _waiters.get(connection.id)
    if waiter is None:
        waiter = asyncio.ensure_future(_refresh_and_wait(res, connection, timeout))
        _waiters[connection.id] = waiter
        waiter.add_done_callback(lambda _: _waiters.pop(connection.id, None))
    return await asyncio.shield(waiter)


async def _refresh_and_wait(
    res: Resources,
    connection: Connection,
    timeout: float,  # noqa: ASYNC109
) -> Connection | None:
    """Whatever changes the connection's `updated_at` ends the wait: new tokens, a failure
    recorded, the grant refused. (A lease taken leaves it alone: a refresh began, not ended.)"""
    before = connection.updated_at
    with res.notifications.watch(connection.id) as news:
        if not await leases.request_refresh(res.pool, connection.id, connection.version):
            # Refreshed (or otherwise changed) since it was read: that is the news.
            return await connections.get(res.pool, connection.id)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), timeout=min(left, LOOK_EVERY))
            news.clear()
            current = await connections.get(res.pool, connection.id)
            if current is None or current.updated_at != before:
                return current
    return None


# ------------------------------------------------------------------------------ reports


@dataclass(frozen=True)
class Reported:
    """What authbroker did about a report: `recorded` (a missing scope, `required_scopes`),
    `refreshed` / `refresh_attempted` (`connection`), `invalidated` (a token without a refresh
    token is dead: `connection`, `confirmed_by`), `counted` (a bare 401 counted as evidence:
    `reports` of `confirms_at`, counting `since`), or `none` with a `hint`."""

    action: str
    connection: Connection | None = None
    required_scopes: tuple[str, ...] = ()
    hint: str | None = None
    confirmed_by: str | None = None
    reports: int | None = None
    confirms_at: int | None = None
    since: datetime | None = None


FORBIDDEN_HINT = (
    "The web service answered 403 without a Bearer challenge: the request may have been sent "
    "without the Authorization header, or the provider restricts access (IP ranges, "
    "domains, plan). Check that the runtime sends the `authorization` value it received."
)


async def report(
    res: Resources, found: Connection, *, status: int, www_authenticate: str | None
) -> Reported:
    """A runtime tells what the web service answered (RFC 6750 §3): `invalid_token` or a bare
    401 refreshes (and invalidates the connection if the provider then refuses the grant), or,
    without a refresh token, is weighed as evidence that the token is dead (`_unrefreshable`);
    `insufficient_scope` is recorded; a 403 without a Bearer error gets a hint that no token
    may have been sent at all."""
    challenge = oauth.parse_bearer_challenge(www_authenticate)
    await connections.record_report(
        res.pool,
        found.id,
        {
            "status": status,
            "error": challenge.error if challenge else None,
            "scope": challenge.scope if challenge else None,
            "at": datetime.now(UTC).isoformat(),
        },
    )
    bound = log.bind(app=found.app, connection_id=found.id, reported_status=status)
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
                    data=InsufficientScope(
                        required_scopes=needed, granted_scopes=found.granted_scopes
                    ),
                ),
            )
        bound.info("insufficient_scope_reported", required=needed)
        return Reported("recorded", required_scopes=tuple(needed))
    token_refused = status == 401 or (challenge is not None and challenge.error == "invalid_token")
    if token_refused and found.status == Status.ACTIVE and not found.renewable:
        return await _unrefreshable(res, found, status, challenge.error if challenge else None)
    if token_refused:
        require_refreshable(found)
        after = await refresh_and_wait(res, found)
        bound.info("invalid_token_reported", outcome=after.status if after else "pending")
        action = "refreshed" if after and after.status == Status.ACTIVE else "refresh_attempted"
        return Reported(action, connection=after or found)
    bound.info("forbidden_reported", bearer_challenge=challenge is not None)
    return Reported("none", hint=FORBIDDEN_HINT)


async def _unrefreshable(
    res: Resources, found: Connection, status: int, error: str | None
) -> Reported:
    """A 401 (or `invalid_token`) for a token that cannot be refreshed: invalid_token, or a 401
    the probe URL confirms, fails the connection with `token_revoked`; a probe that accepts the
    token says so; otherwise the 401 is counted, and the app's `reports_to_invalidate`-th within
    the window confirms it (see `services.revoked_tokens`)."""
    if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
        expired_for_good(found)
    bound = log.bind(app=found.app, connection_id=found.id, reported_status=status)
    if error == "invalid_token":
        why = Invalidated(reported_status=status, reported_error=error)
        return await _invalidated(res, found, why, "invalid_token")
    app = await apps.get_by_id(res.pool, found.app_id)
    own = app.for_connection(found.settings) if app else None  # its own URLs, settings filled
    probed = await _probe(res, own.probe_url, found) if own and own.probe_url else None
    if probed == 401:
        why = Invalidated(reported_status=status, reported_error=error, probe_status=probed)
        return await _invalidated(res, found, why, "probe")
    if revoked_tokens.accepted(probed):
        bound.info("unconfirmed_401_reported", probe_status=probed)
        return Reported(
            "none",
            hint=f"The probe URL accepts this token (HTTP {probed}): the 401 was not about the "
            "token itself (another URL or account, a header lost on a redirect).",
        )
    ended = False
    async with res.pool.acquire() as conn, conn.transaction():
        counted = await connections.count_unconfirmed_401(
            conn, found.id, found.version, window_seconds=UNCONFIRMED_401_WINDOW
        )
        if counted is not None and counted.reports >= counted.confirms_at:
            why = Invalidated(reported_status=status, reported_error=error, reports=counted.reports)
            ended = await revoked_tokens.invalidate(conn, found, why)
    if counted is None:
        return _changed_meanwhile(await get(res, found.id))
    bound.info("unconfirmed_401_reported", reports=counted.reports, confirms_at=counted.confirms_at)
    if counted.reports >= counted.confirms_at:
        return await _answer_invalidated(res, found, ended, "reports")
    return Reported(
        "counted", reports=counted.reports, confirms_at=counted.confirms_at, since=counted.since
    )


async def _probe(res: Resources, url: str, found: Connection) -> int | None:
    """The probe URL's answer to the token now, under the outbound rules of every provider
    request; None when it could not be reached within WAIT_SECONDS."""
    settings = res.settings
    limits = aiohttp.ClientTimeout(
        total=WAIT_SECONDS, connect=min(WAIT_SECONDS, settings.provider_connect_timeout)
    )
    async with netguard.provider_session(settings.outbound, per_host=1) as http:
        return await revoked_tokens.probe_status(
            http, url, found.open_access_token(res.ring) or "", limits=limits
        )


async def _invalidated(
    res: Resources, found: Connection, why: Invalidated, confirmed_by: str
) -> Reported:
    async with res.pool.acquire() as conn, conn.transaction():
        ended = await revoked_tokens.invalidate(conn, found, why)
    return await _answer_invalidated(res, found, ended, confirmed_by)


async def _answer_invalidated(
    res: Resources, found: Connection, ended: bool, confirmed_by: str
) -> Reported:
    after = await get(res, found.id)
    if not ended:
        return _changed_meanwhile(after)
    return Reported("invalidated", connection=after, confirmed_by=confirmed_by)


def _changed_meanwhile(after: Connection) -> Reported:
    """The report raced another change: another report or probe failed the connection first
    (its problem answers), or a new token was stored (ask for it)."""
    if after.status != Status.ACTIVE:
        unusable(after)
    return Reported(
        "none", hint="A new token was stored since this report arrived: ask for credentials again."
    )
