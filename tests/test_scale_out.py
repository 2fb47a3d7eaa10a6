"""Scale-out: three worker processes and two web processes (`authbroker web --workers 2`: one
command, two processes on one port) against this run's Postgres and Redis, and 500 connections
that fall due at once at a real django-oauth-toolkit server of this module's own.

Every connection is refreshed exactly once (counted at the server: 500 successful refresh
requests, none refused) and every event reaches a consumer group exactly once.

The processes use this run's Postgres and Redis servers, but a database and a Redis prefix of
this module's own: the session's in-process `worker` (started by earlier tests when the whole
suite runs, with the 5 s provider timeout of the `settings` fixture) schedules refreshes from
the database it shares, so it would take part as a fourth worker with another timeout; and
these workers would pick up the other tests' jobs. Here exactly three workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from authbroker.config import Settings
from authbroker.embedded import free_port
from storage import api_keys, connections
from storage.pool import create_pool
from storage.sealing import KeyRing
from tests.databases import private_database
from tests.helpers import create_oauth_app, follow_callback, start_connection
from tests.oauth_server import OAuthTestServer

CONNECTIONS = 500
WORKERS = 3
WEB_PROCESSES = 2
AUTHORIZE_AT_ONCE = 12
AUTHBROKER = str(Path(sys.executable).parent / "authbroker")


# ---------------------------------------------------------------- processes


def process_env(settings: Settings, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a real `authbroker` process on these settings' database, Redis,
    prefix and keys."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")},
        "AUTHBROKER_ENV": "test",
        "AUTHBROKER_DATABASE_URL": settings.database_url or "",
        "AUTHBROKER_REDIS_URL": settings.redis_url or "",
        "AUTHBROKER_REDIS_PREFIX": settings.redis_prefix,
        "AUTHBROKER_ENCRYPTION_KEYS": settings.encryption_keys or "",
        "AUTHBROKER_DATA_DIR": str(workdir / "scale-data"),
        "AUTHBROKER_HOST": "127.0.0.1",
        # Generous: a provider answer lost to a timeout would rotate a token behind our back.
        "AUTHBROKER_PROVIDER_TIMEOUT": "30",
        "AUTHBROKER_LOG_LEVEL": "warning",
        "AUTHBROKER_LOG_FORMAT": "json",
        **extra,
    }


class Processes:
    """Started `authbroker` processes, each logging to a file; all stopped on exit, whatever
    happened (SIGTERM, then SIGKILL for any still running after `grace` seconds)."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        logdir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        try:
            process = subprocess.Popen(
                [AUTHBROKER, *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()  # the child has its own descriptor
        self.started.append((name, process))
        return process

    def logs(self) -> str:
        parts = []
        for name, _ in self.started:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name}\n{text[-3000:]}")
        return "\n".join(parts)

    def check_running(self) -> None:
        dead = [(n, p.returncode) for n, p in self.started if p.poll() is not None]
        assert not dead, f"processes exited: {dead}\n{self.logs()}"

    def stop(self, grace: float = 30.0) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc: Linux, like SO_REUSEPORT)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_http(url: str, processes: Processes, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            processes.check_running()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s\n{processes.logs()}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def scale_settings(settings: Settings, admin_dsn: str) -> Any:
    """This run's servers and keys, with a database and a Redis prefix of this module's own
    (the database is dropped at the end; the `redis` fixture deletes the run's keys, these
    included)."""
    async with private_database(admin_dsn, purpose="scale") as url:
        yield settings.replace(database_url=url, redis_prefix=f"{settings.redis_prefix}-scale")


@pytest.fixture(scope="module")
async def scale_pool(scale_settings: Settings) -> Any:
    pool = await create_pool(scale_settings.database_url or "")
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def scale_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def scale_server(workdir: Path, scale_port: int) -> Any:
    """A provider of this module's own (its counts are this module's alone), registered for
    the redirect URL of the web processes started here."""
    server = OAuthTestServer(workdir / "oauth-scale", access_token_lifetime=3600)
    server.start(f"http://127.0.0.1:{scale_port}/oauth/callback")
    yield server
    server.stop()


async def refresh_counts(server: OAuthTestServer) -> dict[str, int]:
    return (await server.stats()).get("token_requests", {}).get("refresh_token", {})


# ---------------------------------------------------------------- the test


async def test_three_workers_two_web_processes_refresh_each_connection_once(
    scale_server, scale_port, scale_settings, scale_pool, workdir, redis
):
    base = f"http://127.0.0.1:{scale_port}"
    processes = Processes(workdir / "scale-logs")
    try:
        web = processes.start(
            "web",
            ["web", "--workers", str(WEB_PROCESSES)],
            process_env(
                scale_settings, workdir, AUTHBROKER_PORT=str(scale_port), AUTHBROKER_PUBLIC_URL=base
            ),
        )
        metrics_ports = [free_port() for _ in range(WORKERS)]
        for i, port in enumerate(metrics_ports):
            processes.start(
                f"worker-{i + 1}",
                ["worker", "--concurrency", "20"],
                process_env(scale_settings, workdir, AUTHBROKER_METRICS_PORT=str(port)),
            )
        await wait_http(f"{base}/readyz", processes)
        for port in metrics_ports:  # a worker serves its metrics once it has started
            await wait_http(f"http://127.0.0.1:{port}/metrics", processes)
        web_children = children_of(web.pid)
        assert len(web_children) == WEB_PROCESSES, web_children

        _, key = await api_keys.create(scale_pool, "scale-out")
        async with aiohttp.ClientSession(
            base_url=base,
            headers={"Authorization": f"Bearer {key}"},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as api:
            ids = await authorize_all(api, scale_server)
        processes.check_running()

        workers = [p.pid for name, p in processes.started if name.startswith("worker")]
        try:
            await measure_and_check_refreshes(
                scale_server, scale_pool, redis, scale_settings, ids, workers
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{processes.logs()}") from None
        processes.check_running()
        assert all(alive(pid) for pid in web_children)

        # SIGTERM to the web command stops both of its processes, within 10 s, cleanly.
        web.send_signal(signal.SIGTERM)
        assert web.wait(timeout=12) == 0, processes.logs()
        assert not any(alive(pid) for pid in web_children)
    finally:
        processes.stop()
    assert all(p.returncode == 0 for _, p in processes.started), processes.logs()


async def authorize_all(api: aiohttp.ClientSession, server: OAuthTestServer) -> list[str]:
    """Authorize CONNECTIONS connections through the real API and the provider's consent
    page, a few at a time. Each slot keeps a browser session (its cookie jar), so the user
    logs in once per slot and then only consents."""
    app = f"scale-{secrets.token_hex(4)}"
    created = await create_oauth_app(api, server, app)
    assert created["redirect_url"] == server.redirect_uri
    ids = [f"{app}-{i:04d}" for i in range(CONNECTIONS)]
    browsers: asyncio.Queue[aiohttp.ClientSession] = asyncio.Queue()
    opened = []
    for _ in range(AUTHORIZE_AT_ONCE):
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=60)
        )
        opened.append(session)
        browsers.put_nowait(session)

    async def one(cid: str) -> None:
        browser = await browsers.get()
        try:
            started = await start_connection(api, app, connection_id=cid)
            location = await server.approve(started["authorize_url"], session=browser)
            status, outcome = await follow_callback(api, location)
            assert status == 200, outcome
            # The page waits a few seconds for the exchange; a busy worker may take longer.
            assert outcome["status"] in {"succeeded", "pending"}, outcome
        finally:
            browsers.put_nowait(browser)

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(cid) for cid in ids))
    finally:
        for session in opened:
            await session.close()
    elapsed = time.monotonic() - started
    print(f"\nauthorized {len(ids)} connections in {elapsed:.1f} s")
    return ids


async def measure_and_check_refreshes(
    server: OAuthTestServer,
    pool: asyncpg.Pool,
    redis,
    settings: Settings,
    ids: list[str],
    workers: list[int],
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        active = await pool.fetchval(
            "SELECT count(*) FROM connections WHERE id = ANY($1) AND status = 'active'", ids
        )
        if active == len(ids):
            break
        await asyncio.sleep(0.2)
    assert active == len(ids), "not every exchange finished"
    assert not await pool.fetchval(
        "SELECT count(*) FROM connections WHERE id = ANY($1) AND last_refresh_at IS NOT NULL", ids
    )

    # A consumer group that starts right after the last event so far (the authorizations'
    # events are in the stream by then): it sees the refreshes and only them.
    await wait_relayed(pool, ids)
    stream = settings.events_stream
    group = f"scale-{secrets.token_hex(4)}"
    last = await redis.xrevrange(stream, count=1)
    await redis.xgroup_create(stream, group, id=last[0][0] if last else "0-0", mkstream=True)
    before = await refresh_counts(server)

    # All due at once; three worker processes race for them.
    cpu_before = cpu_seconds(workers)
    started = time.monotonic()
    await pool.execute("UPDATE connections SET refresh_at = now() WHERE id = ANY($1)", ids)
    deadline = started + 90
    pending = len(ids)
    while time.monotonic() < deadline:
        pending = await pool.fetchval(
            "SELECT count(*) FROM connections WHERE id = ANY($1) AND last_refresh_at IS NULL", ids
        )
        if pending == 0:
            break
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(workers) - cpu_before
    if pending:
        stuck = await pool.fetch(
            """SELECT id, status, problem, refresh_at, lease_holder, lease_until,
                      failed_attempts, last_error
               FROM connections WHERE id = ANY($1) AND last_refresh_at IS NULL""",
            ids,
        )
        counts = await refresh_counts(server)
        raise AssertionError(
            f"{pending} connections not refreshed within 90 s (provider refresh counts "
            f"{before} -> {counts}):\n" + "\n".join(str(dict(row)) for row in stuck[:10])
        )
    span = await pool.fetchval(
        """SELECT extract(epoch FROM max(last_refresh_at) - min(last_refresh_at))
           FROM connections WHERE id = ANY($1)""",
        ids,
    )
    print(
        f"refreshed {len(ids)} connections with {WORKERS} workers in {elapsed:.1f} s: "
        f"{len(ids) / elapsed:.0f}/s from due to done; first to last refresh "
        f"{float(span):.1f} s ({len(ids) / max(float(span), 0.001):.0f}/s); worker CPU "
        f"{cpu:.1f} s, {cpu / len(ids) * 1000:.1f} ms per refresh"
    )

    # Counted at the provider: one successful refresh per connection, none refused.
    after = await refresh_counts(server)
    assert after.get("200", 0) - before.get("200", 0) == len(ids), (before, after)
    assert after.get("400", 0) == before.get("400", 0), (before, after)
    assert set(after) <= {"200", "400"}, after
    statuses = await pool.fetch(
        "SELECT status, count(*) FROM connections WHERE id = ANY($1) GROUP BY status", ids
    )
    assert {r["status"]: r["count"] for r in statuses} == {"active": len(ids)}
    # The stored tokens are the provider's live ones.
    ring = KeyRing.parse(settings.encryption_keys or "")
    await check_tokens_live(server, pool, ring, ids[:: len(ids) // 5])

    # Every event reaches the group once: wait until the outbox has relayed them all, then
    # read the group with two consumers at once.
    await wait_relayed(pool, ids)
    read = await asyncio.gather(*(consume(redis, stream, group, f"c{i}") for i in (1, 2)))
    entries = [entry for consumer in read for entry in consumer]
    mine = [event for _, event in entries if event["connection_id"] in set(ids)]
    by_id = Counter(event["id"] for event in mine)
    assert [eid for eid, n in by_id.items() if n > 1] == [], "an event was delivered twice"
    assert len({entry_id for entry_id, _ in entries}) == len(entries)
    refreshed = Counter(e["connection_id"] for e in mine if e["type"] == "connection.refreshed")
    assert set(refreshed) == set(ids)
    assert set(refreshed.values()) == {1}
    assert not [e for e in mine if e["type"] not in {"connection.refreshed"}], Counter(
        e["type"] for e in mine
    )
    pending_info = await redis.xpending(stream, group)
    assert pending_info["pending"] == 0


async def wait_relayed(pool, ids: list[str], timeout: float = 30.0) -> None:
    """Until the relay has moved every outbox event of these connections to Redis."""
    deadline = time.monotonic() + timeout
    while True:
        unrelayed = await pool.fetchval(
            """SELECT count(*) FROM outbox
               WHERE relayed_at IS NULL AND event ->> 'connection_id' = ANY($1)""",
            ids,
        )
        if unrelayed == 0:
            return
        assert time.monotonic() < deadline, f"{unrelayed} events not relayed in {timeout} s"
        await asyncio.sleep(0.1)


async def consume(redis, stream: str, group: str, consumer: str) -> list[tuple[str, Any]]:
    """Read the group until a read brings nothing, acknowledging each entry."""
    got = []
    while True:
        answer = await redis.xreadgroup(group, consumer, {stream: ">"}, count=100, block=500)
        if not answer:
            return got
        for _, entries in answer:
            for entry_id, fields in entries:
                got.append((entry_id, json.loads(fields["event"])))
                await redis.xack(stream, group, entry_id)


async def check_tokens_live(
    server: OAuthTestServer, pool: asyncpg.Pool, ring: KeyRing, ids: list[str]
) -> None:
    for cid in ids:
        found = await connections.get(pool, cid)
        assert found is not None
        refresh = found.open_refresh_token(ring)
        access = found.open_access_token(ring)
        assert refresh and access
        assert (await server.introspect(refresh))["active"] is True
        status, _ = await server.call_resource(access)
        assert status == 200


# ---------------------------------------------------------------- web --workers failure


async def test_web_workers_a_dying_process_stops_all(scale_settings, workdir):
    """`web --workers 2`: a process that dies on its own makes the command stop the other
    and exit non-zero (for a supervisor to restart it), within the 10 s it promises."""
    port = free_port()
    processes = Processes(workdir / "web-workers-logs")
    try:
        web = processes.start(
            "web-dying",
            ["web", "--workers", "2"],
            process_env(scale_settings, workdir, AUTHBROKER_PORT=str(port)),
        )
        await wait_http(f"http://127.0.0.1:{port}/healthz", processes)
        children = children_of(web.pid)
        assert len(children) == 2, children
        os.kill(children[0], signal.SIGKILL)
        assert web.wait(timeout=12) == 1, processes.logs()
        assert not alive(children[1])
        assert "exited unexpectedly" in processes.logs()
    finally:
        processes.stop()
