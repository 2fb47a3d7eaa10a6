"""Refresh leases: which worker may refresh a connection now.

A lease is a conditional UPDATE only one worker wins; its holder renews it while it works, so it
outlives the slowest provider answer and lapses within seconds of its holder's death. Claims
take many due connections in one statement, their apps joined, skipping rows other workers are
claiming at the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage import apps
from storage.connections import COLUMNS, JOINS, RENEWABLE, TOKEN_URL, Connection, select_from

# Workers LISTEN here: a runtime waits for a refresh that `request_refresh` made due.
REFRESH_WANTED = "authbroker_refresh_wanted"


# Taking over a lease that lapsed while held: its holder died (or stalled) mid-refresh, and the
# refresh it was running may have reached the provider. Remember that its answer may be lost.
_TAKEOVER = """answer_lost_at = CASE WHEN c.lease_holder IS NOT NULL
                                  THEN coalesce(c.answer_lost_at, now())
                                  ELSE c.answer_lost_at END"""


async def take_lease(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, holder: str, seconds: float
) -> Connection | None:
    """Take the refresh lease of an active connection: one conditional UPDATE, so of any number
    of workers racing, exactly one gets it. A lease left by a dead worker lapses by itself.
    `updated_at` is left alone: it signals waiters that a refresh finished, not that one began."""
    row = await db.fetchrow(
        f"""WITH leased AS (
              UPDATE connections c SET lease_holder = $2,
                     lease_until = now() + make_interval(secs => $3), {_TAKEOVER}
              WHERE c.id = $1 AND c.status = 'active'
                AND (c.lease_holder IS NULL OR c.lease_until < now())
              RETURNING c.*)
            {select_from("leased")}""",
        connection_id,
        holder,
        float(seconds),
    )
    return Connection.from_row(row) if row else None


@dataclass(frozen=True)
class Claimed:
    """A connection leased for a refresh, with what the refresh needs of its app: the app row
    and the transient failures its token endpoint has had in a row (None: not looked up)."""

    connection: Connection
    app: apps.App
    endpoint_failures: int | None


_APP_COLUMNS = tuple(name.strip() for name in apps.COLUMNS.split(","))
_CLAIMED_APP = ", ".join(f"a.{name} AS app__{name}" for name in _APP_COLUMNS)


def _claimed(row: asyncpg.Record) -> Claimed:
    values = dict(row)
    app = apps.App(**{name: values.pop(f"app__{name}") for name in _APP_COLUMNS})
    failures = values.pop("endpoint_failures")
    return Claimed(Connection(**values), app, failures or 0)


def _claim(picked: str) -> str:
    """Lease the connections `picked` selects (ids; rows another claim is taking are skipped,
    not waited for) and return them with their apps, most overdue first."""
    return f"""WITH picked AS ({picked} FOR UPDATE OF c SKIP LOCKED),
            leased AS (
              UPDATE connections c SET lease_holder = $1,
                     lease_until = now() + make_interval(secs => $2), {_TAKEOVER}
              FROM picked WHERE c.id = picked.id
              RETURNING c.*)
            SELECT {COLUMNS}, {_CLAIMED_APP}, e.failures AS endpoint_failures
            FROM leased c {JOINS}
            ORDER BY c.refresh_at"""


# Due: active connections, and service connections waiting for their first token.
CLAIM_DUE = _claim(
    f"""SELECT c.id FROM connections c {JOINS}
        WHERE (c.status = 'active'
               OR (c.status = 'pending' AND c.grant_type = 'client_credentials'))
          AND c.refresh_at IS NOT NULL AND c.refresh_at <= now()
          AND (c.lease_holder IS NULL OR c.lease_until < now())
          AND a.paused_at IS NULL AND e.available IS NOT FALSE
        ORDER BY c.refresh_at LIMIT $3"""
)
CLAIM_PROBE = _claim(
    f"""SELECT c.id FROM connections c JOIN apps a ON a.id = c.app_id
       WHERE {TOKEN_URL} = $3 AND a.paused_at IS NULL
         AND c.status = 'active' AND c.refresh_at IS NOT NULL AND {RENEWABLE}
         AND (c.lease_holder IS NULL OR c.lease_until < now())
       ORDER BY c.refresh_at LIMIT 1"""
)


async def claim(
    db: asyncpg.Connection | asyncpg.Pool, holder: str, limit: int, seconds: float
) -> list[Claimed]:
    """Lease up to `limit` due connections, most overdue first, with their apps, in one
    statement. Apps paused for refused settings and token endpoints held back as unavailable
    are left out (a probe takes those one at a time: `claim_probe`). The partial index
    `connections_refresh_due` serves it: its cost follows the number due, not the table."""
    rows = await db.fetch(CLAIM_DUE, holder, float(seconds), limit)
    return [_claimed(row) for row in rows]


async def claim_probe(
    db: asyncpg.Connection | asyncpg.Pool, holder: str, token_url: str, seconds: float
) -> Claimed | None:
    """Lease the one connection that probes an unavailable token endpoint: the most urgent one
    with a refresh token, due or not (refreshing early does no harm)."""
    rows = await db.fetch(CLAIM_PROBE, holder, float(seconds), token_url)
    return _claimed(rows[0]) if rows else None


async def renew_leases(
    db: asyncpg.Connection | asyncpg.Pool, held: dict[str, str], seconds: float
) -> int:
    """Extend the leases a live worker holds (connection id -> holder): a lease outlives a
    refresh however long the provider takes to answer, and lapses within `seconds` of its
    holder's death."""
    if not held:
        return 0
    result = await db.execute(
        """UPDATE connections c SET lease_until = now() + make_interval(secs => $3)
           FROM unnest($1::text[], $2::text[]) AS h(id, holder)
           WHERE c.id = h.id AND c.lease_holder = h.holder""",
        list(held),
        list(held.values()),
        float(seconds),
    )
    return int(result.split()[-1])


async def request_refresh(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, version: int
) -> bool:
    """Make a connection due now and wake the workers, unless it changed since it was read at
    `version` (a refresh finished meanwhile: read it again instead). False when not marked."""
    marked = await db.fetchval(
        """WITH due AS (
              UPDATE connections SET refresh_at = now()
              WHERE id = $1 AND version = $2 AND status = 'active'
              RETURNING id)
           SELECT count(*) FROM due, pg_notify($3, '')""",
        connection_id,
        version,
        REFRESH_WANTED,
    )
    return bool(marked)


async def release_lease(
    db: asyncpg.Connection | asyncpg.Pool, connection_id: str, holder: str
) -> None:
    """Only the holder can release its lease."""
    await db.execute(
        """UPDATE connections SET lease_holder = NULL, lease_until = NULL
           WHERE id = $1 AND lease_holder = $2""",
        connection_id,
        holder,
    )


async def wake_workers(db: asyncpg.Connection | asyncpg.Pool) -> None:
    """Tell every worker to claim now (at commit, when inside a transaction)."""
    await db.execute("SELECT pg_notify($1, '')", REFRESH_WANTED)
