"""Connections: one authorized account of an app, with its sealed tokens and its health."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from authbroker import oauth
from authbroker.states import LIVE
from storage import outbox
from storage.sealing import KeyRing, aad

COLUMNS = """c.id, c.app_id, a.name AS app, c.status, c.problem, c.problem_detail, c.access_token,
    c.refresh_token, c.token_type, c.extra, c.expires_at, c.refresh_at, c.refresh_token_expires_at,
    c.requested_scopes, c.granted_scopes, c.metadata, c.version, c.lease_holder, c.lease_until,
    c.failed_attempts, c.next_attempt_at, c.last_error, c.last_refresh_at, c.last_report,
    c.last_probe_at, c.authorized_at, c.answer_lost_at, c.unconfirmed_401s,
    c.unconfirmed_401s_since, c.grant_type, c.token_params, c.authorization_pending, c.settings,
    c.created_at, c.updated_at,
    CASE WHEN a.paused_at IS NOT NULL THEN coalesce(a.paused_problem, 'paused') END AS app_paused,
    CASE WHEN NOT e.available THEN e.next_probe_at END AS provider_unavailable_until"""
# The token URL a connection (alias `c`) of an app (alias `a`) uses: its settings filled in
# (per-connection settings; the function is in migration 0015). Endpoint health is kept per it.
TOKEN_URL = (
    "(CASE WHEN c.settings = '{}'::jsonb THEN a.token_url "
    "ELSE connection_token_url(a.token_url, c.settings) END)"
)
JOINS = f"JOIN apps a ON a.id = c.app_id LEFT JOIN token_endpoints e ON e.url = {TOKEN_URL}"
# A connection (alias `c`) that can get its next access token by itself: with a refresh token,
# or with the client credentials grant.
RENEWABLE = "(c.refresh_token IS NOT NULL OR c.grant_type = 'client_credentials')"
# A connection (no alias) the refresh engine works on: active ones, and service connections
# waiting for their first token.
REFRESHING = "(status = 'active' OR (status = 'pending' AND grant_type = 'client_credentials'))"
CLIENT_CREDENTIALS = "client_credentials"


def select_from(source: str) -> str:
    """The connection's columns, with its app's pause and its token endpoint's health, read from
    `source` (the table, or a CTE of rows just written) under the alias `c`."""
    return f"SELECT {COLUMNS} FROM {source} c {JOINS}"


class ConnectionConflict(Exception):
    """The connection id is taken: by another app's connection, or by one that gets its tokens
    with another grant (`grant_type` says which)."""

    def __init__(self, connection_id: str, grant_type: str | None = None) -> None:
        super().__init__(connection_id)
        self.grant_type = grant_type


@dataclass(frozen=True)
class Connection:
    id: str
    app_id: uuid.UUID
    app: str
    status: str
    problem: str | None
    problem_detail: str | None
    access_token: bytes | None = field(repr=False)
    refresh_token: bytes | None = field(repr=False)
    token_type: str | None
    extra: bytes | None = field(repr=False)
    expires_at: datetime | None
    refresh_at: datetime | None
    refresh_token_expires_at: datetime | None
    requested_scopes: list[str]
    granted_scopes: list[str] | None
    metadata: dict[str, Any]
    version: int
    lease_holder: str | None
    lease_until: datetime | None
    failed_attempts: int
    next_attempt_at: datetime | None
    last_error: dict[str, Any] | None
    last_refresh_at: datetime | None
    last_report: dict[str, Any] | None
    last_probe_at: datetime | None
    authorized_at: datetime | None
    answer_lost_at: datetime | None
    # Bare 401s reported within the current hour for a token that cannot be refreshed, and
    # when the first of them came (see `count_unconfirmed_401`).
    unconfirmed_401s: int
    unconfirmed_401s_since: datetime | None
    # How the connection gets its tokens: a user's authorization code, or the client credentials
    # grant (a service connection; `token_params` are its own token request parameters).
    grant_type: str
    token_params: dict[str, Any] | None
    # A start of a service connection waits for its token (see `start_service`).
    authorization_pending: bool
    # The values its app's URLs are filled with (authbroker/connection_settings.py); not secret.
    settings: dict[str, str]
    created_at: datetime
    updated_at: datetime
    # Why the connection's app is paused (its settings were refused), or None: read with the
    # connection so that no request needs the app row just to ask.
    app_paused: str | None
    # When the app's token endpoint is unavailable: the time of its next probe (else None).
    provider_unavailable_until: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Connection:
        return cls(**dict(row))

    def open_access_token(self, ring: KeyRing) -> str | None:
        if self.access_token is None:
            return None
        return ring.open(self.access_token, aad=aad("connections", self.id, "access_token"))

    def open_extra(self, ring: KeyRing) -> dict[str, Any]:
        """What the provider returned besides tokens (empty when nothing)."""
        if self.extra is None:
            return {}
        return json.loads(ring.open(self.extra, aad=aad("connections", self.id, "extra")))

    @property
    def service(self) -> bool:
        """A service connection: its tokens come from the client credentials grant."""
        return self.grant_type == CLIENT_CREDENTIALS

    @property
    def renewable(self) -> bool:
        """Whether it can get its next access token by itself (see `RENEWABLE`)."""
        return self.refresh_token is not None or self.service

    def open_refresh_token(self, ring: KeyRing) -> str | None:
        if self.refresh_token is None:
            return None
        return ring.open(self.refresh_token, aad=aad("connections", self.id, "refresh_token"))


async def get(db: asyncpg.Connection | asyncpg.Pool, connection_id: str) -> Connection | None:
    row = await db.fetchrow(f"{select_from('connections')} WHERE c.id = $1", connection_id)
    return Connection.from_row(row) if row else None


async def page(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    apps: list[str] | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[Connection]:
    """Keyset pagination by id: stable under inserts, cheap at any depth. `apps`: only these
    apps' connections (None: every app's)."""
    rows = await db.fetch(
        f"""{select_from("connections")}
            WHERE ($1::text[] IS NULL OR a.name = ANY($1::text[]))
              AND ($2::text IS NULL OR c.status = $2)
              AND ($3::text IS NULL OR c.id > $3)
            ORDER BY c.id LIMIT $4""",
        apps,
        status,
        after,
        limit,
    )
    return [Connection.from_row(r) for r in rows]


async def count_live(
    db: asyncpg.Connection | asyncpg.Pool, app_id: uuid.UUID, *, lacking: list[str] | None = None
) -> int:
    """The app's live connections; with `lacking`, only those without a value for one of
    these connection settings."""
    return await db.fetchval(
        """SELECT count(*) FROM connections
           WHERE app_id = $1 AND status = ANY($2::text[])
             AND ($3::text[] IS NULL OR NOT settings ?& $3::text[])""",
        app_id,
        list(LIVE),
        lacking,
    )


def new_id() -> str:
    """The id of a connection its creator did not name."""
    return f"conn_{uuid.uuid4().hex}"


async def start(
    conn: asyncpg.Connection,
    *,
    connection_id: str,
    app_id: uuid.UUID,
    requested_scopes: list[str],
    metadata: dict[str, Any] | None,
    settings: dict[str, str] | None = None,
) -> bool:
    """Create a pending connection, or prepare an existing one of the same app for
    re-authorization (its current tokens keep working until the new ones arrive, and so do
    the settings they were issued under; one without tokens takes `settings` now).
    Returns True when the connection is new."""
    row = await conn.fetchrow(
        """INSERT INTO connections (id, app_id, requested_scopes, metadata, settings)
           VALUES ($1, $2, $3, coalesce($4, '{}'::jsonb), $5)
           ON CONFLICT (id) DO UPDATE
              SET metadata = coalesce($4, connections.metadata), updated_at = now(),
                  settings = CASE WHEN connections.access_token IS NULL THEN $5
                                  ELSE connections.settings END
              WHERE connections.app_id = $2 AND connections.grant_type = 'authorization_code'
           RETURNING (xmax = 0) AS created""",
        connection_id,
        app_id,
        requested_scopes,
        metadata,
        settings or {},
    )
    if row is None:
        raise await _conflict(conn, connection_id, app_id)
    return bool(row["created"])


async def _conflict(
    conn: asyncpg.Connection, connection_id: str, app_id: uuid.UUID
) -> ConnectionConflict:
    """Why a start could not take the connection id: another app's, or another grant's."""
    row = await conn.fetchrow(
        "SELECT app_id, grant_type FROM connections WHERE id = $1", connection_id
    )
    same_app = row is not None and row["app_id"] == app_id
    return ConnectionConflict(connection_id, row["grant_type"] if same_app else None)


async def start_service(
    conn: asyncpg.Connection,
    *,
    connection_id: str,
    app_id: uuid.UUID,
    requested_scopes: list[str],
    token_params: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    settings: dict[str, str],
) -> Connection:
    """Create a service connection (client credentials grant) due for its first token now, or
    start a new grant for an existing one of the same app: due now with the new scopes and
    parameters, its current token working until the next arrives. The refresh engine requests
    the token; `authorization_pending` makes that answer end this start. Returns the row (its
    `version` 1 when new)."""
    row = await conn.fetchrow(
        f"""WITH started AS (
              INSERT INTO connections AS c (id, app_id, requested_scopes, metadata, grant_type,
                                            token_params, settings, refresh_at,
                                            authorization_pending)
              VALUES ($1, $2, $3, coalesce($5, '{{}}'::jsonb), 'client_credentials', $4, $6,
                      now(), true)
              ON CONFLICT (id) DO UPDATE SET
                 requested_scopes = $3, token_params = $4, settings = $6,
                 metadata = coalesce($5, c.metadata),
                 status = CASE WHEN c.status IN ('failed', 'expired') THEN 'pending'
                               ELSE c.status END,
                 refresh_at = now(), authorization_pending = true, failed_attempts = 0,
                 next_attempt_at = NULL, version = c.version + 1, updated_at = now()
              WHERE c.app_id = $2 AND c.grant_type = 'client_credentials'
                AND c.status NOT IN ('revoking', 'revoked')
              RETURNING c.*)
            {select_from("started")}""",
        connection_id,
        app_id,
        requested_scopes,
        token_params,
        metadata,
        settings,
    )
    if row is None:
        raise await _conflict(conn, connection_id, app_id)
    return Connection.from_row(row)


# In store_tokens: the grant was made under the settings the connection already has.
_SAME = "($15::jsonb IS NULL OR $15::jsonb = settings)"


async def store_tokens(
    conn: asyncpg.Connection,
    ring: KeyRing,
    connection_id: str,
    tokens: oauth.TokenResponse,
    *,
    expires_at: datetime | None,
    refresh_at: datetime | None,
    refresh_token_expires_at: datetime | None,
    requested_scopes: list[str] | None,
    granted_scopes: list[str] | None,
    problem: str | None,
    authorized: bool,
    lease_holder: str | None = None,
    expected_version: int | None = None,
    settings: dict[str, str] | None = None,
) -> Connection | None:
    """Write a token response in one statement. An absent refresh token keeps the stored one
    (RFC 6749 §6; providers that issue it once per user), and absent provider data the stored
    data, unless `settings` (an authorization's connection settings, which the connection
    takes) differ from the stored ones: the grant is then another account's, and nothing of
    the previous one is kept. The count of unconfirmed 401s restarts: they were about the token
    replaced.

    With `lease_holder`, the write happens only if the refresh is still this holder's: it holds
    the lease, or its lease lapsed but nobody has written since (`expected_version`). The
    second case matters for one-time refresh tokens: the provider has already consumed the old
    token, so these new tokens are the only ones that work and must not be thrown away.
    (Refreshes store through `store_refreshes`, many at a time.)"""
    seal = ring.seal
    access = seal(tokens.access_token, aad=aad("connections", connection_id, "access_token"))
    refresh = (
        seal(tokens.refresh_token, aad=aad("connections", connection_id, "refresh_token"))
        if tokens.refresh_token
        else None
    )
    extra = (
        seal(json.dumps(dict(tokens.extra)), aad=aad("connections", connection_id, "extra"))
        if tokens.extra
        else None
    )
    row = await conn.fetchrow(
        f"""WITH updated AS (
              UPDATE connections SET
                status = 'active', problem = $2, problem_detail = NULL, access_token = $3,
                refresh_token = CASE WHEN {_SAME} THEN coalesce($4, refresh_token) ELSE $4 END,
                token_type = $5, extra = CASE WHEN {_SAME} THEN coalesce($6, extra) ELSE $6 END,
                expires_at = $7, refresh_at = $8,
                refresh_token_expires_at = CASE WHEN $4::bytea IS NULL AND {_SAME}
                    THEN refresh_token_expires_at ELSE $9 END,
                settings = coalesce($15::jsonb, settings),
                requested_scopes = coalesce($10, requested_scopes), granted_scopes = $11,
                version = version + 1, failed_attempts = 0, next_attempt_at = NULL,
                last_error = NULL, last_refresh_at = CASE WHEN $12 THEN last_refresh_at ELSE now() END,
                authorized_at = CASE WHEN $12 THEN now() ELSE authorized_at END,
                authorization_pending = false,
                answer_lost_at = NULL, lease_holder = NULL, lease_until = NULL, updated_at = now(),
                unconfirmed_401s = 0, unconfirmed_401s_since = NULL
              WHERE id = $1 AND status NOT IN ('revoking', 'revoked')
                AND ($13::text IS NULL OR lease_holder = $13
                                  OR (version = $14 AND (lease_holder IS NULL OR lease_until < now())))
              RETURNING *)
            {select_from("updated")}""",
        connection_id,
        problem,
        access,
        refresh,
        tokens.token_type,
        extra,
        expires_at,
        refresh_at,
        refresh_token_expires_at,
        requested_scopes,
        granted_scopes,
        authorized,
        lease_holder,
        expected_version,
        settings,
    )
    return Connection.from_row(row) if row else None


@dataclass(frozen=True)
class Refreshed:
    """One refresh's answer, ready to store: see `store_refreshes`."""

    connection_id: str
    tokens: oauth.TokenResponse = field(repr=False)
    expires_at: datetime | None
    refresh_at: datetime | None
    refresh_token_expires_at: datetime | None
    granted_scopes: list[str] | None  # None: the provider did not say
    problem: str | None
    lease_holder: str
    expected_version: int
    event: dict[str, Any]


async def store_refreshes(
    db: asyncpg.Connection | asyncpg.Pool, ring: KeyRing, refreshed: Sequence[Refreshed]
) -> set[str]:
    """Write the answers of many refreshes, their events and notifications in one statement
    (one round trip, one commit), each under the rules of `store_tokens` with a lease holder:
    only if the refresh is still its holder's. Returns the ids written."""
    columns: list[list[Any]] = [[] for _ in range(11)]
    for r in refreshed:
        cid, tokens = r.connection_id, r.tokens
        values = (
            cid,
            r.problem,
            ring.seal(tokens.access_token, aad=aad("connections", cid, "access_token")),
            ring.seal(tokens.refresh_token, aad=aad("connections", cid, "refresh_token"))
            if tokens.refresh_token
            else None,
            tokens.token_type,
            ring.seal(json.dumps(dict(tokens.extra)), aad=aad("connections", cid, "extra"))
            if tokens.extra
            else None,
            r.expires_at,
            r.refresh_at,
            r.refresh_token_expires_at,
            None if r.granted_scopes is None else " ".join(r.granted_scopes),
            r.lease_holder,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await db.fetch(
        """WITH i AS (
              SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[],
                                   $6::bytea[], $7::timestamptz[], $8::timestamptz[],
                                   $9::timestamptz[], $10::text[], $11::text[], $12::bigint[],
                                   $13::jsonb[])
                  WITH ORDINALITY
                  AS i(id, problem, access, refresh, token_type, extra, expires_at, refresh_at,
                       refresh_expires_at, granted, holder, version, event, n)),
            updated AS (
              UPDATE connections c SET
                status = 'active', problem = i.problem, problem_detail = NULL,
                access_token = i.access, refresh_token = coalesce(i.refresh, c.refresh_token),
                token_type = i.token_type, extra = coalesce(i.extra, c.extra),
                expires_at = i.expires_at,
                -- A start that arrived meanwhile wants its own token at once.
                refresh_at = CASE WHEN c.authorization_pending THEN now() ELSE i.refresh_at END,
                refresh_token_expires_at = CASE WHEN i.refresh IS NULL
                    THEN c.refresh_token_expires_at ELSE i.refresh_expires_at END,
                granted_scopes = string_to_array(i.granted, ' '),
                version = c.version + 1, failed_attempts = 0, next_attempt_at = NULL,
                last_error = NULL, last_refresh_at = now(), answer_lost_at = NULL,
                lease_holder = NULL, lease_until = NULL, updated_at = now()
              FROM i
              WHERE c.id = i.id AND c.status NOT IN ('revoking', 'revoked')
                AND (c.lease_holder = i.holder
                     OR (c.version = i.version
                         AND (c.lease_holder IS NULL OR c.lease_until < now())))
              RETURNING c.id),
            logged AS (
              INSERT INTO outbox (event)
              SELECT i.event FROM i JOIN updated u ON u.id = i.id ORDER BY i.n)
           SELECT u.id, pg_notify($14, u.id) FROM updated u""",
        *columns,
        [r.expected_version for r in refreshed],
        [r.event for r in refreshed],
        outbox.NOTIFY_CHANNEL,
    )
    return {row["id"] for row in rows}


async def set_problem(
    conn: asyncpg.Connection,
    connection_id: str,
    *,
    problem: str,
    detail: str | None = None,
    status: str | None = None,
    last_error: dict[str, Any] | None = None,
) -> None:
    """Record a problem; with `status`, also move the connection to it (e.g. `failed`)."""
    await conn.execute(
        """UPDATE connections SET problem = $2, problem_detail = $3,
               status = coalesce($4, status), last_error = coalesce($5, last_error),
               refresh_at = CASE WHEN $4 IN ('failed', 'expired', 'revoked') THEN NULL
                                 ELSE refresh_at END,
               lease_holder = CASE WHEN $4 IS NULL THEN lease_holder END,
               lease_until = CASE WHEN $4 IS NULL THEN lease_until END,
               updated_at = now()
           WHERE id = $1 AND status NOT IN ('revoking', 'revoked')""",
        connection_id,
        problem,
        detail,
        status,
        last_error,
    )


async def begin_revoke(conn: asyncpg.Connection, connection_id: str) -> bool:
    """Mark a connection for revocation and cancel its open authorizations (a user finishing
    consent later must not bring it back); false if it is already revoked or being revoked."""
    result = await conn.execute(
        """UPDATE connections SET status = 'revoking', refresh_at = NULL, updated_at = now()
           WHERE id = $1 AND status NOT IN ('revoking', 'revoked')""",
        connection_id,
    )
    await conn.execute(
        """UPDATE authorizations SET done = true, done_at = now(), outcome = 'cancelled',
               code = NULL, code_verifier = NULL
           WHERE connection_id = $1 AND NOT done""",
        connection_id,
    )
    return result.endswith(" 1")


async def begin_revoke_app(conn: asyncpg.Connection, app_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        """UPDATE connections SET status = 'revoking', refresh_at = NULL, updated_at = now()
           WHERE app_id = $1 AND status = ANY($2::text[]) RETURNING id""",
        app_id,
        list(LIVE),
    )
    await conn.execute(
        """UPDATE authorizations SET done = true, done_at = now(), outcome = 'cancelled',
               code = NULL, code_verifier = NULL
           WHERE app_id = $1 AND NOT done""",
        app_id,
    )
    return [r["id"] for r in rows]


async def stranded_revocations(
    db: asyncpg.Connection | asyncpg.Pool, *, older_than_seconds: float, limit: int
) -> list[str]:
    rows = await db.fetch(
        """SELECT id FROM connections
           WHERE status = 'revoking' AND updated_at < now() - make_interval(secs => $1)
           ORDER BY updated_at LIMIT $2""",
        float(older_than_seconds),
        limit,
    )
    return [r["id"] for r in rows]


async def wipe(conn: asyncpg.Connection, connection_id: str) -> None:
    """Forget every secret of a connection; what remains is its history."""
    await conn.execute(
        """UPDATE connections SET status = 'revoked', access_token = NULL, refresh_token = NULL,
               extra = NULL, expires_at = NULL, refresh_at = NULL, refresh_token_expires_at = NULL,
               problem = NULL, problem_detail = NULL, lease_holder = NULL, lease_until = NULL,
               version = version + 1, updated_at = now()
           WHERE id = $1""",
        connection_id,
    )


# A refresh's result may be written by its lease holder, or after its lease lapsed if nobody
# else has written since (the version is unchanged): never over a newer grant.
STILL_OURS = (
    """(lease_holder = $2 OR (version = $3 AND (lease_holder IS NULL OR lease_until < now())))"""
)


async def record_transient_failure(
    conn: asyncpg.Connection,
    connection_id: str,
    holder: str,
    version: int,
    *,
    next_attempt_at: datetime,
    last_error: dict[str, Any],
    problem: str | None = None,
    answer_lost: bool = False,
) -> int | None:
    """Count a failed attempt and schedule the next; the connection keeps its status. `problem`
    names what runtimes should know meanwhile (a malformed answer, a token that expired); a
    problem named earlier stays until a refresh succeeds. `answer_lost` remembers that the provider may
    have rotated the refresh token. Returns the attempt count, or None if the refresh was no
    longer ours to record."""
    return await conn.fetchval(
        f"""UPDATE connections SET failed_attempts = failed_attempts + 1,
               next_attempt_at = $4, refresh_at = $4, last_error = $5,
               problem = CASE WHEN problem IN ('scopes_denied', 'insufficient_scope')
                              THEN problem ELSE coalesce($6, problem) END,
               problem_detail = NULL,
               answer_lost_at = CASE WHEN $7 THEN coalesce(answer_lost_at, now())
                                     ELSE answer_lost_at END,
               lease_holder = NULL, lease_until = NULL, updated_at = now()
           WHERE id = $1 AND {REFRESHING} AND {STILL_OURS}
           RETURNING failed_attempts""",
        connection_id,
        holder,
        version,
        next_attempt_at,
        last_error,
        problem,
        answer_lost,
    )


async def mark_expired(
    conn: asyncpg.Connection, connection_id: str, holder: str, version: int, *, detail: str
) -> bool:
    """Expire a connection that has no refresh token, unless a new grant arrived meanwhile."""
    result = await conn.execute(
        f"""UPDATE connections SET status = 'expired', problem = 'token_expired',
               problem_detail = $4, refresh_at = NULL, lease_holder = NULL, lease_until = NULL,
               updated_at = now()
           WHERE id = $1 AND status = 'active' AND {STILL_OURS}""",
        connection_id,
        holder,
        version,
        detail,
    )
    return result.endswith(" 1")


async def end_grant(
    conn: asyncpg.Connection,
    connection_id: str,
    holder: str,
    version: int,
    *,
    problem: str,
    detail: str,
    last_error: dict[str, Any],
) -> bool:
    """Mark a connection failed because the provider refused the grant this refresh used; a
    grant stored since (a re-authorization) is left alone. The dead refresh token is dropped,
    so a re-authorization without a new one says `refresh_token_missing` instead of keeping
    a token that cannot work."""
    result = await conn.execute(
        f"""UPDATE connections SET status = 'failed', problem = $4, problem_detail = $5,
               last_error = $6, refresh_at = NULL, lease_holder = NULL, lease_until = NULL,
               refresh_token = NULL, refresh_token_expires_at = NULL, updated_at = now()
           WHERE id = $1 AND status = 'active' AND {STILL_OURS}""",
        connection_id,
        holder,
        version,
        problem,
        detail,
        last_error,
    )
    return result.endswith(" 1")


_WORKING_TOKEN = "(access_token IS NOT NULL AND (expires_at IS NULL OR expires_at > now()))"


async def fail_start(
    conn: asyncpg.Connection,
    connection_id: str,
    holder: str,
    version: int,
    *,
    problem: str,
    detail: str,
    last_error: dict[str, Any],
) -> str | None:
    """End a service connection's start that the provider refused: `failed` unless it holds a
    token that still works, which is kept, and renewed (with the refused settings, so the
    problem stays named until they are changed) only when it expires. Returns the status, or
    None when the start is no longer this holder's."""
    return await conn.fetchval(
        f"""UPDATE connections SET
               status = CASE WHEN {_WORKING_TOKEN} THEN status ELSE 'failed' END,
               refresh_at = CASE WHEN {_WORKING_TOKEN} THEN expires_at END,
               problem = $4, problem_detail = $5, last_error = $6,
               authorization_pending = false, lease_holder = NULL, lease_until = NULL,
               version = version + 1, updated_at = now()
           WHERE id = $1 AND status IN ('active', 'pending') AND {STILL_OURS}
           RETURNING status""",
        connection_id,
        holder,
        version,
        problem,
        detail,
        last_error,
    )


async def mark_tokens_expired(db: asyncpg.Connection | asyncpg.Pool) -> int:
    """Name the problem of active connections whose access token expired while no refresh could
    run (the provider is down, a worker died): a connection never says it is fine while its
    token is dead. The partial due index serves it: an expired token is always due."""
    result = await db.execute(
        """UPDATE connections SET problem = 'token_expired', problem_detail = NULL,
               updated_at = now()
           WHERE status = 'active' AND refresh_at IS NOT NULL AND refresh_at <= now()
             AND expires_at <= now() AND (refresh_token IS NOT NULL
                                           OR grant_type = 'client_credentials')
             AND problem IS NULL"""
    )
    return int(result.split()[-1])


async def release_backlog(conn: asyncpg.Connection, token_url: str) -> int:
    """Make due at once the connections of a recovered token endpoint that were backing off, so
    the backlog clears at full speed instead of over each one's own backoff; one whose token has
    expired goes by its expiry, ahead of those still valid (claims take the oldest first)."""
    result = await conn.execute(
        f"""UPDATE connections c SET refresh_at = least(now(), coalesce(c.expires_at, now())),
               next_attempt_at = NULL
           FROM apps a
           WHERE {TOKEN_URL} = $1 AND c.app_id = a.id AND c.failed_attempts > 0
             AND c.status = 'active' AND c.refresh_at > now()""",
        token_url,
    )
    return int(result.split()[-1])


async def postpone(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, holder: str, until: datetime | None
) -> None:
    """Move the next look at a connection (paused app, token not yet expired) and release."""
    await db.execute(
        """UPDATE connections SET refresh_at = $3, lease_holder = NULL, lease_until = NULL,
               updated_at = now()
           WHERE id = $1 AND lease_holder = $2""",
        connection_id,
        holder,
        until,
    )


async def hold_app(conn: asyncpg.Connection, app_id: uuid.UUID) -> None:
    """Stop scheduling an app's refreshes (its settings were refused)."""
    await conn.execute(
        "UPDATE connections SET refresh_at = NULL WHERE app_id = $1 AND status = 'active'", app_id
    )


async def resume_app(conn: asyncpg.Connection, app_id: uuid.UUID) -> None:
    """Schedule at once the refreshes an app's pause held back."""
    await conn.execute(
        """UPDATE connections SET refresh_at = now()
           WHERE app_id = $1 AND status = 'active' AND refresh_at IS NULL
             AND (refresh_token IS NOT NULL OR expires_at IS NOT NULL
                  OR grant_type = 'client_credentials')""",
        app_id,
    )


async def record_report(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, report: dict[str, Any]
) -> None:
    await db.execute("UPDATE connections SET last_report = $2 WHERE id = $1", connection_id, report)


@dataclass(frozen=True)
class Unconfirmed401s:
    """The bare 401s counted against a token that cannot be refreshed, within the current window,
    and how many of them confirm it dead (the app's `reports_to_invalidate`)."""

    reports: int
    since: datetime
    confirms_at: int


async def count_unconfirmed_401(
    conn: asyncpg.Connection, connection_id: str, version: int, *, window_seconds: float
) -> Unconfirmed401s | None:
    """Count one more bare 401 against the connection's access token, in one statement so that
    concurrent reports each count (the row lock orders them). The count restarts when its first
    report is `window_seconds` old. None when the token is not the one reported on any more (a
    new one was stored: `version`), or the connection is no longer active without a refresh
    token."""
    row = await conn.fetchrow(
        """WITH counted AS (
              UPDATE connections SET
                unconfirmed_401s = CASE WHEN unconfirmed_401s_since > now() - $3 * interval '1 s'
                                        THEN unconfirmed_401s + 1 ELSE 1 END,
                unconfirmed_401s_since = CASE WHEN unconfirmed_401s_since > now() - $3 * interval '1 s'
                                              THEN unconfirmed_401s_since ELSE now() END
              WHERE id = $1 AND version = $2 AND status = 'active' AND refresh_token IS NULL
                AND grant_type = 'authorization_code'
              RETURNING app_id, unconfirmed_401s, unconfirmed_401s_since)
           SELECT c.unconfirmed_401s, c.unconfirmed_401s_since, a.reports_to_invalidate
           FROM counted c JOIN apps a ON a.id = c.app_id""",
        connection_id,
        version,
        float(window_seconds),
    )
    if row is None:
        return None
    return Unconfirmed401s(
        row["unconfirmed_401s"], row["unconfirmed_401s_since"], row["reports_to_invalidate"]
    )


async def end_access(
    conn: asyncpg.Connection, connection_id: str, version: int, *, problem: str, detail: str
) -> bool:
    """Mark failed a connection whose access token the provider no longer accepts and that has
    no refresh token to get another; a token stored since (`version`) is left alone, and one
    past its expiry is expired, not revoked (`mark_expired`). True only for the call that did it
    (one event)."""
    result = await conn.execute(
        """UPDATE connections SET status = 'failed', problem = $3, problem_detail = $4,
               refresh_at = NULL, lease_holder = NULL, lease_until = NULL, updated_at = now()
           WHERE id = $1 AND version = $2 AND status = 'active' AND refresh_token IS NULL
             AND grant_type = 'authorization_code'
             AND (expires_at IS NULL OR expires_at > now())""",
        connection_id,
        version,
        problem,
        detail,
    )
    return result.endswith(" 1")


async def due_for_probe(
    db: asyncpg.Connection | asyncpg.Pool, *, default_interval: int, limit: int
) -> list[str]:
    """Active connections of apps with a probe URL whose last probe is older than the app's
    interval, least recently probed first."""
    rows = await db.fetch(
        """SELECT c.id FROM connections c JOIN apps a ON a.id = c.app_id
           WHERE a.probe_url IS NOT NULL AND a.paused_at IS NULL AND c.status = 'active'
             AND coalesce(c.last_probe_at, c.authorized_at)
                 < now() - make_interval(secs => coalesce(a.probe_interval, $1))
           ORDER BY c.last_probe_at NULLS FIRST LIMIT $2""",
        default_interval,
        limit,
    )
    return [row["id"] for row in rows]


async def mark_probed(db: asyncpg.Connection | asyncpg.Pool, connection_id: str) -> None:
    await db.execute("UPDATE connections SET last_probe_at = now() WHERE id = $1", connection_id)


async def count_revoking(db: asyncpg.Connection | asyncpg.Pool, app_id: uuid.UUID) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM connections WHERE app_id = $1 AND status = 'revoking'", app_id
    )


async def counts_by_app(db: asyncpg.Connection | asyncpg.Pool) -> dict[uuid.UUID, dict[str, int]]:
    """How many connections each app has in each status."""
    rows = await db.fetch(
        "SELECT app_id, status, count(*) AS n FROM connections GROUP BY app_id, status"
    )
    counts: dict[uuid.UUID, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["app_id"], {})[row["status"]] = row["n"]
    return counts
