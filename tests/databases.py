"""Databases of a test's own on the session's Postgres server: created (and migrated) on entry,
dropped on exit, so no test touches data it did not create."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.migrate import migrate


def with_database(dsn: str, name: str) -> str:
    """The same server, another database (works for host and unix-socket DSNs)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(admin_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def private_database(
    admin_dsn: str, *, purpose: str = "test", migrated: bool = True, name: str | None = None
) -> AsyncIterator[str]:
    """Yield the DSN of a new database (migrated unless told otherwise); drop it afterwards."""
    name = name or f"authbroker_{purpose}_{uuid.uuid4().hex[:12]}"
    await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    url = with_database(admin_dsn, name)
    try:
        if migrated:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        yield url
    finally:
        await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
