"""Webhook subscriptions, their deliveries and every attempt; every SQL statement of webhooks.

A delivery is one outbox event for one subscription (`fan_out` makes them, in outbox order,
one worker at a time). Workers `claim` due deliveries for a while (`claimed_until`) without
holding a transaction while they send; the head of each order key (a connection, else an app)
goes first, and the next waits until it is delivered or given up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from storage.sealing import KeyRing, aad

# Wakes every worker's dispatcher: deliveries were made or replayed.
NOTIFY_CHANNEL = "authbroker_webhooks"
# Serialises fan-outs (a transaction-level advisory lock: released at commit, whatever happens).
FAN_OUT_LOCK = 0x61757468_776866

Db = asyncpg.Connection | asyncpg.Pool

COLUMNS = """id, url, description, types, apps, secret, previous_secret,
    CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
        AS previous_secret_expires_at,
    enabled, disabled_reason, disabled_at, created_at, updated_at"""


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    url: str
    description: str | None
    types: list[str] | None
    apps: list[str] | None
    secret: bytes = field(repr=False)
    previous_secret: bytes | None = field(repr=False)
    # When the previous secret stops signing; None when only the current one signs.
    previous_secret_expires_at: datetime | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Attempt:
    id: int
    delivery_id: int
    event_id: str
    event_type: str
    attempt: int
    attempted_at: datetime
    outcome: str
    status_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: uuid.UUID
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker is sending: the event, where to, and the secrets that sign it."""

    id: int
    webhook_id: uuid.UUID
    attempt: int
    event: dict[str, Any]
    url: str
    secret: bytes = field(repr=False)
    previous_secret: bytes | None = field(repr=False)
    first_failed_at: datetime | None
    claimed_at: datetime  # the database's clock, which first_failed_at is on


def secret_aad(webhook_id: uuid.UUID, column: str = "secret") -> str:
    return aad("webhooks", webhook_id, column)


def open_secrets(
    ring: KeyRing, webhook_id: uuid.UUID, sealed: bytes, previous: bytes | None
) -> list[str]:
    """The secrets that sign, the current one first."""
    found = [ring.open(sealed, aad=secret_aad(webhook_id))]
    if previous is not None:
        found.append(ring.open(previous, aad=secret_aad(webhook_id, "previous_secret")))
    return found


# ------------------------------------------------------------------------------ subscriptions


async def create(
    db: Db, ring: KeyRing, webhook_id: uuid.UUID, values: dict[str, Any], secret: str
) -> Webhook:
    row = await db.fetchrow(
        f"""INSERT INTO webhooks (id, url, description, types, apps, secret)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}""",
        webhook_id,
        values["url"],
        values.get("description"),
        values.get("types"),
        values.get("apps"),
        ring.seal(secret, aad=secret_aad(webhook_id)),
    )
    return Webhook(**dict(row))


async def get(db: Db, webhook_id: uuid.UUID) -> Webhook | None:
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM webhooks WHERE id = $1", webhook_id)
    return Webhook(**dict(row)) if row else None


async def list_all(db: Db) -> list[Webhook]:
    rows = await db.fetch(f"SELECT {COLUMNS} FROM webhooks ORDER BY created_at, id")
    return [Webhook(**dict(r)) for r in rows]


async def update(db: Db, webhook_id: uuid.UUID, changes: dict[str, Any]) -> Webhook | None:
    """Change url, description, types or apps (the caller validated them)."""
    allowed = ("url", "description", "types", "apps")
    names = [n for n in allowed if n in changes]
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
    row = await db.fetchrow(
        f"""UPDATE webhooks SET {sets + ", " if sets else ""}updated_at = now()
            WHERE id = $1 RETURNING {COLUMNS}""",
        webhook_id,
        *(changes[n] for n in names),
    )
    return Webhook(**dict(row)) if row else None


async def enable(db: Db, webhook_id: uuid.UUID) -> bool:
    """Resume deliveries, for events from now on; False if it was not disabled."""
    result = await db.execute(
        """UPDATE webhooks SET enabled = true, disabled_reason = NULL, disabled_at = NULL,
               updated_at = now()
           WHERE id = $1 AND NOT enabled""",
        webhook_id,
    )
    return result.endswith(" 1")


async def disable(conn: asyncpg.Connection, webhook_id: uuid.UUID, reason: str) -> bool:
    """Stop deliveries and abandon the pending ones; False if it was already disabled. Run it
    in the transaction that records why (and, given up, the event that says so)."""
    disabled = await conn.fetchval(
        """WITH off AS (
               UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now(),
                   updated_at = now()
               WHERE id = $1 AND enabled RETURNING id
           ), abandoned AS (
               UPDATE webhook_deliveries d SET state = 'abandoned', claimed_until = NULL
               FROM off WHERE d.webhook_id = off.id AND d.state = 'pending'
           )
           SELECT count(*) FROM off""",
        webhook_id,
        reason,
    )
    return bool(disabled)


async def delete(db: Db, webhook_id: uuid.UUID) -> bool:
    result = await db.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    return result.endswith(" 1")


async def rotate(
    conn: asyncpg.Connection,
    ring: KeyRing,
    webhook_id: uuid.UUID,
    secret: str,
    previous_for: float,
) -> Webhook | None:
    """Make `secret` the current one; the one it replaces keeps signing `previous_for` seconds
    (0: dropped now). In a transaction: the current secret is read, opened and sealed again for
    its new column."""
    row = await conn.fetchrow("SELECT secret FROM webhooks WHERE id = $1 FOR UPDATE", webhook_id)
    if row is None:
        return None
    previous = None
    if previous_for > 0:
        current = ring.open(row["secret"], aad=secret_aad(webhook_id))
        previous = ring.seal(current, aad=secret_aad(webhook_id, "previous_secret"))
    updated = await conn.fetchrow(
        f"""UPDATE webhooks SET secret = $2, previous_secret = $3,
               previous_secret_expires_at = CASE WHEN $3::bytea IS NOT NULL
                   THEN now() + make_interval(secs => $4) END,
               updated_at = now()
            WHERE id = $1 RETURNING {COLUMNS}""",
        webhook_id,
        ring.seal(secret, aad=secret_aad(webhook_id)),
        previous,
        float(previous_for),
    )
    return Webhook(**dict(updated))


async def drop_expired_secrets(db: Db) -> int:
    """Forget previous secrets whose rotation window has closed."""
    result = await db.execute(
        """UPDATE webhooks SET previous_secret = NULL, previous_secret_expires_at = NULL
           WHERE previous_secret IS NOT NULL AND previous_secret_expires_at <= now()"""
    )
    return int(result.split()[-1])


# ------------------------------------------------------------------------------ history


ATTEMPT_COLUMNS = """a.id, a.delivery_id, d.event_id, d.event_type, a.attempt, a.attempted_at,
    a.outcome, a.status_code, a.latency_ms, a.error, a.next_attempt_at"""


async def attempts_page(
    db: Db, webhook_id: uuid.UUID, *, after: int | None, limit: int
) -> list[Attempt]:
    """A subscription's attempts, newest first; `after`: the last id of the previous page."""
    rows = await db.fetch(
        f"""SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts a
            JOIN webhook_deliveries d ON d.id = a.delivery_id
            WHERE a.webhook_id = $1 AND ($2::bigint IS NULL OR a.id < $2)
            ORDER BY a.id DESC LIMIT $3""",
        webhook_id,
        after,
        limit,
    )
    return [Attempt(**dict(r)) for r in rows]


async def latest_attempts(
    db: Db, webhook_ids: list[uuid.UUID], per: int
) -> dict[uuid.UUID, list[Attempt]]:
    """The last `per` attempts of each subscription, newest first."""
    rows = await db.fetch(
        f"""SELECT w.id AS webhook_id, {ATTEMPT_COLUMNS}
            FROM unnest($1::uuid[]) AS w(id)
            CROSS JOIN LATERAL (
                SELECT * FROM webhook_attempts WHERE webhook_id = w.id ORDER BY id DESC LIMIT $2
            ) a
            JOIN webhook_deliveries d ON d.id = a.delivery_id
            ORDER BY a.id DESC""",
        webhook_ids,
        per,
    )
    found: dict[uuid.UUID, list[Attempt]] = {}
    for row in rows:
        values = dict(row)
        found.setdefault(values.pop("webhook_id"), []).append(Attempt(**values))
    return found


async def replay(db: Db, webhook_id: uuid.UUID, delivery_id: int) -> Delivery | None:
    """Send a delivery again now, whatever became of it; its retries start afresh."""
    row = await db.fetchrow(
        """WITH again AS (
               UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(),
                   first_failed_at = NULL, claimed_until = NULL
               WHERE id = $2 AND webhook_id = $1
               RETURNING id, webhook_id, event_id, event_type, state, attempts, next_attempt_at,
                   delivered_at
           ), woken AS (SELECT pg_notify($3, '') FROM again)
           SELECT again.* FROM again, (SELECT count(*) FROM woken) w""",
        webhook_id,
        delivery_id,
        NOTIFY_CHANNEL,
    )
    return Delivery(**dict(row)) if row else None


# ------------------------------------------------------------------------------ delivering


async def fan_out(conn: asyncpg.Connection, limit: int) -> tuple[int, int]:
    """Turn up to `limit` new outbox events into deliveries for the enabled subscriptions that
    take them (created before the event, filters matched): (events read, deliveries made). In a
    transaction, which holds the fan-out lock to its end; (0, 0) when another worker holds it."""
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", FAN_OUT_LOCK):
        return 0, 0
    row = await conn.fetchrow(
        """WITH batch AS (
               SELECT id, event, created_at FROM outbox WHERE NOT fanned_out
               ORDER BY id LIMIT $1
           ), marked AS (
               UPDATE outbox o SET fanned_out = true FROM batch WHERE o.id = batch.id
           ), made AS (
               INSERT INTO webhook_deliveries
                   (webhook_id, outbox_id, event_id, event_type, order_key)
               SELECT w.id, b.id, b.event ->> 'id', b.event ->> 'type',
                   coalesce('connection:' || (b.event ->> 'connection_id'),
                            'app:' || (b.event ->> 'app'))
               FROM batch b JOIN webhooks w ON w.enabled AND w.created_at <= b.created_at
               WHERE (w.types IS NULL OR EXISTS (
                       SELECT 1 FROM unnest(w.types) t
                       WHERE t = b.event ->> 'type'
                          OR (right(t, 1) = '.' AND starts_with(b.event ->> 'type', t))))
                 AND (w.apps IS NULL OR (b.event ->> 'app') = ANY (w.apps))
               ORDER BY b.id, w.id
               ON CONFLICT (webhook_id, outbox_id) DO NOTHING
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM batch) AS events, (SELECT count(*) FROM made) AS made""",
        limit,
    )
    if row["made"]:
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return row["events"], row["made"]


async def claim(
    db: Db, limit: int, *, busy: list[uuid.UUID], claim_seconds: float
) -> list[Claimed]:
    """Take up to `limit` due deliveries for `claim_seconds`: of enabled subscriptions not in
    `busy`, each the first pending one of its order key, oldest first."""
    rows = await db.fetch(
        """WITH due AS (
               SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
               WHERE d.state = 'pending' AND d.next_attempt_at <= now()
                 AND (d.claimed_until IS NULL OR d.claimed_until < now())
                 AND w.enabled AND d.webhook_id <> ALL ($2::uuid[])
                 AND NOT EXISTS (
                     SELECT 1 FROM webhook_deliveries e
                     WHERE e.webhook_id = d.webhook_id AND e.order_key = d.order_key
                       AND e.state = 'pending' AND e.outbox_id < d.outbox_id)
               ORDER BY d.next_attempt_at, d.id
               LIMIT $1
               FOR UPDATE OF d SKIP LOCKED
           )
           UPDATE webhook_deliveries d
           SET claimed_until = now() + make_interval(secs => $3), attempts = d.attempts + 1
           FROM due, webhooks w, outbox o
           WHERE d.id = due.id AND w.id = d.webhook_id AND o.id = d.outbox_id
           RETURNING d.id, d.webhook_id, d.attempts AS attempt, o.event, w.url, w.secret,
               CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END
                   AS previous_secret,
               d.first_failed_at, now() AS claimed_at""",
        limit,
        busy,
        claim_seconds,
    )
    return sorted((Claimed(**dict(r)) for r in rows), key=lambda c: c.id)


async def record_attempt(
    conn: asyncpg.Connection,
    claimed: Claimed,
    *,
    outcome: str,
    status_code: int | None,
    latency_ms: float,
    error: str | None,
    retry_in: float | None,
) -> None:
    """Write what an attempt came to: `delivered`, `retrying` (again in `retry_in` seconds) or
    `failed` (given up), with the attempt's row."""
    await conn.execute(
        """WITH d AS (
               UPDATE webhook_deliveries SET
                   state = CASE $2 WHEN 'delivered' THEN 'delivered'
                                   WHEN 'failed' THEN 'failed' ELSE 'pending' END,
                   delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END,
                   first_failed_at = CASE WHEN $2 = 'delivered' THEN NULL
                                          ELSE coalesce(first_failed_at, now()) END,
                   next_attempt_at = now() + make_interval(secs => coalesce($6, 0)),
                   claimed_until = NULL
               WHERE id = $1
               RETURNING id, webhook_id, next_attempt_at
           )
           INSERT INTO webhook_attempts (delivery_id, webhook_id, attempt, outcome, status_code,
               latency_ms, error, next_attempt_at)
           SELECT d.id, d.webhook_id, $7, $2, $3, $4, $5,
               CASE WHEN $2 = 'retrying' THEN d.next_attempt_at END
           FROM d""",
        claimed.id,
        outcome,
        status_code,
        latency_ms,
        error,
        retry_in,
        claimed.attempt,
    )
