"""The database and Redis a local command uses: the configured ones, or embedded servers for
whichever is missing (development), with the schema migrated.

The storage modules are imported inside the functions: importing the core never imports the
edges (`handlers`, `worker`, `storage`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from authbroker.config import Settings
from authbroker.embedded import EmbeddedServices

# The development admin key's file in the data directory: `run` writes it, API commands read it.
ADMIN_KEY_FILE = "admin-api-key"


@contextlib.asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[Settings]:
    """Yield settings whose database and Redis URLs are set, starting embedded servers for
    whichever is missing (refused in production by the settings check)."""
    embedded = EmbeddedServices(Path(settings.data_dir))
    if settings.embedded:
        database_url, redis_url = await embedded.start(
            need_postgres=settings.database_url is None, need_redis=settings.redis_url is None
        )
        settings = settings.replace(
            database_url=settings.database_url or database_url,
            redis_url=settings.redis_url or redis_url,
        )
    try:
        yield settings
    finally:
        await embedded.stop()


async def migrate(settings: Settings) -> list[str]:
    """Apply the migrations the database lacks; their names."""
    import asyncpg

    from storage.migrate import migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]
    finally:
        await conn.close()


async def with_pool(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work` with a pool on the migrated database."""
    from storage.pool import create_pool

    async with services(settings) as settings:
        await migrate(settings)
        pool = await create_pool(settings.database_url or "")
        try:
            await work(pool)
        finally:
            await pool.close()
