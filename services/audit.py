"""The credential audit: every read of credentials (a connection's token, a Basic credential's
password) counted per API key, subject and day, and what an operator asks of it.

The credentials request is the hottest path there is, so a read costs a dictionary update: a
web process keeps its counts in memory and adds them to Postgres every few seconds, a few
hundred subjects per statement (`storage.credential_reads.add`), and once more when it stops. A process killed
outright loses at most its last few seconds of counts; counts never exceed the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, date, datetime, timedelta

import asyncpg

from authbroker.logs import get_logger
from services.errors import Invalid
from storage import credential_reads
from storage.credential_reads import Found, Reads

log = get_logger("authbroker.audit")

FLUSH_SECONDS = 2.0
FLUSH_CHUNK = 200
"""Subjects per statement. One statement for thousands of subjects (a busy process reads
thousands of connections in two seconds) held the requests around it back: `make bench`'s
credentials p99 at half the peak rate went from 5-6 ms to 9-37 ms with the flushes on. Chunks
let the requests run between them."""
# Counts kept while Postgres is away; past this many subjects, new ones are dropped (and said).
MAX_PENDING = 100_000
MAX_DAYS = 400
Key = tuple[str, str, str, date]


class CredentialReads:
    """Counts of one process, flushed every `every` seconds while started."""

    def __init__(self, pool: asyncpg.Pool, every: float = FLUSH_SECONDS) -> None:
        self.pool = pool
        self.every = every
        self._pending: dict[Key, list] = {}
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    def count(self, key_id: str, kind: str, subject: str) -> None:
        """One read of `subject` (a connection id, or a Basic credential's name) by a key."""
        now = datetime.now(UTC)
        entry = self._pending.get((key_id, kind, subject, now.date()))
        if entry is not None:
            entry[0] += 1
            entry[2] = now
        elif len(self._pending) < MAX_PENDING:
            self._pending[(key_id, kind, subject, now.date())] = [1, now, now]
        else:
            self._dropped += 1

    async def flush(self) -> None:
        """Add what was counted since the last flush, `FLUSH_CHUNK` subjects per statement; on
        failure keep what was not stored for the next."""
        if not self._pending:
            return
        taken, self._pending = self._pending, {}
        items = list(taken.items())
        for start in range(0, len(items), FLUSH_CHUNK):
            batch = [
                Reads(key_id, kind, subject, day, count, first, last)
                for (key_id, kind, subject, day), (count, first, last) in items[
                    start : start + FLUSH_CHUNK
                ]
            ]
            try:
                await credential_reads.add(self.pool, batch)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                left = items[start:]
                log.warning(
                    "credential_reads_not_stored", reads=len(left), error=type(exc).__name__
                )
                self._keep(left)
                break
        if self._dropped:
            log.warning("credential_reads_dropped", reads=self._dropped)
            self._dropped = 0

    def _keep(self, items: list[tuple[Key, list]]) -> None:
        """Put counts that could not be stored back, merged with those counted meanwhile."""
        for key, (count, first, last) in items:
            entry = self._pending.setdefault(key, [0, first, last])
            entry[0] += count
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="credential-reads")

    async def close(self) -> None:
        """Stop flushing periodically, then flush what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.flush()
            except Exception:  # never let the audit's loop die: log, and go on counting
                log.exception("credential_reads_flush_failed")


async def find(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    key_id: str | None = None,
    connection_id: str | None = None,
    basic: str | None = None,
    days: int = 30,
    limit: int = 1000,
) -> list[Found]:
    """Who read which credentials, per day, newest first: of one key, one connection or one
    Basic credential, or all of them."""
    if connection_id is not None and basic is not None:
        raise Invalid("invalid_request", "give connection or basic, not both")
    for name, value in (("key", key_id), ("connection", connection_id), ("basic", basic)):
        if value is not None and not (len(value) <= 200 and value.isprintable()):
            raise Invalid("invalid_filter", f"{name} must be at most 200 printable characters")
    if not 1 <= days <= MAX_DAYS:
        raise Invalid("invalid_days", f"days must be between 1 and {MAX_DAYS}")
    kind, subject = None, None
    if connection_id is not None:
        kind, subject = "connection", connection_id
    elif basic is not None:
        kind, subject = "basic", basic
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    return await credential_reads.find(
        db, key_id=key_id, kind=kind, subject=subject, since=since, limit=limit
    )
