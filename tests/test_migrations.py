"""Schema migrations (storage/migrate.py) against databases created here for each test.

What an operator relies on: `authbroker migrate` (and every start) applies what is missing once,
records it, is safe to run from several processes at the same moment, and leaves the schema the
scheduler's query depends on (the partial index `connections_refresh_due`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from storage import leases
from storage.migrate import available, migrate
from tests.databases import private_database


@pytest.fixture
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    """The DSN of an empty database of this test alone, dropped afterwards."""
    async with private_database(admin_dsn, purpose="migrations", migrated=False) as url:
        yield url


@pytest.fixture
async def connect(
    fresh_database: str,
) -> AsyncIterator[Callable[[], Awaitable[asyncpg.Connection]]]:
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(fresh_database)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


EXPECTED_TABLES = {
    "apps",
    "basic_credentials",
    "connections",
    "authorizations",
    "outbox",
    "api_keys",
    "credential_reads",
    "schema_migrations",
}


def test_migration_files_are_numbered_from_one() -> None:
    found = available()
    assert found, "no migrations shipped with the package"
    assert found[0].version == 1 and found[0].name == "initial"
    assert [m.version for m in found] == sorted({m.version for m in found})


async def test_migrate_applies_and_records_then_does_nothing(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    conn = await connect()
    applied = await migrate(conn)
    assert [m.version for m in applied] == [m.version for m in available()]
    assert applied[0].version == 1
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in available()]
    assert all(r["applied_at"] is not None for r in rows)

    assert await migrate(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(available())

    # A new process (another connection) finds the schema up to date as well.
    assert await migrate(await connect()) == []


async def test_migrate_leaves_no_advisory_lock_behind(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    conn = await connect()
    await migrate(conn)
    held = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    assert held == 0


async def test_concurrent_migrations_apply_the_schema_once(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    conns = [await connect() for _ in range(3)]
    results = await asyncio.gather(*(migrate(c) for c in conns))
    applied = [m.version for result in results for m in result]
    assert sorted(applied) == [m.version for m in available()]
    assert sum(1 for result in results if result) == 1
    counts = await conns[0].fetch(
        "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version"
    )
    assert all(r["n"] == 1 for r in counts)
    assert len(counts) == len(available())


async def test_expected_tables_and_indexes_exist(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    conn = await connect()
    await migrate(conn)
    tables = {
        r["table_name"]
        for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    assert tables >= EXPECTED_TABLES

    indexdef = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'connections'"
        " AND indexname = 'connections_refresh_due'"
    )
    assert indexdef is not None, "partial index connections_refresh_due is missing"
    assert "(refresh_at)" in indexdef
    assert "WHERE" in indexdef
    assert "'active'" in indexdef and "'pending'" in indexdef  # service connections' first
    assert "refresh_at IS NOT NULL" in indexdef
    # The engine's claim can use it (its cost follows the due rows, not the table).
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetch(f"EXPLAIN {leases.CLAIM_DUE}", "holder", 15.0, 100)
    assert "connections_refresh_due" in "\n".join(r[0] for r in plan)


async def test_secret_columns_are_bytea(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    """Every column holding a secret stores sealed bytes, never text."""
    conn = await connect()
    await migrate(conn)
    types = {
        (r["table_name"], r["column_name"]): r["data_type"]
        for r in await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        )
    }
    for column in [
        ("apps", "client_secret"),
        ("apps", "client_secrets_previous"),
        ("apps", "client_keys"),
        ("basic_credentials", "password"),
        ("connections", "access_token"),
        ("connections", "refresh_token"),
        ("connections", "extra"),
        ("authorizations", "code_verifier"),
        ("authorizations", "code"),
        ("api_keys", "key_hash"),
    ]:
        assert types[column] == "bytea", column


def _index_names(plan: object) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            found.add(plan["Index Name"])
        for value in plan.values():
            found |= _index_names(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _index_names(value)
    return found


async def test_scheduler_query_uses_the_partial_index(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    conn = await connect()
    await migrate(conn)
    app_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO apps (id, name, client_id, authorization_url, token_url)
           VALUES ($1, 'planner-app', 'cid', 'https://p.example.com/a', 'https://p.example.com/t')""",
        app_id,
    )
    # 20,000 active connections due in the future, and as many that are not active: enough rows
    # that the planner picks the partial index on its own (no enable_seqscan tricks).
    await conn.execute(
        """INSERT INTO connections (id, app_id, status, refresh_at)
           SELECT 'active-' || i, $1, 'active', now() + make_interval(mins => 10 + i % 5000)
           FROM generate_series(1, 20000) AS i""",
        app_id,
    )
    await conn.execute(
        """INSERT INTO connections (id, app_id, status, refresh_at)
           SELECT 'other-' || i, $1, CASE WHEN i % 2 = 0 THEN 'pending' ELSE 'revoked' END, NULL
           FROM generate_series(1, 20000) AS i""",
        app_id,
    )
    await conn.execute("ANALYZE connections")
    query = """SELECT id FROM connections
               WHERE status = 'active' AND refresh_at IS NOT NULL AND refresh_at <= now()
               ORDER BY refresh_at LIMIT 100"""
    plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}"))
    assert "connections_refresh_due" in _index_names(plan), json.dumps(plan, indent=1)
    # And the query answers what the scheduler expects: nothing is due yet.
    assert await conn.fetch(query) == []
    await conn.execute(
        "UPDATE connections SET refresh_at = now() - interval '1 minute' WHERE id = 'active-7'"
    )
    assert [r["id"] for r in await conn.fetch(query)] == ["active-7"]


async def test_keys_made_before_roles_become_admin_keys(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> None:
    """0003 gives every existing key the role it had in effect (everything); new keys must name
    theirs."""
    conn = await connect()
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in available():
        if migration.version >= 3:
            break
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            migration.version,
            migration.name,
        )
    await conn.execute(
        "INSERT INTO api_keys (id, name, key_hash) VALUES ('old1', 'ops', '\\x00'::bytea)"
    )
    applied = await migrate(conn)
    assert 3 in [m.version for m in applied]
    row = await conn.fetchrow("SELECT role, apps FROM api_keys WHERE id = 'old1'")
    assert row["role"] == "admin" and row["apps"] is None
    with pytest.raises(asyncpg.NotNullViolationError):
        await conn.execute(
            "INSERT INTO api_keys (id, name, key_hash) VALUES ('new1', 'x', '\\x00'::bytea)"
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO api_keys (id, name, key_hash, role) VALUES ('new2', 'x', '\\x00', 'root')"
        )
