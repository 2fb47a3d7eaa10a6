"""Shared fixtures: a database and a Redis prefix of this run's own, a real web server and a
real worker, and the real OAuth server of tests/oauth_server.

`AUTHBROKER_TEST_DATABASE_URL` / `AUTHBROKER_TEST_REDIS_URL` point at existing servers; without
them embedded ones start once per session. Either way this run creates its own database (dropped
at the end) and its own Redis prefix and queue (deleted at the end), so runs never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from authbroker.config import Settings
from authbroker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from authbroker.logs import configure_logging
from handlers.app import create_app
from handlers.throttle import API_FAILURES, SIGN_IN_FAILURES, FailureLimiter
from storage import api_keys
from storage.resources import Resources
from storage.sealing import KeyRing
from tests.aioresponses_compat import aioresponses_compat
from tests.databases import private_database
from tests.oauth_server import OAuthTestServer
from worker.settings import build_worker, stop_worker

RUN_ID = secrets.token_hex(4)


@pytest.fixture(scope="session", autouse=True)
def _aioresponses_compat() -> Iterator[None]:
    with aioresponses_compat():
        yield


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"authbroker-test-{RUN_ID}-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def admin_dsn(workdir: Path) -> Iterator[str]:
    """A DSN of a database this run may use to create its own."""
    url = os.environ.get("AUTHBROKER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(workdir / "postgres", database="postgres")
    server.start()
    try:
        yield server.admin_dsn()
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database_url(admin_dsn: str) -> AsyncIterator[str]:
    async with private_database(admin_dsn, name=f"authbroker_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    url = os.environ.get("AUTHBROKER_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(workdir / "redis", persist=False)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def web_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, workdir: Path, web_port: int) -> Settings:
    configure_logging("json", os.environ.get("AUTHBROKER_TEST_LOG_LEVEL", "warning"))
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=f"authbroker-test-{RUN_ID}",
        data_dir=workdir / "data",
        host="127.0.0.1",
        port=web_port,
        public_url=f"http://127.0.0.1:{web_port}",
        encryption_keys=KeyRing.generate_line("test1"),
    )


@pytest.fixture(scope="session")
def ring(settings: Settings) -> KeyRing:
    assert settings.encryption_keys
    return KeyRing.parse(settings.encryption_keys)


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url or "", decode_responses=True)
    yield client
    # Leave the shared server as we found it: delete every key of this run's prefix.
    async for key in client.scan_iter(match=f"*{settings.redis_prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(scope="session")
async def resources(settings: Settings, ring: KeyRing, redis: Redis) -> AsyncIterator[Resources]:
    res = await Resources.open(settings, ring)
    yield res
    await res.close()


@pytest.fixture(scope="session")
async def web_server(resources: Resources, settings: Settings) -> AsyncIterator[str]:
    app = create_app(resources)
    # Every test sends from one address: a test's invalid keys must not throttle the next
    # test's. Throttling itself is tested on servers of its own, with the real limits.
    app[API_FAILURES] = FailureLimiter(burst=1_000_000, every=0.001)
    app[SIGN_IN_FAILURES] = FailureLimiter(burst=1_000_000, every=0.001)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    yield settings.public_url
    await runner.cleanup()


@pytest.fixture(scope="session")
async def worker(settings: Settings, ring: KeyRing, resources: Resources) -> AsyncIterator[Any]:
    arq_worker = build_worker(settings, ring, concurrency=20)
    task = asyncio.create_task(arq_worker.async_run())
    yield arq_worker
    await stop_worker(arq_worker, grace=5)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def jobs_worker(settings: Settings, ring: KeyRing) -> AsyncIterator[Any]:
    """A worker that only runs the jobs it is given (exchanges, revocations, probes): no refresh
    engine and no sweeps, for tests that drive those themselves."""
    arq_worker = build_worker(settings, ring, concurrency=10, periodic=False)
    task = asyncio.create_task(arq_worker.async_run())
    yield arq_worker
    await stop_worker(arq_worker, grace=5)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture(scope="session")
async def admin_key(resources: Resources) -> str:
    _, key = await api_keys.create(resources.pool, "test-admin")
    return key


@pytest.fixture(scope="session")
async def api(web_server: str, admin_key: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the real API, signed in with an admin key."""
    async with aiohttp.ClientSession(
        base_url=web_server, headers={"Authorization": f"Bearer {admin_key}"}
    ) as session:
        yield session


@pytest.fixture(scope="session")
async def anonymous(web_server: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=web_server) as session:
        yield session


@pytest.fixture(scope="session")
def oauth_server(workdir: Path, settings: Settings) -> Iterator[OAuthTestServer]:
    """The real django-oauth-toolkit server: rotation on, grace period 0."""
    server = OAuthTestServer(workdir / "oauth", access_token_lifetime=3600)
    server.start(settings.redirect_url)
    yield server
    server.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


class EventReader:
    """Reads this run's event stream from the start, as a runtime's consumer would."""

    def __init__(self, redis: Redis, stream: str):
        self.redis = redis
        self.stream = stream

    async def all(self) -> list[dict[str, Any]]:
        entries = await self.redis.xrange(self.stream)
        return [json.loads(fields["event"]) for _, fields in entries]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in await self.all():
                if predicate(event):
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"no matching event within {timeout} s; saw {await self.all()}")


@pytest.fixture(scope="session")
def events(redis: Redis, settings: Settings) -> EventReader:
    return EventReader(redis, settings.events_stream)
