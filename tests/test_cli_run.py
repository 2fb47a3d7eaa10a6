"""`authbroker run`, the one command to try authbroker, as a real process.

It is started the way an operator would: a fresh directory, no settings but a port and a data
directory. With AUTHBROKER_TEST_DATABASE_URL / AUTHBROKER_TEST_REDIS_URL set, it is pointed at a
database created here (it migrates it) and a Redis prefix of its own; otherwise it starts its
embedded Postgres and Redis under the data directory, as on a fresh machine.

The operator notices: the banner (base URL, redirect URL, data dir, admin API key), that the key
works, that Ctrl-C stops everything cleanly (exit 0, no server left behind), and that the next
start on the same data directory finds the same key and the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from authbroker.embedded import free_port
from tests.databases import with_database

ROOT = Path(__file__).resolve().parent.parent
AUTHBROKER = ROOT / ".venv" / "bin" / "authbroker"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class Setup:
    root: Path
    env: dict[str, str]
    embedded_postgres: bool
    embedded_redis: bool

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


@pytest.fixture
async def run_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")}
    env["AUTHBROKER_DATA_DIR"] = str(tmp_path / "data")
    suffix = uuid.uuid4().hex[:12]
    admin_dsn = os.environ.get("AUTHBROKER_TEST_DATABASE_URL")
    redis_url = os.environ.get("AUTHBROKER_TEST_REDIS_URL")
    database = f"authbroker_cli_{suffix}"
    prefix = f"authbroker-cli-{suffix}"
    if admin_dsn:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        env["AUTHBROKER_DATABASE_URL"] = with_database(admin_dsn, database)
    if redis_url:
        env["AUTHBROKER_REDIS_URL"] = redis_url
        env["AUTHBROKER_REDIS_PREFIX"] = prefix
    try:
        yield Setup(tmp_path, env, embedded_postgres=not admin_dsn, embedded_redis=not redis_url)
    finally:
        _stop_leftover_servers(tmp_path)
        if admin_dsn:
            admin = await asyncpg.connect(admin_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
        if redis_url:
            client = Redis.from_url(redis_url)
            try:
                async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
                    await client.delete(key)
            finally:
                await client.aclose()


def _leftover_pids(root: Path) -> list[int]:
    """Processes left in our directory: an embedded server still running.

    Postgres shows its data directory on its command line (`pgrep -f`); redis-server rewrites
    its process title to `redis-server 127.0.0.1:<port>`, but runs with its data directory as
    working directory, so /proc/<pid>/cwd finds it."""
    result = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True, check=False)
    pids = {int(pid) for pid in result.stdout.split()}
    resolved = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cwd = os.readlink(entry / "cwd")
                if cwd == resolved or cwd.startswith(resolved + "/"):
                    pids.add(int(entry.name))
    pids.discard(os.getpid())
    return sorted(pids)


def _describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
            lines.append(f"{pid}: {cmdline.replace(bytes(1), b' ').decode(errors='replace')}")
    return "\n".join(lines)


def _stop_leftover_servers(root: Path) -> None:
    """Only after a failure: stop what the process under test left running in our directory."""
    pgdata = root / "data" / "postgres"
    if (pgdata / "postmaster.pid").exists():
        with contextlib.suppress(Exception):
            from pgserver import _commands

            user = "pgserver" if os.geteuid() == 0 else None
            _commands.pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=pgdata, user=user)
    for pid in _leftover_pids(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@dataclass
class Process:
    """`authbroker run` in the background, with its output collected as it comes."""

    proc: asyncio.subprocess.Process
    port: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, setup: Setup, **settings: str) -> Process:
        port = free_port()
        env = {**setup.env, **settings, "AUTHBROKER_PORT": str(port)}
        proc = await asyncio.create_subprocess_exec(
            str(AUTHBROKER),
            "run",
            cwd=setup.root,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the test's terminal does not reach it
        )
        running = cls(proc, port)
        running.readers = [
            asyncio.create_task(running._drain(proc.stdout, running.stdout)),
            asyncio.create_task(running._drain(proc.stderr, running.stderr)),
        ]
        return running

    @staticmethod
    async def _drain(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr[-60:]])

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise AssertionError(f"exited with {self.proc.returncode}\n{self.output()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    f"{self.base_url}/readyz", timeout=aiohttp.ClientTimeout(total=3)
                ) as response:
                    if response.status == 200:
                        break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"/readyz not 200 within {READY_TIMEOUT:g} s\n{self.output()}")
        # The banner is printed as the server starts listening; give the reader a moment.
        deadline = time.monotonic() + 10
        while not any("stop:" in line for line in self.stdout) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def banner_value(self, label: str) -> str:
        for line in self.stdout:
            match = re.match(rf"^\s*{re.escape(label)}:\s+(\S+)", line)
            if match:
                return match[1]
        raise AssertionError(f"no {label!r} line in the banner\n{self.output()}")

    async def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"still running {STOP_TIMEOUT:g} s after SIGINT\n{self.output()}"
            ) from None
        await asyncio.gather(*self.readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self.readers:
            task.cancel()


async def _no_leftovers(root: Path) -> list[int]:
    """Wait briefly for the embedded servers to finish exiting; return what remains."""
    deadline = time.monotonic() + 5
    while (pids := _leftover_pids(root)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return pids


async def test_run_serves_stops_cleanly_and_restarts_on_the_same_data(
    run_setup: Setup, unique: Callable[[str], str]
) -> None:
    setup = run_setup
    app_name = unique("kept")
    processes: list[Process] = []
    try:
        async with aiohttp.ClientSession() as session:
            # ---- first start: a fresh data directory
            first = await Process.start(setup)
            processes.append(first)
            await first.wait_ready(session)

            assert first.banner_value("base URL") == first.base_url
            assert first.banner_value("redirect URL") == f"{first.base_url}/oauth/callback"
            assert Path(first.banner_value("data dir")) == setup.data_dir.resolve()
            admin_key = first.banner_value("admin API key")
            assert re.fullmatch(r"ab_[0-9a-f]+_[A-Za-z0-9-]+", admin_key), admin_key
            # The key is not repeated into the logs.
            assert admin_key not in "\n".join(first.stderr)

            headers = {"Authorization": f"Bearer {admin_key}"}
            async with session.get(f"{first.base_url}/v1/apps", headers=headers) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["items"] == []
            async with session.get(f"{first.base_url}/v1/apps") as response:
                assert response.status == 401
            async with session.post(
                f"{first.base_url}/v1/apps",
                headers=headers,
                json={
                    "name": app_name,
                    "client_id": "cid",
                    "client_secret": "kept-secret",
                    "authorization_url": "https://provider.example.com/authorize",
                    "token_url": "https://provider.example.com/token",
                },
            ) as response:
                assert response.status == 201, await response.text()
                created = await response.json()
            assert created["redirect_url"] == f"{first.base_url}/oauth/callback"

            assert await first.interrupt() == 0, first.output()
            if setup.embedded_postgres or setup.embedded_redis:
                left = await _no_leftovers(setup.root)
                assert left == [], f"still running after exit:\n{_describe(left)}"

            # ---- second start: same data directory, another port
            second = await Process.start(setup)
            processes.append(second)
            await second.wait_ready(session)
            assert second.banner_value("admin API key") == admin_key
            assert second.banner_value("base URL") == second.base_url
            async with session.get(f"{second.base_url}/v1/apps", headers=headers) as response:
                assert response.status == 200, await response.text()
                items = (await response.json())["items"]
            assert [item["name"] for item in items] == [app_name]
            assert items[0]["client_secret_set"] is True
            assert items[0]["redirect_url"] == f"{second.base_url}/oauth/callback"

            assert await second.interrupt() == 0, second.output()
            if setup.embedded_postgres or setup.embedded_redis:
                left = await _no_leftovers(setup.root)
                assert left == [], f"still running after exit:\n{_describe(left)}"
    finally:
        for process in processes:
            await process.kill()


async def test_metrics_move_to_a_listener_of_their_own(run_setup: Setup) -> None:
    """AUTHBROKER_METRICS_LISTEN: /metrics leaves the public port for its own address."""
    metrics_port = free_port()
    process = await Process.start(run_setup, AUTHBROKER_METRICS_LISTEN=f"127.0.0.1:{metrics_port}")
    try:
        async with aiohttp.ClientSession() as session:
            await process.wait_ready(session)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            assert process.banner_value("metrics") == metrics_url
            async with session.get(metrics_url) as response:
                assert response.status == 200
                assert "authbroker_http_requests_total" in await response.text()
            async with session.get(f"{process.base_url}/metrics") as response:
                assert response.status == 404
            async with session.get(f"{process.base_url}/openapi.json") as response:
                assert "/metrics" not in (await response.json())["paths"]
            async with session.get(f"http://127.0.0.1:{metrics_port}/v1/apps") as response:
                assert response.status == 404  # the metrics listener serves nothing else
        assert await process.interrupt() == 0, process.output()
    finally:
        await process.kill()
