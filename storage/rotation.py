"""Re-seal every secret under the first key of the ring, in batches.

Only values sealed under another key are read and rewritten, so a rotation interrupted half way
resumes where it stopped, and a second run finds nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.sealing import KeyRing, aad


@dataclass(frozen=True)
class SealedTable:
    table: str
    key: str  # the row id bound into the associated data
    columns: tuple[str, ...]


SEALED = (
    SealedTable("apps", "id", ("client_secret", "client_secrets_previous", "client_keys")),
    SealedTable("basic_credentials", "name", ("password",)),
    SealedTable("connections", "id", ("access_token", "refresh_token", "extra")),
    SealedTable("authorizations", "id", ("code_verifier", "code")),
    SealedTable("webhooks", "id", ("secret", "previous_secret")),
)


def _stale(column: str) -> str:
    """SQL true when `column` holds a value sealed under a key other than $1."""
    return (
        f"({column} IS NOT NULL AND substring({column} from 3 for get_byte({column}, 1))"
        f" <> convert_to($1, 'UTF8'))"
    )


async def rotate(pool: asyncpg.Pool, ring: KeyRing, *, batch: int = 500) -> dict[str, int]:
    """Return the number of values re-sealed per table."""
    counts: dict[str, int] = {}
    for spec in SEALED:
        stale_any = " OR ".join(_stale(c) for c in spec.columns)
        total = 0
        after = None
        while True:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"""SELECT {spec.key}, {", ".join(spec.columns)} FROM {spec.table}
                        WHERE ({stale_any}) AND ($2::text IS NULL OR {spec.key}::text > $2)
                        ORDER BY {spec.key}::text LIMIT $3 FOR UPDATE""",
                    ring.current_kid,
                    after,
                    batch,
                )
                for row in rows:
                    row_id = row[spec.key]
                    updates = {}
                    for column in spec.columns:
                        value = row[column]
                        if value is None or ring.kid_of(value) == ring.current_kid:
                            continue
                        where = aad(spec.table, row_id, column)
                        updates[column] = ring.seal(ring.open_bytes(value, aad=where), aad=where)
                    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(updates, start=2))
                    await conn.execute(
                        f"UPDATE {spec.table} SET {sets} WHERE {spec.key} = $1",
                        row_id,
                        *updates.values(),
                    )
                    total += len(updates)
            if len(rows) < batch:
                break
            after = str(rows[-1][spec.key])
        counts[spec.table] = total
    return counts
