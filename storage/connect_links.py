"""Connect links: single-use, expiring URLs that start a fresh authorization of one connection.

Only the token's SHA-256 is stored, so a database leak opens no link; a link is found by it and
locked while it is used up, so two openings of one link cannot both start an authorization.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class ConnectLink:
    id: uuid.UUID
    app_id: uuid.UUID
    connection_id: str
    scopes: list[str]
    expires_at: datetime
    used_at: datetime | None
    # The connection settings to authorize with; None: the connection's own.
    settings: dict[str, str] | None


async def create(
    conn: asyncpg.Connection,
    *,
    token_hash: bytes,
    app_id: uuid.UUID,
    connection_id: str,
    scopes: list[str] | None,
    lifetime_seconds: int,
    only_if_wanted: bool = False,
    settings: dict[str, str] | None = None,
) -> datetime | None:
    """Store a link; returns when it expires. `scopes` None: those the connection asked for
    last, or else the app's. `only_if_wanted`: only for an app that hands out reconnect links
    (`reconnect_links`), is not being deleted and has an authorization URL, for a connection a
    user authorizes (not a service connection); None otherwise."""
    return await conn.fetchval(
        """INSERT INTO connect_links (id, token_hash, app_id, connection_id, scopes, expires_at,
                                      settings)
           SELECT $1, $2, a.id, $4, coalesce($5, c.requested_scopes, a.scopes),
                  now() + make_interval(secs => $6), $8
           FROM apps a LEFT JOIN connections c ON c.id = $4 AND c.app_id = a.id
           WHERE a.id = $3
             AND (NOT $7 OR (a.reconnect_links AND NOT a.deleting
                             AND a.authorization_url IS NOT NULL
                             AND c.grant_type IS DISTINCT FROM 'client_credentials'))
           RETURNING expires_at""",
        uuid.uuid4(),
        token_hash,
        app_id,
        connection_id,
        scopes,
        float(lifetime_seconds),
        only_if_wanted,
        settings,
    )


async def take(conn: asyncpg.Connection, token_hash: bytes) -> ConnectLink | None:
    """The link of a token, locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        """SELECT id, app_id, connection_id, scopes, expires_at, used_at, settings
           FROM connect_links
           WHERE token_hash = $1 FOR UPDATE""",
        token_hash,
    )
    return ConnectLink(**dict(row)) if row else None


async def mark_used(
    conn: asyncpg.Connection, link_id: uuid.UUID, authorization_id: uuid.UUID
) -> None:
    await conn.execute(
        "UPDATE connect_links SET used_at = now(), authorization_id = $2 WHERE id = $1",
        link_id,
        authorization_id,
    )


async def purge(db: asyncpg.Connection | asyncpg.Pool, *, older_than_days: int = 7) -> int:
    """Forget links a while after they expired (a used one is refused by its row until then)."""
    result = await db.execute(
        "DELETE FROM connect_links WHERE expires_at < now() - make_interval(days => $1)",
        older_than_days,
    )
    return int(result.split()[-1])
