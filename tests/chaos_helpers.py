"""Helpers for the fault, hostile-input and secret-hygiene tests.

- `private_database`: a database of one test's own on the session's Postgres server (created,
  migrated, dropped), so that no other worker's scheduler, sweep or relay touches its rows.
- `open_stack`: the real web app and an in-process arq worker on given settings.
- `spawn_worker`: a real `authbroker worker` process, to SIGKILL.
- `FakeProvider`: a loopback HTTP server whose answers a test scripts and whose hits it counts.
- `aioresponses_compat`: aioresponses 0.7.9 against aiohttp 3.14 (the shim of
  tests/test_oauth_protocol.py, as a context manager).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from arq.worker import Worker
from redis.asyncio import Redis

from authbroker.config import Settings
from authbroker.embedded import free_port
from handlers.app import create_app
from storage import api_keys
from storage.resources import Resources
from storage.sealing import KeyRing
from tests.aioresponses_compat import aioresponses_compat  # noqa: F401 - re-exported
from tests.databases import private_database  # noqa: F401 - re-exported
from worker.context import CTX_KEY
from worker.settings import build_worker, stop_worker


async def delete_prefix_keys(redis_url: str, prefix: str) -> None:
    """Remove every Redis key of a test's own prefix (queue, jobs, results, stream)."""
    with contextlib.suppress(Exception):
        client = Redis.from_url(redis_url, socket_connect_timeout=1)
        try:
            async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


def stack_settings(
    base: Settings, *, prefix: str, database_url: str, redis_url: str | None = None
) -> Settings:
    """The session's settings with a database, a Redis prefix and a public port of one test's
    own (the callback URL, and so the redirect URI, is this port's)."""
    port = free_port()
    return base.replace(
        database_url=database_url,
        redis_url=redis_url or base.redis_url,
        redis_prefix=prefix,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
    )


@dataclass
class Stack:
    settings: Settings
    ring: KeyRing
    resources: Resources
    admin_key: str
    runner: web.AppRunner | None = None
    worker: Worker | None = None
    worker_task: asyncio.Task[Any] | None = None
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.settings.public_url

    def api(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}
        )
        self._sessions.append(session)
        return session

    def browser(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(base_url=self.url)
        self._sessions.append(session)
        return session

    async def start_worker(self, concurrency: int = 10) -> Worker:
        assert self.worker is None
        self.worker = build_worker(self.settings, self.ring, concurrency=concurrency)
        self.worker_task = asyncio.create_task(self.worker.async_run())
        # Wait until its startup has opened what jobs need.
        for _ in range(200):
            if CTX_KEY in self.worker.ctx:
                break
            await asyncio.sleep(0.02)
        return self.worker

    async def stop_worker(self, grace: float = 5.0) -> None:
        worker, task = self.worker, self.worker_task
        self.worker = self.worker_task = None
        if worker is None or task is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stop_worker(worker, grace=grace), timeout=grace + 30)
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, timeout=5)


@contextlib.asynccontextmanager
async def open_stack(
    settings: Settings,
    ring: KeyRing,
    *,
    web_app: bool = True,
    worker: bool = True,
    concurrency: int = 10,
) -> AsyncIterator[Stack]:
    resources = await Resources.open(settings, ring)
    _, key = await api_keys.create(resources.pool, "chaos-admin")
    stack = Stack(settings=settings, ring=ring, resources=resources, admin_key=key)
    try:
        if web_app:
            stack.runner = web.AppRunner(create_app(resources), access_log=None)
            await stack.runner.setup()
            await web.TCPSite(stack.runner, settings.host, settings.port).start()
        if worker:
            await stack.start_worker(concurrency)
        yield stack
    finally:
        for session in stack._sessions:
            await session.close()
        await stack.stop_worker(grace=2)
        if stack.runner is not None:
            await stack.runner.cleanup()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(resources.close(), timeout=10)
        await delete_prefix_keys(settings.redis_url or "", settings.redis_prefix)


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def spawn_worker(
    settings: Settings, *, concurrency: int, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`authbroker worker` with these settings; its log lines go to `log_path`."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")},
        "AUTHBROKER_ENV": "test",
        "AUTHBROKER_DATABASE_URL": settings.database_url or "",
        "AUTHBROKER_REDIS_URL": settings.redis_url or "",
        "AUTHBROKER_REDIS_PREFIX": settings.redis_prefix,
        "AUTHBROKER_ENCRYPTION_KEYS": settings.encryption_keys or "",
        "AUTHBROKER_PROVIDER_TIMEOUT": f"{settings.provider_timeout:g}",
        "AUTHBROKER_WORKER_CONCURRENCY": str(concurrency),
        "AUTHBROKER_LOG_LEVEL": "info",
        "AUTHBROKER_LOG_FORMAT": "json",
        **(extra_env or {}),
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "authbroker"), "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def holder_prefix(pid: int) -> str:
    """How a worker process names itself as a lease holder (worker/context.py)."""
    return f"{socket.gethostname()}:{pid}:"


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.1
) -> bool:
    """Poll `check` until it is true or `timeout` seconds have passed; the last answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------
# A provider on loopback
# --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeProvider:
    """A real HTTP server on 127.0.0.1: each path answers with the handler a test sets; every
    request is counted per path, answered or not."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no such path")
        return await handler(request)

    async def start(self) -> FakeProvider:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --------------------------------------------------------------------------------------------
# aioresponses 0.7.9 against aiohttp 3.14 (pnuckowski/aioresponses#289)
# --------------------------------------------------------------------------------------------
