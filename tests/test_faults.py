"""Faults: worker processes SIGKILLed mid-storm, Redis and Postgres going away under traffic,
providers failing at random, and a worker stopped while a refresh is in flight. Afterwards
every connection either works or says why not, and nothing is lost beyond what the protocol
itself cannot save (a rotated refresh token whose answer died with the process that got it).

Each test runs on a database of its own (tests/chaos_helpers.py), so no other worker's
scheduler, sweep or relay touches its rows, and its own Redis prefix (or Redis server).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import secrets
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import asyncpg
import pytest
from aioresponses import CallbackResult, aioresponses
from redis.asyncio import Redis

from authbroker.embedded import EmbeddedPostgres, EmbeddedRedis
from handlers import callback
from services import authorizations as authorizations_service
from services.refresh import BACKOFF_CAP, LEASE_SECONDS, refresh_one
from storage import connections, leases
from storage.migrate import migrate
from tests.chaos_helpers import (
    aioresponses_compat,
    holder_prefix,
    open_stack,
    private_database,
    spawn_worker,
    stack_settings,
    wait_until,
)
from tests.helpers import (
    authorize,
    create_oauth_app,
    follow_callback,
    insert_app,
    insert_connection,
    start_connection,
    stored_refresh_token,
)
from tests.oauth_server import OAuthTestServer
from worker.context import CTX_KEY, WorkerContext

MOCK_TOKEN_URL = "https://faults.provider.test/oauth/token"


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


def log_tail(path: Path, size: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:]
    return ""


async def wait_for_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float):
    async def seen() -> bool:
        assert proc.poll() is None, f"worker exited early: {log_tail(path)}"
        return needle in log_tail(path, 200_000)

    assert await wait_until(seen, timeout=timeout, interval=0.05), log_tail(path)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class RotatingProvider:
    """A token endpoint (for aioresponses) with one-time refresh tokens, grace period 0: each
    refresh token works once; a reused one is refused with invalid_grant. With `fault_rate`,
    that share of requests fails BEFORE the provider processes it (nothing rotates), in one of
    the ways real providers fail; the choice is seeded per connection and attempt."""

    FAULTS = ("500", "503_json", "429", "timeout", "disconnect", "truncated", "non_json", "empty")
    # Answers that are no token response at all (not an outage): named `provider_error`.
    MALFORMED = frozenset({"truncated", "non_json", "empty"})

    def __init__(self, *, fault_rate: float = 0.0, seed: int = 0, delay: float = 0.0):
        self.fault_rate = fault_rate
        self.seed = seed
        self.delay = delay
        self.owner: dict[str, str] = {}  # live refresh token -> connection id
        self.current: dict[str, str] = {}  # connection id -> its live refresh token
        self.attempts: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.last: dict[str, tuple[str, float | None, datetime]] = {}  # cid -> (kind, RA, at)
        self.refused = 0
        self.issued = 0
        self.entered = asyncio.Event()

    def grant(self, connection_id: str) -> str:
        token = f"rt-{connection_id}-{secrets.token_hex(6)}"
        self.owner[token] = connection_id
        self.current[connection_id] = token
        return token

    async def respond(self, url: Any, **kwargs: Any) -> CallbackResult:
        self.entered.set()
        form = dict(parse_qsl((kwargs.get("data") or b"").decode()))
        token = form.get("refresh_token", "")
        cid = self.owner.get(token, "?")
        at = datetime.now(UTC)
        self.attempts[cid] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        rng = random.Random(f"{self.seed}:{cid}:{self.attempts[cid]}")
        if rng.random() < self.fault_rate:
            kind = rng.choice(self.FAULTS)
            self.faults[kind] += 1
            retry_after = float(rng.randint(30, 600)) if kind == "429" else None
            self.last[cid] = (kind, retry_after, at)
            return self._fault(kind, retry_after)
        if self.owner.pop(token, None) is None:
            self.refused += 1
            self.last[cid] = ("invalid_grant", None, at)
            return CallbackResult(status=400, payload={"error": "invalid_grant"})
        new = self.grant(cid)
        self.issued += 1
        self.last[cid] = ("ok", None, at)
        return CallbackResult(
            status=200,
            payload={
                "access_token": f"at-{secrets.token_hex(8)}",
                "token_type": "bearer",
                "expires_in": 3600,
                "refresh_token": new,
                "scope": "read",
            },
        )

    @staticmethod
    def _fault(kind: str, retry_after: float | None) -> CallbackResult:
        if kind == "500":
            return CallbackResult(
                status=500, body="<html>Internal error</html>", content_type="text/html"
            )
        if kind == "503_json":
            return CallbackResult(status=503, payload={"error": "temporarily_unavailable"})
        if kind == "429":
            return CallbackResult(
                status=429,
                payload={"error": "rate_limited"},
                headers={"Retry-After": f"{retry_after:g}"},
            )
        if kind == "timeout":
            raise TimeoutError
        if kind == "disconnect":
            raise aiohttp.ServerDisconnectedError()
        if kind == "truncated":
            return CallbackResult(
                status=200,
                body='{"access_token": "at-cut", "token_type": "bearer", "refresh_to',
                content_type="application/json",
            )
        if kind == "non_json":
            return CallbackResult(
                status=200, body="<html>Down for maintenance</html>", content_type="text/html"
            )
        return CallbackResult(status=200, body="", content_type="application/json")


# --------------------------------------------------------------------------------------------
# Worker SIGKILLed during a refresh storm
# --------------------------------------------------------------------------------------------

STORM_CONNECTIONS = 40
KILLS = 3
PROCESS_CONCURRENCY = 10


async def test_sigkill_during_refresh_storm_loses_only_refreshes_in_flight(
    admin_dsn, settings, ring, workdir, unique
):
    """A worker process is SIGKILLed three times, at random moments 0.1-0.5 s into a storm of
    refreshes against the real rotating server (grace period 0), and a new one starts each
    time. Nothing is cleaned up by hand: the killed processes' leases lapse by themselves
    (they were renewed to at most LEASE_SECONDS ahead) and the survivors take over.

    Afterwards every connection either works (active, its refresh token accepted by the
    server) or names what happened (`rotation_lost`: the server rotated the token, its answer
    died with the process); a lost one must have been in flight in a killed process."""
    rng = random.Random(20240808)
    prefix = unique("kill")
    logs = workdir / f"{prefix}.log"
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(settings, prefix=prefix, database_url=database_url)
        server = OAuthTestServer(workdir / prefix, access_token_lifetime=3600)
        server.start(s.redirect_url)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            async with open_stack(s, ring, concurrency=10) as stack:
                api, browser = stack.api(), stack.browser()
                await create_oauth_app(api, server, prefix)
                ids = [f"{prefix}-{i}" for i in range(STORM_CONNECTIONS)]
                gate = asyncio.Semaphore(8)

                async def one(cid: str) -> None:
                    async with gate:
                        await authorize(api, browser, server, prefix, cid)

                await asyncio.gather(*(one(cid) for cid in ids))
                await stack.stop_worker()  # from here on only the worker processes refresh
                pool = stack.resources.pool
                refreshes_before = (await server.stats())["token_requests"].get("refresh_token", {})
                assert refreshes_before == {}

                in_flight: list[set[str]] = []
                for _ in range(KILLS):
                    proc = spawn_worker(s, concurrency=PROCESS_CONCURRENCY, log_path=logs)
                    processes.append(proc)
                    mine = holder_prefix(proc.pid) + "%"
                    await wait_for_log(logs, f'"worker_id": "{holder_prefix(proc.pid)}', proc, 30)
                    round_start = await pool.fetchval("SELECT now()")
                    # The storm: every connection not leased right now is due.
                    await pool.execute(
                        """UPDATE connections SET refresh_at = now()
                           WHERE id = ANY($1) AND status = 'active'
                             AND (lease_holder IS NULL OR lease_until < now())""",
                        ids,
                    )

                    async def started(mine: str = mine, since: datetime = round_start) -> bool:
                        return bool(
                            await pool.fetchval(
                                """SELECT count(*) FROM connections WHERE id = ANY($1)
                                   AND (lease_holder LIKE $2 OR last_refresh_at >= $3)""",
                                ids,
                                mine,
                                since,
                            )
                        )

                    assert await wait_until(started, timeout=60, interval=0.01), log_tail(logs)
                    await asyncio.sleep(rng.uniform(0.1, 0.5))
                    proc.kill()
                    proc.wait(timeout=10)
                    held = await pool.fetch(
                        """SELECT id, lease_until - now() AS left FROM connections
                           WHERE id = ANY($1) AND lease_holder LIKE $2""",
                        ids,
                        mine,
                    )
                    in_flight.append({r["id"] for r in held})
                    # A dead holder's lease lapses by itself, soon: never more than a lease's
                    # length after the holder's last renewal.
                    for r in held:
                        assert r["left"] <= timedelta(seconds=LEASE_SECONDS), dict(r)

                final = spawn_worker(s, concurrency=PROCESS_CONCURRENCY, log_path=logs)
                processes.append(final)
                await pool.execute(
                    """UPDATE connections SET refresh_at = now()
                       WHERE id = ANY($1) AND status = 'active'""",
                    ids,
                )

                async def settled() -> bool:
                    pending = await pool.fetchval(
                        """SELECT count(*) FROM connections WHERE id = ANY($1)
                           AND (lease_holder IS NOT NULL
                                OR (status = 'active' AND refresh_at <= now()))""",
                        ids,
                    )
                    return pending == 0

                if not await wait_until(settled, timeout=120, interval=0.2):
                    stuck = await pool.fetch(
                        """SELECT id, lease_holder, lease_until, refresh_at FROM connections
                           WHERE id = ANY($1) AND (lease_holder IS NOT NULL
                                OR (status = 'active' AND refresh_at <= now()))""",
                        ids,
                    )
                    raise AssertionError(f"{[dict(r) for r in stuck]}\n{log_tail(logs)}")
                stop_process(final)

                rows = await pool.fetch(
                    "SELECT id, status, problem FROM connections WHERE id = ANY($1)", ids
                )
                stats = (await server.stats())["token_requests"].get("refresh_token", {})
                lost = set()
                for row in rows:
                    if row["status"] == "active":
                        assert row["problem"] is None, dict(row)
                        token = await stored_refresh_token(stack.resources, row["id"])
                        assert token, row
                        seen = await server.introspect(token)
                        # Never silently broken: active means the server takes its token.
                        assert seen["active"] is True, (row["id"], seen)
                    else:
                        # The server rotated the token and its answer died with the process:
                        # named as such, not as a revoked grant.
                        assert row["status"] == "failed", dict(row)
                        assert row["problem"] == "rotation_lost", dict(row)
                        lost.add(row["id"])
                lost_per_kill = [len(lost & held) for held in in_flight]
                print(
                    f"\nSIGKILL storm: in flight at each kill {[len(h) for h in in_flight]}, "
                    f"lost per kill {lost_per_kill}, refresh requests at the server {stats}"
                )
                # Only connections in flight in a killed process are lost...
                assert lost <= set().union(*in_flight), lost - set().union(*in_flight)
                for held, count in zip(in_flight, lost_per_kill, strict=True):
                    assert count <= len(held) <= PROCESS_CONCURRENCY
                # ...and each of them was refused at the server, so a failed connection is one
                # whose token the server really rotated away.
                assert stats.get("400", 0) == len(lost)
                events = await pool.fetch(
                    """SELECT event FROM outbox WHERE event->>'type' = 'connection.invalidated'
                       AND event->>'connection_id' = ANY($1)""",
                    ids,
                )
                assert sorted(e["event"]["connection_id"] for e in events) == sorted(lost)
                assert {e["event"]["problem"] for e in events} <= {"rotation_lost"}
        finally:
            for proc in processes:
                stop_process(proc)
            server.stop()


# --------------------------------------------------------------------------------------------
# Redis unreachable while callbacks arrive
# --------------------------------------------------------------------------------------------

OUTAGE = 10.0


async def test_callbacks_during_a_redis_outage_are_answered_then_exchanged_and_relayed(
    admin_dsn, settings, ring, workdir, unique, oauth_server, monkeypatch
):
    """Five users come back from the provider while Redis is down for ten seconds: each gets
    an answer that is not a 5xx, each code is stored; once Redis is back every code is
    exchanged (the worker's sweep) and every event reaches the stream.

    Here the in-process worker is restarted after Redis is back; that a worker process rides
    out an outage by itself is test_worker_process_survives_a_short_redis_outage."""
    monkeypatch.setattr(callback, "WAIT_FOR_OUTCOME", 1.0)
    monkeypatch.setattr(authorizations_service, "STRANDED_AFTER", 1.0)
    prefix = unique("redis-down")
    redis_server = EmbeddedRedis(workdir / prefix, persist=False)
    redis_url = redis_server.start()
    try:
        async with private_database(admin_dsn) as database_url:
            s = stack_settings(
                settings, prefix=prefix, database_url=database_url, redis_url=redis_url
            )
            client_id, client_secret = oauth_server.create_application(s.redirect_url, name=prefix)
            async with open_stack(s, ring) as stack:
                api, browser = stack.api(), stack.browser()
                await create_oauth_app(
                    api, oauth_server, prefix, client_id=client_id, client_secret=client_secret
                )
                ids = [f"{prefix}-{i}" for i in range(5)]
                locations = []
                for cid in ids:
                    started = await start_connection(api, prefix, connection_id=cid)
                    locations.append(await oauth_server.approve(started["authorize_url"]))

                # What was relayed before the outage dies with this Redis (it keeps nothing):
                # the events to compare are those written from here on.
                last_before = await stack.resources.pool.fetchval(
                    "SELECT coalesce(max(id), 0) FROM outbox"
                )
                redis_server.stop()
                outage_started = time.monotonic()

                async def come_back(i: int, location: str) -> tuple[int, Any]:
                    await asyncio.sleep(i * 1.5)  # spread over the outage
                    return await follow_callback(browser, location)

                answers = await asyncio.gather(
                    *(come_back(i, loc) for i, loc in enumerate(locations))
                )
                async with browser.get("/readyz") as response:
                    ready_during = (response.status, await response.json())
                await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - outage_started)))
                redis_server.start()  # the same port: EmbeddedRedis keeps it

                for status, body in answers:
                    assert status < 500 and status == 200, body
                    assert body["status"] == "pending", body
                assert ready_during[0] == 503 and "redis" in ready_during[1]["message"]
                stored = await stack.resources.pool.fetch(
                    """SELECT code IS NOT NULL AS has_code, done FROM authorizations
                       WHERE connection_id = ANY($1)""",
                    ids,
                )
                assert len(stored) == 5
                assert all(r["has_code"] and not r["done"] for r in stored)

                await stack.stop_worker(grace=1)
                await stack.start_worker()
                pool = stack.resources.pool

                async def all_active() -> bool:
                    return (
                        await pool.fetchval(
                            """SELECT count(*) FROM connections
                               WHERE id = ANY($1) AND status = 'active'""",
                            ids,
                        )
                        == 5
                    )

                assert await wait_until(all_active, timeout=30, interval=0.2)

                async def all_relayed() -> bool:
                    return not await pool.fetchval(
                        """SELECT count(*) FROM outbox WHERE event->>'connection_id' = ANY($1)
                           AND relayed_at IS NULL""",
                        ids,
                    )

                assert await wait_until(all_relayed, timeout=15, interval=0.2)
                outbox_ids = {
                    r["id"]
                    for r in await pool.fetch(
                        """SELECT event->>'id' AS id FROM outbox
                           WHERE event->>'connection_id' = ANY($1) AND id > $2""",
                        ids,
                        last_before,
                    )
                }
                async with Redis.from_url(redis_url, decode_responses=True) as redis:
                    entries = await redis.xrange(s.events_stream)
                streamed = [json.loads(fields["event"]) for _, fields in entries]
                stream_ids = {e["id"] for e in streamed if e["connection_id"] in ids}
                assert stream_ids == outbox_ids
                authorized = {
                    e["connection_id"] for e in streamed if e["type"] == "connection.authorized"
                }
                assert authorized == set(ids)
    finally:
        redis_server.stop()


async def test_worker_process_survives_a_short_redis_outage(
    admin_dsn, settings, ring, workdir, unique, oauth_server
):
    prefix = unique("redis-blip")
    logs = workdir / f"{prefix}.log"
    redis_server = EmbeddedRedis(workdir / prefix, persist=False)
    redis_url = redis_server.start()
    proc = None
    try:
        async with private_database(admin_dsn) as database_url:
            s = stack_settings(
                settings, prefix=prefix, database_url=database_url, redis_url=redis_url
            )
            client_id, client_secret = oauth_server.create_application(s.redirect_url, name=prefix)
            async with open_stack(s, ring, worker=False) as stack:
                api, browser = stack.api(), stack.browser()
                await create_oauth_app(
                    api, oauth_server, prefix, client_id=client_id, client_secret=client_secret
                )
                proc = spawn_worker(s, concurrency=4, log_path=logs)
                await wait_for_log(logs, "worker_started", proc, 30)
                redis_server.stop()
                await asyncio.sleep(3)
                redis_server.start()
                await asyncio.sleep(1)
                assert proc.poll() is None, f"the worker exited: {log_tail(logs, 1500)}"
                # And it still does its work: a new authorization is exchanged.
                await authorize(api, browser, oauth_server, prefix, f"{prefix}-1")
    finally:
        if proc is not None:
            stop_process(proc)
        redis_server.stop()


# --------------------------------------------------------------------------------------------
# Postgres restarted under load
# --------------------------------------------------------------------------------------------


async def test_web_and_worker_recover_from_a_postgres_restart(
    settings, ring, workdir, unique, oauth_server
):
    """A private Postgres server is stopped and started again while API requests run. Without
    restarting either, the web side answers /readyz 200 and API requests again, and the worker
    exchanges a new authorization, refreshes on demand and relays the events."""
    prefix = unique("pg-restart")
    postgres = EmbeddedPostgres(workdir / prefix / "postgres", database="authbroker")
    database_url = await asyncio.to_thread(postgres.start)
    try:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        s = stack_settings(settings, prefix=prefix, database_url=database_url)
        client_id, client_secret = oauth_server.create_application(s.redirect_url, name=prefix)
        async with open_stack(s, ring) as stack:
            api, browser = stack.api(), stack.browser()
            await create_oauth_app(
                api, oauth_server, prefix, client_id=client_id, client_secret=client_secret
            )
            first = f"{prefix}-1"
            await authorize(api, browser, oauth_server, prefix, first)

            answers: collections.Counter[str] = collections.Counter()
            stop = asyncio.Event()

            async def load(path: str) -> None:
                for _ in range(2000):  # bounded; ends when the restart is over
                    if stop.is_set():
                        return
                    try:
                        async with api.get(path, timeout=aiohttp.ClientTimeout(total=10)) as r:
                            answers[str(r.status)] += 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        answers[type(exc).__name__] += 1
                    await asyncio.sleep(0.02)

            paths = ["/readyz", f"/v1/apps/{prefix}", f"/v1/connections/{first}"]
            loads = [asyncio.create_task(load(p)) for p in paths]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(postgres.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(postgres.start)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loads), timeout=30)
            assert sum(answers.values()) > 0

            async def ready() -> bool:
                async with browser.get("/readyz") as response:
                    return response.status == 200

            assert await wait_until(ready, timeout=20, interval=0.2), answers
            async with api.get(f"/v1/connections/{first}") as response:
                assert response.status == 200, await response.text()

            # The worker: a new job end to end, an on-demand refresh, and the relay.
            second = f"{prefix}-2"
            await authorize(api, browser, oauth_server, prefix, second)
            async with api.post(f"/v1/connections/{first}/refresh") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["outcome"] == "refreshed"

            async def relayed() -> bool:
                async with Redis.from_url(s.redis_url or "", decode_responses=True) as redis:
                    entries = await redis.xrange(s.events_stream)
                seen = {
                    (json.loads(f["event"])["type"], json.loads(f["event"])["connection_id"])
                    for _, f in entries
                }
                return {("connection.authorized", second), ("connection.refreshed", first)} <= seen

            assert await wait_until(relayed, timeout=20, interval=0.2)
            print(f"\nPostgres restart: answers during the restart {dict(answers)}")
    finally:
        await asyncio.to_thread(postgres.stop)


# --------------------------------------------------------------------------------------------
# Provider faults at random over 1,000 refreshes
# --------------------------------------------------------------------------------------------

FAULT_CONNECTIONS = 100
FAULT_ROUNDS = 10


async def test_random_provider_faults_never_invalidate_and_backoff_is_honoured(
    admin_dsn, settings, ring, unique
):
    """30 % of 1,000 forced refreshes meet a 500, a 503, a 429 with Retry-After, a timeout, a
    dropped connection, a truncated or non-JSON body or an empty one. No connection ends
    failed, none is invalidated, each keeps the one refresh token the provider still accepts,
    and every retry is scheduled no sooner than Retry-After and no later than the backoff cap."""
    prefix = unique("faults")
    provider = RotatingProvider(fault_rate=0.3, seed=1234)
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(settings, prefix=prefix, database_url=database_url)
        async with open_stack(s, ring, web_app=False, worker=False) as stack:
            res = stack.resources
            app = await insert_app(res, prefix, MOCK_TOKEN_URL)
            ids = [f"{prefix}-{i}" for i in range(FAULT_CONNECTIONS)]
            for cid in ids:
                await insert_connection(res, app, cid, provider.grant(cid))
            outcomes: collections.Counter[str] = collections.Counter()
            consecutive: collections.Counter[str] = collections.Counter()
            malformed_since_success: set[str] = set()
            checked_429 = 0
            gate = asyncio.Semaphore(8)
            with aioresponses_compat(), aioresponses(passthrough_unmatched=True) as mocked:
                mocked.post(MOCK_TOKEN_URL, callback=provider.respond, repeat=True)
                async with aiohttp.ClientSession() as http:
                    ctx = {CTX_KEY: WorkerContext(resources=res, http=http)}

                    async def one(cid: str) -> None:
                        nonlocal checked_429
                        async with gate:
                            outcome = await refresh_one(ctx[CTX_KEY], cid, force=True)
                            done = datetime.now(UTC)
                            after = await connections.get(res.pool, cid)
                        assert after is not None
                        outcomes[outcome] += 1
                        kind, retry_after, at = provider.last[cid]
                        if kind == "ok":
                            assert outcome == "refreshed"
                            consecutive[cid] = 0
                            malformed_since_success.discard(cid)
                            assert after.failed_attempts == 0 and after.next_attempt_at is None
                            assert after.problem is None
                            return
                        assert outcome == "retrying", (kind, outcome)
                        consecutive[cid] += 1
                        if kind in RotatingProvider.MALFORMED:
                            malformed_since_success.add(cid)
                        # Never dead; a malformed answer (not an outage) is named until a
                        # refresh succeeds.
                        assert after.status == "active"
                        expected = "provider_error" if cid in malformed_since_success else None
                        assert after.problem == expected, (kind, after.problem)
                        assert after.failed_attempts == consecutive[cid]
                        assert after.next_attempt_at is not None
                        assert after.refresh_at == after.next_attempt_at
                        # Scheduled from a moment between the provider's answer (`at`) and
                        # the refresh's return (`done`), however slow the machine is.
                        wait = (after.next_attempt_at - at).total_seconds()
                        assert wait >= 1.0 - 0.05
                        ceiling = min(BACKOFF_CAP, 5.0 * 2 ** (after.failed_attempts - 1))
                        latest = (after.next_attempt_at - done).total_seconds()
                        assert latest <= max(retry_after or 0.0, ceiling) + 0.05, (kind, latest)
                        if retry_after is not None:
                            checked_429 += 1
                            assert wait >= retry_after - 0.05, (retry_after, wait)
                            assert after.last_error and after.last_error["status"] == 429

                    for _ in range(FAULT_ROUNDS):
                        await asyncio.gather(*(one(cid) for cid in ids))

            pool = res.pool
            statuses = await pool.fetch("SELECT status, count(*) AS n FROM connections GROUP BY 1")
            assert [(r["status"], r["n"]) for r in statuses] == [("active", FAULT_CONNECTIONS)]
            for cid in ids:
                assert await stored_refresh_token(res, cid) == provider.current[cid]
            invalidated = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE event->>'type' = 'connection.invalidated'"
            )
            assert invalidated == 0
            assert provider.refused == 0  # the broker never sent a stale refresh token
            total = sum(outcomes.values())
            assert total == FAULT_CONNECTIONS * FAULT_ROUNDS
            # Faults are drawn per request, and a lost answer is re-asked at once inside the
            # same refresh, so the fault rate is measured over the requests the provider saw.
            requests = sum(provider.attempts.values())
            assert requests >= total
            faults = sum(provider.faults.values())
            assert 0.2 * requests <= faults <= 0.4 * requests, (faults, requests)
            assert set(provider.faults) == set(RotatingProvider.FAULTS)
            assert checked_429 == provider.faults["429"] > 0
            print(f"\nprovider faults: {dict(provider.faults)}; outcomes {dict(outcomes)}")


# --------------------------------------------------------------------------------------------
# Graceful shutdown mid-refresh
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grace", [5.0, 0.1], ids=["grace-5s", "grace-0.1s"])
async def test_stopping_a_worker_mid_refresh_loses_nothing(
    admin_dsn, settings, ring, unique, grace
):
    """The provider takes 1 s to answer a refresh when the worker is told to stop. With 5 s of
    grace the refresh completes and its tokens are stored; with 0.1 s it is cut short before
    the provider answered: the lease stays until it lapses, the connection stays active with
    its old refresh token, which still works, and the next refresh succeeds with it."""
    prefix = unique("graceful")
    provider = RotatingProvider(delay=1.0)
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(settings, prefix=prefix, database_url=database_url)
        with aioresponses_compat(), aioresponses(passthrough_unmatched=True) as mocked:
            mocked.post(MOCK_TOKEN_URL, callback=provider.respond, repeat=True)
            async with open_stack(s, ring, web_app=False, worker=True, concurrency=2) as stack:
                res = stack.resources
                app = await insert_app(res, prefix, MOCK_TOKEN_URL)
                cid = f"{prefix}-1"
                old = provider.grant(cid)
                await insert_connection(res, app, cid, old)
                before = await connections.get(res.pool, cid)
                assert before is not None
                assert await leases.request_refresh(res.pool, cid, before.version)
                await asyncio.wait_for(provider.entered.wait(), timeout=15)
                assert stack.worker is not None
                await stack.stop_worker(grace=grace)

                after = await connections.get(res.pool, cid)
                assert after is not None and after.status == "active"
                if grace >= 1.0:
                    assert after.version == before.version + 1
                    assert after.lease_holder is None
                    assert after.open_refresh_token(res.ring) == provider.current[cid] != old
                    return
                # Cut short: nothing was written, the lease is still held and not yet lapsed.
                assert after.version == before.version
                assert after.open_refresh_token(res.ring) == old == provider.current[cid]
                assert after.lease_holder is not None
                assert after.lease_until is not None and after.lease_until > datetime.now(UTC)
                assert provider.issued == 0
                # The lease lapses (simulated), and the next refresh works with the old token.
                await res.pool.execute(
                    "UPDATE connections SET lease_until = now() - interval '1 second' WHERE id = $1",
                    cid,
                )
                async with aiohttp.ClientSession() as http:
                    ctx = {CTX_KEY: WorkerContext(resources=res, http=http)}
                    assert await refresh_one(ctx[CTX_KEY], cid, force=True) == "refreshed"
                final = await connections.get(res.pool, cid)
                assert final is not None and final.status == "active"
                assert final.open_refresh_token(res.ring) == provider.current[cid] != old
                assert provider.refused == 0


async def test_refresh_cut_short_is_scheduled_again_once_its_lease_lapses(
    admin_dsn, settings, ring, unique
):
    """A worker stopped with 0.1 s of grace cuts a refresh short; a new worker starts. Once
    the lease lapses (simulated) the due connection is refreshed within seconds."""
    prefix = unique("cut-short")
    provider = RotatingProvider(delay=1.0)
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(settings, prefix=prefix, database_url=database_url)
        with aioresponses_compat(), aioresponses(passthrough_unmatched=True) as mocked:
            mocked.post(MOCK_TOKEN_URL, callback=provider.respond, repeat=True)
            async with open_stack(s, ring, web_app=False, worker=True, concurrency=2) as stack:
                res = stack.resources
                app = await insert_app(res, prefix, MOCK_TOKEN_URL)
                cid = f"{prefix}-1"
                old = provider.grant(cid)
                await insert_connection(res, app, cid, old)
                assert await leases.request_refresh(res.pool, cid, 1)
                await asyncio.wait_for(provider.entered.wait(), timeout=15)
                await stack.stop_worker(grace=0.1)
                assert await stored_refresh_token(res, cid) == old
                # The lease lapses and the connection is due: the scheduler's business now.
                await res.pool.execute(
                    """UPDATE connections SET lease_until = now() - interval '1 second',
                           refresh_at = now() WHERE id = $1""",
                    cid,
                )
                provider.delay = 0.0
                await stack.start_worker(concurrency=2)

                async def refreshed() -> bool:
                    return await stored_refresh_token(res, cid) != old

                assert await wait_until(refreshed, timeout=10, interval=0.2), (
                    f"not refreshed; token requests {dict(provider.attempts)}"
                )
