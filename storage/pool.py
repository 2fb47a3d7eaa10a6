"""The asyncpg pool, with JSON codecs so jsonb columns read and write as Python values."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool connections never LISTEN, SET or take advisory locks (the relay and migrations use
    connections of their own), so the default reset query on every release (UNLISTEN, RESET
    ALL, unlock, …) is a round trip that buys nothing. asyncpg still rolls back any open
    transaction before this runs."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """Open a pool; connections are set up for jsonb and given a short statement timeout budget."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        server_settings={"application_name": "authbroker"},
        **kwargs,
    )


async def ping(pool: asyncpg.Pool) -> None:
    """Whether Postgres answers (readiness)."""
    await pool.fetchval("SELECT 1")
