"""Basic credentials: a login in plain text and a password sealed to its name (NULL while an
imported credential waits for its password)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from storage.sealing import KeyRing, aad


@dataclass(frozen=True)
class BasicCredential:
    name: str
    login: str
    password: bytes | None = field(repr=False)
    created_at: datetime
    updated_at: datetime

    def open_password(self, ring: KeyRing) -> str:
        assert self.password is not None, "awaiting its password"
        return ring.open(self.password, aad=aad("basic_credentials", self.name, "password"))


async def put(
    db: asyncpg.Connection | asyncpg.Pool, ring: KeyRing, name: str, login: str, password: str
) -> tuple[BasicCredential, bool]:
    """Create or replace; returns the credential and whether it was created."""
    sealed = ring.seal(password, aad=aad("basic_credentials", name, "password"))
    row = await db.fetchrow(
        """INSERT INTO basic_credentials (name, login, password) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO UPDATE
              SET login = EXCLUDED.login, password = EXCLUDED.password, updated_at = now()
           RETURNING name, login, password, created_at, updated_at, (xmax = 0) AS created""",
        name,
        login,
        sealed,
    )
    values = dict(row)
    created = values.pop("created")
    return BasicCredential(**values), created


async def get(db: asyncpg.Connection | asyncpg.Pool, name: str) -> BasicCredential | None:
    row = await db.fetchrow(
        "SELECT name, login, password, created_at, updated_at FROM basic_credentials WHERE name = $1",
        name,
    )
    return BasicCredential(**dict(row)) if row else None


async def list_all(db: asyncpg.Connection | asyncpg.Pool) -> list[BasicCredential]:
    rows = await db.fetch(
        "SELECT name, login, password, created_at, updated_at FROM basic_credentials ORDER BY name"
    )
    return [BasicCredential(**dict(r)) for r in rows]


async def delete(db: asyncpg.Connection | asyncpg.Pool, name: str) -> bool:
    return (await db.execute("DELETE FROM basic_credentials WHERE name = $1", name)).endswith(" 1")


async def create_awaiting(conn: asyncpg.Connection, name: str, login: str) -> bool:
    """Create a credential that waits for its password (an import); False if the name is
    taken."""
    created = await conn.fetchval(
        """INSERT INTO basic_credentials (name, login, password) VALUES ($1, $2, NULL)
           ON CONFLICT (name) DO NOTHING RETURNING true""",
        name,
        login,
    )
    return bool(created)


async def set_login(conn: asyncpg.Connection, name: str, login: str) -> bool:
    """Change a credential's login, keeping its password; False when it was already that."""
    result = await conn.execute(
        """UPDATE basic_credentials SET login = $2, updated_at = now()
           WHERE name = $1 AND login <> $2""",
        name,
        login,
    )
    return result.endswith(" 1")
