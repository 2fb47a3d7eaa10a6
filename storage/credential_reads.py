"""The credential audit: how often each API key read each connection's token or Basic
credential, per UTC day, with the first and last read of the day.

Counts arrive in batches (services/audit.py keeps them in memory for a few seconds), so one
statement adds many of them: rows of the same key, subject and day from several web processes
add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

KINDS = ("connection", "basic")


@dataclass(frozen=True)
class Reads:
    """`count` reads of one subject (a connection id or a Basic credential's name, by `kind`)
    by one key on one day."""

    key_id: str
    kind: str
    subject: str
    day: date
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class Found(Reads):
    key_name: str


@dataclass(frozen=True)
class Total:
    """Every read of one subject by one key, the days kept added up."""

    kind: str
    subject: str
    count: int
    days: int
    first_at: datetime
    last_at: datetime


async def add(db: asyncpg.Connection | asyncpg.Pool, batch: Sequence[Reads]) -> None:
    """Add the batch's counts: one statement whatever its size."""
    if not batch:
        return
    await db.execute(
        """INSERT INTO credential_reads (key_id, kind, subject, day, count, first_at, last_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::bigint[],
                                $6::timestamptz[], $7::timestamptz[])
           ON CONFLICT (key_id, kind, subject, day) DO UPDATE SET
               count = credential_reads.count + excluded.count,
               first_at = least(credential_reads.first_at, excluded.first_at),
               last_at = greatest(credential_reads.last_at, excluded.last_at)""",
        [r.key_id for r in batch],
        [r.kind for r in batch],
        [r.subject for r in batch],
        [r.day for r in batch],
        [r.count for r in batch],
        [r.first_at for r in batch],
        [r.last_at for r in batch],
    )


async def find(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    key_id: str | None = None,
    kind: str | None = None,
    subject: str | None = None,
    since: date,
    limit: int,
) -> list[Found]:
    """Reads from `since` on, newest day first, each with its key's name."""
    rows = await db.fetch(
        """SELECT r.key_id, r.kind, r.subject, r.day, r.count, r.first_at, r.last_at,
                  k.name AS key_name
           FROM credential_reads r JOIN api_keys k ON k.id = r.key_id
           WHERE r.day >= $1
             AND ($2::text IS NULL OR r.key_id = $2)
             AND ($3::text IS NULL OR r.kind = $3)
             AND ($4::text IS NULL OR r.subject = $4)
           ORDER BY r.day DESC, r.last_at DESC LIMIT $5""",
        since,
        key_id,
        kind,
        subject,
        limit,
    )
    return [Found(**dict(row)) for row in rows]


async def totals(
    db: asyncpg.Connection | asyncpg.Pool, key_id: str, limit: int = 1000
) -> list[Total]:
    """What one key read, per subject, the most recently read first."""
    rows = await db.fetch(
        """SELECT kind, subject, sum(count)::bigint AS count, count(*)::int AS days,
                  min(first_at) AS first_at, max(last_at) AS last_at
           FROM credential_reads WHERE key_id = $1
           GROUP BY kind, subject ORDER BY max(last_at) DESC LIMIT $2""",
        key_id,
        limit,
    )
    return [Total(**dict(row)) for row in rows]
