"""What every figure shares: the run's environment, the fake provider, a pool and a Redis client
of the benchmark's own, the benchmark app and API key, and the way results are recorded."""

# ruff: noqa: ASYNC109, RUF001
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.env import BenchEnv, CpuMeter
from bench.provider import ProviderProcess
from storage.apps import App
from storage.sealing import KeyRing

BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Row:
    figure: str
    result: str
    baseline: str
    ratio: str
    target: str
    met: str


@dataclass
class Sizes:
    runs: int
    refresh_connections: int
    credentials_connections: int
    load_seconds: float
    load_concurrency: int
    authorizations: int
    callback_concurrency: int
    scale_connections: int
    scale_baseline: int
    outage_connections: int
    outage_seconds: float
    long_outage_seconds: float
    long_outage_wait: float
    rss_seconds: float
    webhook_rate: float
    webhook_seconds: float


FULL = Sizes(
    runs=3,
    refresh_connections=20_000,
    credentials_connections=10_000,
    load_seconds=6.0,
    load_concurrency=32,
    authorizations=1_000,
    callback_concurrency=8,
    scale_connections=1_000_000,
    scale_baseline=10_000,
    outage_connections=5_000,
    outage_seconds=20.0,
    long_outage_seconds=60.0,
    long_outage_wait=150.0,
    rss_seconds=10.0,
    webhook_rate=100.0,
    webhook_seconds=30.0,
)
QUICK = Sizes(
    runs=1,
    refresh_connections=2_000,
    credentials_connections=2_000,
    load_seconds=3.0,
    load_concurrency=32,
    authorizations=100,
    callback_concurrency=8,
    scale_connections=100_000,
    scale_baseline=10_000,
    outage_connections=1_000,
    outage_seconds=8.0,
    long_outage_seconds=0.0,
    long_outage_wait=60.0,
    rss_seconds=5.0,
    webhook_rate=100.0,
    webhook_seconds=10.0,
)


@dataclass
class Bench:
    env: BenchEnv
    provider: ProviderProcess
    pool: asyncpg.Pool
    redis: Redis
    app: App
    api_key: str
    sizes: Sizes
    profile: bool
    rows: list[Row] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ring(self) -> KeyRing:
        return self.env.ring

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return self.env.settings

    async def reset(self) -> None:
        """Empty the tables a figure fills and this run's Redis keys (queue, jobs, stream)."""
        await self.pool.execute("TRUNCATE connections, authorizations, outbox CASCADE")
        keys = [k async for k in self.redis.scan_iter(match=f"*{self.settings.redis_prefix}*")]
        for start in range(0, len(keys), 1000):
            await self.redis.delete(*keys[start : start + 1000])

    async def pending_refreshes(self) -> int:
        return await self.pool.fetchval(
            "SELECT count(*) FROM connections WHERE last_refresh_at IS NULL"
        )

    async def unrelayed(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")

    def cpu_meter(self, main: str, pid: int) -> CpuMeter:
        """CPU of `pid`, its Postgres backends, Redis and the fake provider."""

        async def pids() -> dict[str, list[int]]:
            backends = await self.pool.fetch(
                """SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND backend_type = 'client backend'
                     AND application_name <> 'bench-driver'"""
            )
            info = await self.redis.info("server")
            return {
                main: [pid],
                "postgres": [r["pid"] for r in backends],
                "redis": [int(info.get("process_id", 0))],
                "provider": [self.provider.pid],
            }

        return CpuMeter(pids)

    def write_json(self, name: str, value: Any) -> str:
        path = self.env.workdir / name
        path.write_text(json.dumps(value))
        return str(path)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return False


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def fmt_spread(values: Sequence[float], unit: str = "", digits: int = 0) -> str:
    lo, mid, hi = spread(values)
    if len(values) == 1:
        return f"{mid:,.{digits}f}{unit}"
    return f"{mid:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return ordered[index]


def yes(condition: bool) -> str:
    return "yes" if condition else "**no**"
