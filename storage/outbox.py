"""The outbox: events written in the transaction of the change they describe.

`pg_notify` in the same transaction is delivered at commit, which wakes the relay within
milliseconds without polling; the rows themselves are the truth if a notification is missed.
The notification carries the connection id the events are about, so that a web process whose
runtime waits on that connection's refresh learns of the outcome at once (`storage.listen`).
"""

from __future__ import annotations

from typing import Any

import asyncpg

NOTIFY_CHANNEL = "authbroker_outbox"


async def append(conn: asyncpg.Connection, *events: dict[str, Any]) -> None:
    """Insert the events and notify the relay (and waiters), in one round trip."""
    if not events:
        return
    subjects = {event.get("connection_id") or "" for event in events}
    await conn.execute(
        """WITH inserted AS (INSERT INTO outbox (event) SELECT unnest($1::jsonb[]))
           SELECT pg_notify($2, $3)""",
        list(events),
        NOTIFY_CHANNEL,
        subjects.pop() if len(subjects) == 1 else "",
    )


async def pending(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, event FROM outbox WHERE relayed_at IS NULL ORDER BY id LIMIT $1", limit
    )


async def mark_relayed(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("UPDATE outbox SET relayed_at = now() WHERE id = ANY($1::bigint[])", ids)


async def prune(conn: asyncpg.Connection, older_than_days: int = 7) -> int:
    """Delete relayed events older than the stream's useful replay window."""
    result = await conn.execute(
        "DELETE FROM outbox WHERE relayed_at < now() - make_interval(days => $1)", older_than_days
    )
    return int(result.split()[-1])
