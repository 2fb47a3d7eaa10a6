"""Started authorizations: one row per authorize URL handed out.

The state is stored only as a hash, so a database leak does not let anyone complete a pending
authorization; the code is sealed and stored before any job is enqueued, so a Redis outage
between callback and exchange loses nothing (the worker's sweep finds it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from storage.sealing import KeyRing, aad

COLUMNS = """z.id, z.app_id, a.name AS app, z.connection_id, z.code_verifier, z.requested_scopes,
    z.redirect_uri, z.expires_at, z.code, z.code_received_at, z.enqueued_at, z.attempts, z.done,
    z.outcome, z.problem, z.created_at, z.done_at, z.callback_data, z.settings"""
FROM = "authorizations z JOIN apps a ON a.id = z.app_id"


@dataclass(frozen=True)
class Authorization:
    id: uuid.UUID
    app_id: uuid.UUID
    app: str
    connection_id: str
    code_verifier: bytes | None = field(repr=False)
    requested_scopes: list[str]
    redirect_uri: str
    expires_at: datetime
    code: bytes | None = field(repr=False)
    code_received_at: datetime | None
    enqueued_at: datetime | None
    attempts: int
    done: bool
    outcome: str | None
    problem: str | None
    created_at: datetime
    done_at: datetime | None
    # Parameters of the redirect that runtimes need later (QuickBooks' realmId); not secret.
    callback_data: dict[str, Any] | None
    # The connection settings its URLs were filled with; the connection takes them with the
    # grant. Not secret.
    settings: dict[str, str]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Authorization:
        return cls(**dict(row))

    def open_code(self, ring: KeyRing) -> str:
        assert self.code is not None
        return ring.open(self.code, aad=aad("authorizations", self.id, "code"))

    def open_verifier(self, ring: KeyRing) -> str | None:
        if self.code_verifier is None:
            return None
        return ring.open(self.code_verifier, aad=aad("authorizations", self.id, "code_verifier"))


async def create(
    conn: asyncpg.Connection,
    ring: KeyRing,
    *,
    state_hash: bytes,
    app_id: uuid.UUID,
    connection_id: str,
    code_verifier: str | None,
    requested_scopes: list[str],
    redirect_uri: str,
    lifetime_seconds: int,
    settings: dict[str, str] | None = None,
) -> tuple[uuid.UUID, datetime]:
    authorization_id = uuid.uuid4()
    verifier = (
        ring.seal(code_verifier, aad=aad("authorizations", authorization_id, "code_verifier"))
        if code_verifier
        else None
    )
    expires_at = await conn.fetchval(
        """INSERT INTO authorizations (id, state_hash, app_id, connection_id, code_verifier,
               requested_scopes, redirect_uri, expires_at, settings)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9)
           RETURNING expires_at""",
        authorization_id,
        state_hash,
        app_id,
        connection_id,
        verifier,
        requested_scopes,
        redirect_uri,
        float(lifetime_seconds),
        settings or {},
    )
    return authorization_id, expires_at


async def get(
    db: asyncpg.Connection | asyncpg.Pool, authorization_id: uuid.UUID
) -> Authorization | None:
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM {FROM} WHERE z.id = $1", authorization_id)
    return Authorization.from_row(row) if row else None


async def by_state(conn: asyncpg.Connection, state_hash: bytes) -> Authorization | None:
    """Find and lock the authorization of a state (the callback decides under the lock)."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM {FROM} WHERE z.state_hash = $1 FOR UPDATE OF z", state_hash
    )
    return Authorization.from_row(row) if row else None


async def store_code(
    conn: asyncpg.Connection,
    ring: KeyRing,
    authorization_id: uuid.UUID,
    code: str,
    callback_data: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """UPDATE authorizations SET code = $2, code_received_at = now(), callback_data = $3
           WHERE id = $1""",
        authorization_id,
        ring.seal(code, aad=aad("authorizations", authorization_id, "code")),
        callback_data or None,
    )


async def mark_enqueued(db: asyncpg.Connection | asyncpg.Pool, authorization_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE authorizations SET enqueued_at = now() WHERE id = $1", authorization_id
    )


async def finish(
    conn: asyncpg.Connection,
    authorization_id: uuid.UUID,
    *,
    outcome: str,
    problem: str | None,
) -> None:
    """End an authorization. The code and verifier are wiped: they are single use anyway, and
    a secret that is not kept cannot leak."""
    await conn.execute(
        """UPDATE authorizations SET done = true, done_at = now(), outcome = $2, problem = $3,
               code = NULL, code_verifier = NULL
           WHERE id = $1 AND NOT done""",
        authorization_id,
        outcome,
        problem,
    )


async def count_attempt(conn: asyncpg.Connection, authorization_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "UPDATE authorizations SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        authorization_id,
    )


async def stranded_codes(
    db: asyncpg.Connection | asyncpg.Pool, *, older_than_seconds: float, limit: int
) -> list[uuid.UUID]:
    """Codes received but not exchanged whose job may never have run (Redis was down)."""
    rows = await db.fetch(
        """SELECT id FROM authorizations
           WHERE code IS NOT NULL AND NOT done
             AND coalesce(enqueued_at, code_received_at) < now() - make_interval(secs => $1)
           ORDER BY code_received_at LIMIT $2""",
        float(older_than_seconds),
        limit,
    )
    return [r["id"] for r in rows]


async def purge(db: asyncpg.Connection | asyncpg.Pool, *, older_than_days: int = 7) -> int:
    """Forget finished or abandoned authorizations after a while."""
    result = await db.execute(
        """DELETE FROM authorizations
           WHERE created_at < now() - make_interval(days => $1) AND (done OR code IS NULL)""",
        older_than_days,
    )
    return int(result.split()[-1])


async def expire_unfinished(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """End authorizations past their lifetime with no callback, and fail the connections that
    were only waiting for them (pending, with no other authorization still open). Returns the
    failed connections' `id`, `app` and `app_id`."""
    return await conn.fetch(
        """WITH ended AS (
               UPDATE authorizations SET done = true, done_at = now(), outcome = 'expired',
                      problem = 'authorization_expired', code_verifier = NULL
               WHERE NOT done AND code IS NULL AND expires_at < now()
               RETURNING connection_id)
           UPDATE connections c SET status = 'failed', problem = 'authorization_expired',
                  problem_detail = NULL, updated_at = now()
           FROM apps a
           WHERE c.id IN (SELECT connection_id FROM ended) AND c.status = 'pending'
             AND a.id = c.app_id
             AND NOT EXISTS (SELECT 1 FROM authorizations z
                             WHERE z.connection_id = c.id AND NOT z.done
                               AND z.expires_at >= now())
           RETURNING c.id, a.name AS app, a.id AS app_id"""
    )
