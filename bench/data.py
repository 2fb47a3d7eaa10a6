"""Benchmark data: apps through the real storage code, connections inserted fast (COPY) with
tokens sealed by the real key ring, and minimal rows by the million with generate_series."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from storage import apps
from storage.sealing import KeyRing, aad

COPY_COLUMNS = [
    "id",
    "app_id",
    "status",
    "access_token",
    "refresh_token",
    "token_type",
    "expires_at",
    "refresh_at",
    "requested_scopes",
    "granted_scopes",
    "authorized_at",
]


async def create_app(
    pool: asyncpg.Pool, ring: KeyRing, name: str, provider_url: str, client_id: str, secret: str
) -> apps.App:
    async with pool.acquire() as conn:
        return await apps.create(
            conn,
            ring,
            {
                "name": name,
                "client_id": client_id,
                "client_secret": secret,
                "authorization_url": f"{provider_url}/authorize",
                "token_url": f"{provider_url}/token",
                "scopes": ["read"],
            },
        )


async def insert_connections(
    pool: asyncpg.Pool,
    ring: KeyRing,
    app_id: uuid.UUID,
    count: int,
    prefix: str,
    *,
    due: bool,
) -> list[tuple[str, str]]:
    """`count` active connections with sealed tokens; returns (id, refresh token) pairs.
    `due` puts refresh_at in the past, else 50 minutes ahead (tokens valid for an hour)."""
    now = datetime.now(UTC)
    expires = now + timedelta(hours=1)
    refresh_at = now - timedelta(seconds=5) if due else now + timedelta(minutes=50)
    pairs: list[tuple[str, str]] = []
    records = []
    for i in range(count):
        cid = f"{prefix}-{i:07d}"
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        pairs.append((cid, refresh))
        records.append(
            (
                cid,
                app_id,
                "active",
                ring.seal(access, aad=aad("connections", cid, "access_token")),
                ring.seal(refresh, aad=aad("connections", cid, "refresh_token")),
                "Bearer",
                expires,
                refresh_at,
                ["read"],
                ["read"],
                now,
            )
        )
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("connections", records=records, columns=COPY_COLUMNS)
        await conn.execute("ANALYZE connections")
    return pairs


async def insert_minimal(
    pool: asyncpg.Pool, app_id: uuid.UUID, first: int, last: int, due_every: int = 100
) -> None:
    """Rows `first..last` (inclusive): active, no secrets, every `due_every`-th one due (refresh_at
    in the past), the others due within the next hour. One INSERT … SELECT generate_series."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO connections (id, app_id, status, refresh_at, authorized_at)
               SELECT 'm' || lpad(g::text, 8, '0'), $1, 'active',
                      CASE WHEN g % $4 = 0
                           THEN now() - make_interval(secs => 1 + (g % 600))
                           ELSE now() + make_interval(secs => 600 + (g % 3000)) END,
                      now()
               FROM generate_series($2::int, $3::int) AS g""",
            app_id,
            first,
            last,
            due_every,
        )


async def restore_minimal_due(pool: asyncpg.Pool, first: int, last: int, due_every: int) -> int:
    """Put the due rows of `insert_minimal` back as they were (a worker may have handled them)."""
    result = await pool.execute(
        """UPDATE connections SET refresh_at = now() - make_interval(secs => 1 + (n % 600)),
                  lease_holder = NULL, lease_until = NULL, status = 'active'
           FROM (SELECT id AS mid, substr(id, 2)::int AS n FROM connections
                 WHERE id LIKE 'm%') AS m
           WHERE connections.id = m.mid AND m.n BETWEEN $1 AND $2 AND m.n % $3 = 0""",
        first,
        last,
        due_every,
    )
    return int(result.split()[-1])


async def vacuum_analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE connections")
    finally:
        await conn.close()
