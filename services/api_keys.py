"""API keys: creating, listing, showing (with what each read) and revoking them, whichever edge
asks: the API (admin keys), the console (admin sessions), or the CLI on the database itself,
which is how the first admin key comes to exist. So these take the database, not the web
side's resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from authbroker.logs import get_logger
from authbroker.schemas import ApiKeyCreate
from services.errors import NotFound
from storage import api_keys, credential_reads
from storage.api_keys import ApiKey
from storage.credential_reads import Total

log = get_logger("authbroker.api_keys")

Database = asyncpg.Connection | asyncpg.Pool
# What a key's id may look like (`ab_<id>_…`); anything else names no key.
KEY_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True)
class Shown:
    key: ApiKey
    reads: list[Total]


async def create(db: Database, definition: ApiKeyCreate, *, via: str = "api") -> tuple[ApiKey, str]:
    """Create a key: the row, and the plaintext, which exists only in this answer."""
    key, plaintext = await api_keys.create(
        db, definition.name, role=definition.role, apps=definition.apps
    )
    log.info("api_key_created", key_id=key.id, name=key.name, role=key.role, apps=key.apps, via=via)
    return key, plaintext


async def list_all(db: Database) -> list[ApiKey]:
    return await api_keys.list_all(db)


async def get(db: Database, key_id: str) -> ApiKey:
    key = await api_keys.get(db, key_id) if KEY_ID.fullmatch(key_id) else None
    if key is None:
        raise NotFound("api_key_not_found", f"no API key with id {key_id!r}")
    return key


async def show(db: Database, key_id: str) -> Shown:
    """A key, its last use and what it read (each connection and Basic credential, with how
    often and when)."""
    key = await get(db, key_id)
    return Shown(key, await credential_reads.totals(db, key.id))


async def revoke(db: Database, key_id: str, *, via: str = "api") -> ApiKey:
    """Revoke a key (again is fine): requests with it fail from now on, and its event streams
    end at their next check."""
    await get(db, key_id)
    if await api_keys.revoke(db, key_id):
        log.info("api_key_revoked", key_id=key_id, via=via)
    return await get(db, key_id)
