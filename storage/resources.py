"""What the web side and the workers open at start: the key ring, the Postgres pool and Redis.

Both sides use the same function, so they agree on the key ring, the pool's codecs and the Redis
prefix, and a test can open exactly what production opens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from arq import create_pool as create_arq_pool
from arq.connections import ArqRedis, RedisSettings

from authbroker.config import Settings, SettingsError
from storage.notifications import Notifications
from storage.pool import create_pool
from storage.sealing import KeyRing

KEYS_FILE = "encryption-keys"


def load_key_ring(settings: Settings) -> KeyRing:
    """The ring from AUTHBROKER_ENCRYPTION_KEYS; in development, a key generated once and kept
    in the data directory (production refuses to start without explicit keys)."""
    text = settings.encryption_keys
    source = "AUTHBROKER_ENCRYPTION_KEYS"
    if text is None:
        if settings.production:
            raise SettingsError("AUTHBROKER_ENCRYPTION_KEYS is required in production")
        path = Path(settings.data_dir) / KEYS_FILE
        if not path.exists():
            _create_once(path, KeyRing.generate_line("dev1") + "\n")
        text = path.read_text()
        source = f"the development key file {path}"
    try:
        return KeyRing.parse(text)
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from None


def _create_once(path: Path, content: str) -> None:
    """Write a file only if it does not exist, whole or not at all, even when two processes
    start at once: write a private temporary file, then hard-link it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process won; its key is the key
    finally:
        temporary.unlink()


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    # Fail fast when Redis is down rather than blocking a request for arq's default 5 retries.
    settings.conn_retries = 1
    settings.conn_timeout = 2
    return settings


@dataclass
class Resources:
    settings: Settings
    ring: KeyRing = field(repr=False)
    pool: asyncpg.Pool
    redis: ArqRedis
    # News of connections (outcomes of refreshes), for processes where someone waits on them.
    notifications: Notifications = field(init=False)

    def __post_init__(self) -> None:
        self.notifications = Notifications(self.settings.database_url or "")

    @classmethod
    async def open(
        cls, settings: Settings, ring: KeyRing, *, pool_min: int = 1, pool_max: int = 10
    ) -> Resources:
        assert settings.database_url and settings.redis_url, "start embedded servers first"
        pool = await create_pool(settings.database_url, min_size=pool_min, max_size=pool_max)
        try:
            redis = await create_arq_pool(
                redis_settings(settings.redis_url), default_queue_name=settings.queue_name
            )
        except BaseException:
            await pool.close()
            raise
        return cls(settings=settings, ring=ring, pool=pool, redis=redis)

    async def close(self) -> None:
        await self.notifications.close()
        await self.redis.aclose()
        await self.pool.close()
