"""Token endpoints' health, shared by every worker: a provider outage is one fact about one URL,
not thousands of facts about its connections.

Transient failures (timeouts, 5xx, 429) are counted across connections. Enough of them in a row
make the endpoint unavailable: its refreshes are held back (`leases.claim` leaves them out) and
one connection at a time probes it. The first answer that is not an outage makes it available
again, and the backlog is released at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage.connections import RENEWABLE, TOKEN_URL

# Transient failures in a row, across an endpoint's connections, that make it unavailable. High
# enough that a provider failing one request in three does not trip it (0.3**10 ≈ 6e-6).
FAILURES_TO_TRIP = 10
# A failure this long after the previous one starts the count again.
FAILURE_MEMORY_SECONDS = 60.0


@dataclass(frozen=True)
class Endpoint:
    url: str
    available: bool
    failures: int
    last_failure_at: datetime | None
    last_error: dict[str, Any] | None
    unavailable_since: datetime | None
    probes: int
    next_probe_at: datetime | None
    retry_after_until: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Failure:
    """What recording a failure did: whether it made the endpoint unavailable just now."""

    turned_unavailable: bool
    failures: int
    available: bool


async def record_failure(
    conn: asyncpg.Connection,
    url: str,
    error: dict[str, Any],
    *,
    retry_after: float | None,
    first_probe_in: float,
) -> Failure:
    """Count a transient failure. The one that reaches FAILURES_TO_TRIP makes the endpoint
    unavailable and schedules its first probe (`first_probe_in` seconds, or Retry-After)."""
    row = await conn.fetchrow(
        """INSERT INTO token_endpoints AS t (url, failures, last_failure_at, last_error)
           VALUES ($1, 1, now(), $2)
           ON CONFLICT (url) DO UPDATE SET
               failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $3)
                               THEN 1 ELSE t.failures + 1 END,
               last_failure_at = now(), last_error = $2, updated_at = now()
           RETURNING available, failures""",
        url,
        error,
        FAILURE_MEMORY_SECONDS,
    )
    if not row["available"] or row["failures"] < FAILURES_TO_TRIP:
        return Failure(False, row["failures"], row["available"])
    wait = max(first_probe_in, retry_after or 0.0)
    tripped = await conn.fetchval(
        """UPDATE token_endpoints SET available = false, unavailable_since = now(), probes = 0,
               next_probe_at = now() + make_interval(secs => $2),
               retry_after_until = now() + make_interval(secs => $3), updated_at = now()
           WHERE url = $1 AND available
           RETURNING true""",
        url,
        wait,
        retry_after or 0.0,
    )
    return Failure(bool(tripped), row["failures"], False)


async def schedule_probe(
    conn: asyncpg.Connection, url: str, error: dict[str, Any], *, wait: float
) -> None:
    """After a failed probe: when the next one may go."""
    await conn.execute(
        """UPDATE token_endpoints SET next_probe_at = now() + make_interval(secs => $3),
               last_error = $2, last_failure_at = now(), failures = failures + 1,
               updated_at = now()
           WHERE url = $1 AND NOT available""",
        url,
        error,
        wait,
    )


async def record_success(conn: asyncpg.Connection, url: str) -> datetime | None:
    """The endpoint answered: forget its failures. Returns since when it had been unavailable
    when this answer ended that (one caller sees it), else None."""
    row = await conn.fetchrow(
        """WITH before AS (
               SELECT url, available, unavailable_since FROM token_endpoints
               WHERE url = $1 FOR UPDATE)
           UPDATE token_endpoints t SET failures = 0, available = true, probes = 0,
               unavailable_since = NULL, next_probe_at = NULL, retry_after_until = NULL,
               updated_at = now()
           FROM before
           WHERE t.url = before.url AND (t.failures > 0 OR NOT t.available)
           RETURNING before.available, before.unavailable_since""",
        url,
    )
    if row is None or row["available"]:
        return None
    return row["unavailable_since"]


async def take_probes(
    db: asyncpg.Connection | asyncpg.Pool, *, hold: float, limit: int
) -> list[tuple[str, int]]:
    """Up to `limit` unavailable endpoints whose next probe is due, each taken by this caller
    alone, with the number of its probes so far (this one included): its next probe time moves
    `hold` seconds on (longer than a probe can take) so no other worker probes it meanwhile;
    the probe's outcome sets the real next time."""
    rows = await db.fetch(
        """UPDATE token_endpoints SET probes = probes + 1,
               next_probe_at = now() + make_interval(secs => $1), updated_at = now()
           WHERE url IN (SELECT url FROM token_endpoints
                         WHERE NOT available AND next_probe_at <= now()
                         ORDER BY next_probe_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING url, probes""",
        hold,
        limit,
    )
    return [(row["url"], row["probes"]) for row in rows]


async def probe_later(db: asyncpg.Connection | asyncpg.Pool, url: str, wait: float) -> None:
    """A probe was taken but nothing could probe (no connection to refresh): look again soon."""
    await db.execute(
        """UPDATE token_endpoints SET next_probe_at = now() + make_interval(secs => $2)
           WHERE url = $1 AND NOT available""",
        url,
        wait,
    )


async def urgent(db: asyncpg.Connection | asyncpg.Pool, url: str, within: float) -> bool:
    """Whether a connection waiting on the endpoint has, or within `within` seconds will have,
    an expired access token: then probing cannot wait long."""
    return bool(
        await db.fetchval(
            f"""SELECT EXISTS (
                   SELECT 1 FROM connections c JOIN apps a ON a.id = c.app_id
                   WHERE {TOKEN_URL} = $1 AND c.status = 'active' AND c.refresh_at IS NOT NULL
                     AND c.refresh_at <= now() AND {RENEWABLE}
                     AND c.expires_at <= now() + make_interval(secs => $2))""",
            url,
            within,
        )
    )


async def apps_using(conn: asyncpg.Connection, url: str) -> list[str]:
    """The names of the apps whose token endpoint this is (their events tell of its health):
    the apps with this token URL, and those whose connections fill theirs to it."""
    rows = await conn.fetch(
        f"""SELECT name FROM apps WHERE token_url = $1
            UNION
            SELECT a.name FROM apps a JOIN connections c ON c.app_id = a.id
            WHERE cardinality(a.connection_settings) > 0 AND {TOKEN_URL} = $1
            ORDER BY name""",
        url,
    )
    return [row["name"] for row in rows]


async def get(db: asyncpg.Connection | asyncpg.Pool, url: str) -> Endpoint | None:
    row = await db.fetchrow("SELECT * FROM token_endpoints WHERE url = $1", url)
    return Endpoint(**dict(row)) if row else None


async def unavailable(db: asyncpg.Connection | asyncpg.Pool) -> list[Endpoint]:
    rows = await db.fetch("SELECT * FROM token_endpoints WHERE NOT available ORDER BY url")
    return [Endpoint(**dict(row)) for row in rows]
