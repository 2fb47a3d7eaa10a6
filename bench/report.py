"""RESULTS.md: machine, versions, date, background load, the table, then each figure's runs."""

# ruff: noqa: ASYNC240, RUF001
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "authbroker",
    "aiohttp",
    "asyncpg",
    "arq",
    "redis",
    "hiredis",
    "cryptography",
    "structlog",
    "pydantic",
    "prometheus-client",
    "py-spy",
)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory,
        "cpu": model,
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class BackgroundLoad:
    """Samples, every few seconds, the load average and whether test suites (pytest) or other
    heavy processes not started by this benchmark are running."""

    def __init__(self, interval: float = 3.0):
        self.interval = interval
        self.samples: list[tuple[float, int, list[str]]] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        while True:
            self.samples.append(self._sample())
            await asyncio.sleep(self.interval)

    @staticmethod
    def _sample() -> tuple[float, int, list[str]]:
        with open("/proc/loadavg") as handle:
            load = float(handle.read().split()[0])
        others: list[str] = []
        mine = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == mine:
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
                if "pytest" in cmd or "chromium" in cmd or "chrome" in cmd:
                    others.append(cmd.split(" -", 1)[0][-60:])
        return load, len(others), others

    def describe(self) -> str:
        if not self.samples:
            return "not sampled"
        loads = [s[0] for s in self.samples]
        busy = sum(1 for s in self.samples if s[1])
        text = (
            f"1-minute load average {min(loads):.1f}–{max(loads):.1f} (median "
            f"{sorted(loads)[len(loads) // 2]:.1f}) on {os.cpu_count()} cores; test suites or "
            f"browsers of other work seen in {busy} of {len(self.samples)} samples"
        )
        if busy:
            text += (
                " — **measured while other work ran**: absolute figures are noisy and low; the "
                "baselines, measured in the same run next to each figure, keep the ratios "
                "meaningful"
            )
        return text


async def _server_versions(b: Any) -> dict[str, str]:
    pg = await b.pool.fetchval("SHOW server_version")
    info = await b.redis.info("server")
    return {"postgres": str(pg), "redis": str(info.get("redis_version"))}


async def write(
    b: Any,
    path: Path,
    *,
    started: float,
    quick: bool,
    failures: list[str],
    load: BackgroundLoad | None = None,
) -> None:
    servers = await _server_versions(b)
    m = machine()
    v = versions()
    took = time.time() - started
    s = b.sizes
    out = [
        "# authbroker benchmark results" + (" (--quick: one run, small sizes)" if quick else ""),
        "",
        f"Written by `make bench` (`python -m bench`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; took {took / 60:.1f} min.",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}",
        f"- Servers: PostgreSQL {servers['postgres']} ({b.env.sources['postgres']}), Redis "
        f"{servers['redis']} ({b.env.sources['redis']}); a private database and Redis prefix, "
        "removed at the end",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Background: {load.describe() if load else 'not sampled'}",
        f"- Runs per figure: {s.runs} (each cell: median, with min–max in brackets)",
        "- Everything on loopback; the provider is `bench/provider.py` (aiohttp, its own "
        "process, rotating refresh tokens); authbroker processes are started as an operator "
        "would (`authbroker worker|web|run` with `AUTHBROKER_*` variables, log level info, JSON "
        "to a file).",
        "",
        "| figure | result | baseline | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in b.rows:
        out.append(f"| {r.figure} | {r.result} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
    if failures:
        out += ["", "Figures that failed to run:", ""] + [f"- {f}" for f in failures]
    out += ["", "## Figures", ""]
    out += ["\n\n".join(b.sections)]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists() and not quick:
        out += ["", notes.read_text().strip()]
    path.write_text("\n".join(out) + "\n")
