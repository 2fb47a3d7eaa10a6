"""API keys for operators and runtimes: `ab_<id>_<secret>`, only a hash of the secret stored.

The id part finds the row; the secret part is compared with `hmac.compare_digest`, so the time a
check takes says nothing about how much of a guess was right. Each key has a role
(`authbroker.roles`) and, when limited, the app names it reaches (`apps`; None: every app).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

PREFIX = "ab"
# A syntactically valid but unused digest, compared against when the id is unknown so that
# unknown ids and wrong secrets take the same path.
_DUMMY = hashlib.sha256(b"authbroker-no-such-key").digest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    apps: list[str] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


COLUMNS = "id, name, role, apps, created_at, last_used_at, revoked_at"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _split(key: str) -> tuple[str, str] | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create(
    db: asyncpg.Connection | asyncpg.Pool,
    name: str,
    *,
    role: str = "admin",
    apps: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored. (The role's default is
    what every key was before roles existed; `services.api_keys` always names one.)"""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    row = await db.fetchrow(
        f"""INSERT INTO api_keys (id, name, key_hash, role, apps) VALUES ($1, $2, $3, $4, $5)
            RETURNING {COLUMNS}""",
        key_id,
        name,
        _digest(secret),
        role,
        apps,
    )
    return ApiKey(**dict(row)), f"{PREFIX}_{key_id}_{secret}"


async def verify(db: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    split = _split(key)
    key_id, secret = split if split else ("", key)
    row = await db.fetchrow(
        f"""SELECT key_hash, {COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL""",
        key_id,
    )
    stored = row["key_hash"] if row else _DUMMY
    if not hmac.compare_digest(stored, _digest(secret)) or row is None:
        return None
    values = dict(row)
    values.pop("key_hash")
    return ApiKey(**values)


_touched: dict[str, float] = {}
TOUCH_EVERY = 60.0


async def touch(db: asyncpg.Connection | asyncpg.Pool, key_id: str) -> None:
    """Record that a key was used, at most once a minute per process: the hot path (a runtime
    fetching credentials) should not pay a write per request."""
    now = time.monotonic()
    if now - _touched.get(key_id, -TOUCH_EVERY) < TOUCH_EVERY:
        return
    _touched[key_id] = now
    await db.execute(
        """UPDATE api_keys SET last_used_at = now()
           WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')""",
        key_id,
    )


async def list_all(db: asyncpg.Connection | asyncpg.Pool) -> list[ApiKey]:
    rows = await db.fetch(f"SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id")
    return [ApiKey(**dict(r)) for r in rows]


async def revoke(db: asyncpg.Connection | asyncpg.Pool, key_id: str) -> bool:
    result = await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return result.endswith(" 1")


async def count_active(db: asyncpg.Connection | asyncpg.Pool, role: str | None = None) -> int:
    """Keys not revoked (of `role`, when given)."""
    return await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND ($1::text IS NULL OR role = $1)",
        role,
    )


async def get_active(db: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    """A key that has not been revoked, by id (a console session stands on one)."""
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return ApiKey(**dict(row)) if row else None


async def get(db: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    """A key by id, revoked or not."""
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM api_keys WHERE id = $1", key_id)
    return ApiKey(**dict(row)) if row else None
