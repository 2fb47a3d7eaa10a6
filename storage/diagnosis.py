"""What a diagnosis reads, as the typed facts of `authbroker.diagnosis`: a connection's and an
app's rows without their sealed columns (only whether a token or a secret is set), what an app's
connections met, recent events, and the health of a token endpoint."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authbroker.diagnosis import (
    AppFacts,
    AppHistory,
    ConnectionFacts,
    PausedError,
    RecentEvent,
    RecordedError,
    Report,
    TokenEndpoint,
)
from storage import endpoints
from storage.apps import App
from storage.connections import Connection

RECENT_EVENTS = 20
RECENT_REVOCATIONS = 20


def connection_facts(connection: Connection) -> ConnectionFacts:
    c = connection
    return ConnectionFacts(
        id=c.id,
        app=c.app,
        status=c.status,
        problem=c.problem,
        has_access_token=c.access_token is not None,
        has_refresh_token=c.refresh_token is not None,
        service=c.service,
        expires_at=c.expires_at,
        refresh_at=c.refresh_at,
        refresh_token_expires_at=c.refresh_token_expires_at,
        requested_scopes=tuple(c.requested_scopes or ()),
        granted_scopes=tuple(c.granted_scopes) if c.granted_scopes is not None else None,
        lease_holder=c.lease_holder,
        lease_until=c.lease_until,
        failed_attempts=c.failed_attempts,
        next_attempt_at=c.next_attempt_at,
        last_error=RecordedError.of(c.last_error),
        last_refresh_at=c.last_refresh_at,
        last_report=Report.of(c.last_report),
        authorized_at=c.authorized_at,
        answer_lost_at=c.answer_lost_at,
        unconfirmed_401s=c.unconfirmed_401s,
        unconfirmed_401s_since=c.unconfirmed_401s_since,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def app_facts(app: App) -> AppFacts:
    return AppFacts(
        name=app.name,
        client_id=app.client_id,
        authorization_url=app.authorization_url or "",
        token_url=app.token_url,
        revoke_url=app.revoke_url,
        scopes=tuple(app.scopes),
        client_auth=app.client_auth,
        client_auth_detected=app.client_auth_detected,
        client_auth_works=app.client_auth_works,
        client_auth_works_at=app.client_auth_works_at,
        authorize_params=dict(app.authorize_params),
        pkce=app.pkce,
        refresh_token_lifetime=app.refresh_token_lifetime,
        preset=app.preset,
        client_secret_set=app.client_secret is not None,
        awaiting_secret=app.awaiting_secret,
        paused_at=app.paused_at,
        paused_problem=app.paused_problem,
        paused_error=PausedError.of(app.paused_error),
        reports_to_invalidate=app.reports_to_invalidate,
        deleting=app.deleting,
        updated_at=app.updated_at,
    )


async def recent_events(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, limit: int = RECENT_EVENTS
) -> list[RecentEvent]:
    """A connection's latest events, newest first."""
    rows = await db.fetch(
        """SELECT event FROM outbox WHERE event->>'connection_id' = $1
           ORDER BY id DESC LIMIT $2""",
        connection_id,
        limit,
    )
    return [RecentEvent.of(row["event"]) for row in rows]


async def token_endpoint(db: asyncpg.Connection | asyncpg.Pool, url: str) -> TokenEndpoint | None:
    """The health of a token endpoint; None when it never failed."""
    found = await endpoints.get(db, url)
    if found is None:
        return None
    return TokenEndpoint(
        url=found.url,
        available=found.available,
        failures=found.failures,
        failures_to_trip=endpoints.FAILURES_TO_TRIP,
        last_failure_at=found.last_failure_at,
        last_error=RecordedError.of(found.last_error),
        unavailable_since=found.unavailable_since,
        next_probe_at=found.next_probe_at,
    )


async def app_history(db: asyncpg.Pool, app: App) -> AppHistory:
    """What the app's connections met: counts by status and by problem (revoked connections
    left out of the problems), lost refresh answers not yet resolved, and the app's recent
    revocations (of this app, not of an earlier one of the same name)."""
    async with db.acquire() as conn:
        by_status = await conn.fetch(
            """SELECT status, count(*) AS n,
                      count(*) FILTER (WHERE answer_lost_at IS NOT NULL) AS lost
               FROM connections WHERE app_id = $1 GROUP BY status""",
            app.id,
        )
        by_problem = await conn.fetch(
            """SELECT problem, count(*) AS n FROM connections
               WHERE app_id = $1 AND problem IS NOT NULL AND status <> 'revoked'
               GROUP BY problem""",
            app.id,
        )
        revocations = await _revocations(conn, app.name, app.created_at)
    return AppHistory(
        by_status={row["status"]: row["n"] for row in by_status},
        problems={row["problem"]: row["n"] for row in by_problem},
        answers_lost=sum(row["lost"] for row in by_status if row["status"] == "active"),
        revocations=revocations,
    )


async def _revocations(
    conn: asyncpg.Connection, app: str, since: datetime, limit: int = RECENT_REVOCATIONS
) -> list[RecentEvent]:
    """The app's latest `connection.revoked` events, newest first (index `outbox_revocations`)."""
    rows = await conn.fetch(
        """SELECT event FROM outbox
           WHERE event->>'type' = 'connection.revoked' AND event->>'app' = $1
             AND created_at >= $2
           ORDER BY id DESC LIMIT $3""",
        app,
        since,
        limit,
    )
    return [RecentEvent.of(row["event"]) for row in rows]
