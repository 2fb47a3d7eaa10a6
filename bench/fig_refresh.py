"""Figure 1: proactive refresh throughput.

N active connections with valid rotating refresh tokens, all made due at once; ONE worker
process (`authbroker worker`, default concurrency) refreshes them; timed until none is left
with `last_refresh_at IS NULL`. Baseline: `bench.bare refresh`, 64 at a time, in its own process.
"""

# ruff: noqa: ASYNC109, ASYNC240, RUF001
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, Bench, Row, fmt_spread, spread, wait_until, yes
from bench.data import insert_connections
from bench.profiling import Recorder, summarize
from bench.provider import CLIENT_ID, CLIENT_SECRET


async def product_run(
    b: Bench, n: int, tag: str, *, concurrency: int | None = None, profile_to: str | None = None
) -> dict[str, Any]:
    await b.reset()
    pairs = await insert_connections(b.pool, b.ring, b.app.id, n, tag, due=False)
    await b.provider.register([rt for _, rt in pairs])
    extra = ["--concurrency", str(concurrency)] if concurrency else []
    worker = b.env.authbroker("worker", *extra)
    recorder = None
    try:
        await b.env.wait_worker_ready(worker, b.redis)
        await asyncio.sleep(0.5)  # past the startup cron pass
        before = await b.provider.stats()
        if profile_to:
            recorder = Recorder(worker.pid, b.env.workdir / "profile.raw")
        meter = b.cpu_meter("worker", worker.pid)
        await meter.start()
        started = time.perf_counter()
        await b.pool.execute("UPDATE connections SET refresh_at = now() - interval '1 second'")

        async def done() -> bool:
            return await b.pending_refreshes() == 0

        finished = await wait_until(done, timeout=max(180.0, n / 40), interval=0.1)
        seconds = time.perf_counter() - started
        cpu = await meter.stop()
        if recorder:
            recorder.stop()

        async def relayed() -> bool:
            return await b.unrelayed() == 0

        await wait_until(relayed, timeout=60)
        relay_seconds = time.perf_counter() - started
        after = await b.provider.stats()
        failed = await b.pool.fetchval("SELECT count(*) FROM connections WHERE status <> 'active'")
        left = await b.pending_refreshes()
    finally:
        b.env.forget(worker)
    result = {
        "count": n - left,
        "finished": finished,
        "seconds": seconds,
        "rate": (n - left) / seconds,
        "relayed_seconds": relay_seconds,
        "cpu_share": cpu["worker"] / seconds,
        "cpu_ms": {k: 1000 * v / max(n - left, 1) for k, v in cpu.items()},
        "machine_busy": meter.machine_busy,
        "reused": after.get("reused", 0) - before.get("reused", 0),
        "provider_refreshes": after.get("refreshed", 0) - before.get("refreshed", 0),
        "not_active": failed,
    }
    if profile_to and recorder:
        result["profile"] = (
            summarize(recorder.raw_path) if recorder.error is None else recorder.error
        )
        if recorder.error is None:
            (b.env.workdir / "profile.raw").replace(profile_to)
    return result


async def baseline_run(b: Bench, n: int, tag: str) -> dict[str, Any]:
    await b.reset()
    pairs = await insert_connections(b.pool, b.ring, b.app.id, n, tag, due=True)
    await b.provider.register([rt for _, rt in pairs])
    items = b.write_json("bare-items.json", pairs)
    out = b.env.workdir / "bare-refresh.json"
    process = b.env.python(
        "bench.bare",
        "refresh",
        "--stream",
        b.settings.events_stream,
        "--token-url",
        b.provider.token_url,
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        "--items",
        items,
        "--out",
        str(out),
        log_name="bare-refresh",
    )
    try:
        await _file(process, f"{out}.ready", b)
        meter = b.cpu_meter("bare", process.pid)
        await meter.start()
        Path(f"{out}.go").write_text("1")
        await _file(process, f"{out}.done", b)
        cpu = await meter.stop()
        Path(f"{out}.quit").write_text("1")
        code = await asyncio.to_thread(process.wait)
    finally:
        b.env.forget(process)
    if code != 0:
        raise RuntimeError(f"bare refresh failed: {b.env.log_tail('bare-refresh')}")
    result = json.loads(out.read_text())
    done = result["count"] - result["errors"]
    result["rate"] = done / result["seconds"]
    result["cpu_share"] = cpu["bare"] / result["seconds"]
    result["cpu_ms"] = {k: 1000 * v / max(done, 1) for k, v in cpu.items()}
    result["machine_busy"] = meter.machine_busy
    result["left"] = await b.pending_refreshes()
    for suffix in (".ready", ".go", ".done", ".quit", ""):
        Path(f"{out}{suffix}").unlink(missing_ok=True)
    return result


async def _file(process: Any, path: str, b: Bench, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if process.poll() is not None:
            raise RuntimeError(f"bare refresh exited: {b.env.log_tail('bare-refresh')}")
        if time.monotonic() > deadline:
            raise RuntimeError("bare refresh did not finish in time")
        await asyncio.sleep(0.01)


async def run(b: Bench) -> None:
    s = b.sizes
    n = s.refresh_connections
    products, baselines = [], []
    for i in range(s.runs):
        products.append(await product_run(b, n, f"r{i}"))
        print(f"  refresh run {i + 1}: worker {products[-1]['rate']:.0f}/s", flush=True)
        baselines.append(await baseline_run(b, n, f"b{i}"))
        print(f"  refresh run {i + 1}: bare loop {baselines[-1]['rate']:.0f}/s", flush=True)
    rates = [p["rate"] for p in products]
    base = [x["rate"] for x in baselines]
    ratio = spread(rates)[1] / spread(base)[1]
    b.figures["refresh_rate"] = spread(rates)[1]
    reused = sum(p["reused"] for p in products)
    b.rows.append(
        Row(
            f"1. proactive refresh throughput ({n:,} due, 1 worker, concurrency "
            f"{b.settings.worker_concurrency})",
            fmt_spread(rates, "/s"),
            fmt_spread(base, "/s") + " (bare loop, 64 at a time)",
            f"{ratio:.2f}",
            "≥ 0.5 × baseline",
            yes(ratio >= 0.5 and reused == 0 and all(p["finished"] for p in products)),
        )
    )
    lines = [
        "### 1. Proactive refresh throughput",
        "",
        f"{n:,} active connections, each with a sealed refresh token the fake provider accepts "
        "once (rotation), made due in one UPDATE; one `authbroker worker` process "
        f"(concurrency {b.settings.worker_concurrency}, log level info to a file) until no "
        "connection has `last_refresh_at IS NULL`. Baseline: `bench/bare.py refresh`, one "
        "process, 64 at a time: token POST, seal both tokens, one UPDATE, one XADD.",
        "",
        "CPU per refresh counts the measured process, its Postgres backends, the Redis server "
        "and the fake provider (Redis is shared with other work on the machine); 'machine busy' "
        "is the share of both cores in use during the run, by anything.",
        "",
        "| run | worker /s | its CPU, share of a core | CPU ms per refresh: total (process / "
        "postgres / redis / provider) | events relayed after | reused tokens | machine busy "
        "| bare loop /s | its CPU | bare CPU ms per refresh | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, (p, x) in enumerate(zip(products, baselines, strict=True), 1):
        lines.append(
            f"| {i} | {p['rate']:.0f} ({p['seconds']:.1f} s) | {p['cpu_share']:.0%} | "
            f"{_cpu(p['cpu_ms'])} | {p['relayed_seconds']:.1f} s | {p['reused']} | "
            f"{p['machine_busy']:.0%} | {x['rate']:.0f} ({x['seconds']:.1f} s, {x['errors']} "
            f"errors) | {x['cpu_share']:.0%} | {_cpu(x['cpu_ms'])} | {x['machine_busy']:.0%} |"
        )
    b.figures["refresh_products"] = products

    # Diagnostic, one run each: the worker at the baseline's concurrency, then a profiled run.
    small = min(n, 5_000)
    if not b.profile:
        b.sections.append("\n".join(lines))
        return
    wide = await product_run(b, small, "c64", concurrency=64)
    print(f"  refresh, worker --concurrency 64: {wide['rate']:.0f}/s", flush=True)
    lines += [
        "",
        f"Diagnostic (one run, {small:,} connections): the same worker with `--concurrency 64` "
        "(the baseline's): "
        f"{wide['rate']:.0f}/s, CPU {wide['cpu_share']:.0%} of one core, CPU ms per refresh "
        f"{_cpu(wide['cpu_ms'])}, {wide['reused']} reused tokens.",
    ]
    if b.profile:
        raw = BENCH_DIR / "profile-refresh.collapsed"
        profiled = await product_run(b, small, "prof", profile_to=str(raw))
        text = profiled.get("profile", "no profile")
        (BENCH_DIR / "profile-refresh.txt").write_text(
            f"py-spy, worker process, figure 1 ({small:,} refreshes, "
            f"{profiled['rate']:.0f}/s, CPU {profiled['cpu_share']:.0%} of one core)\n\n{text}\n"
        )
        lines += [
            "",
            f"Profile: `bench/profile-refresh.txt` (summary) and `bench/profile-refresh.collapsed` "
            f"(py-spy raw stacks), taken in an extra run ({profiled['rate']:.0f}/s under py-spy).",
        ]
    b.sections.append("\n".join(lines))


def _cpu(ms: dict[str, float]) -> str:
    parts = list(ms.values())
    return f"{sum(parts):.2f} ({' / '.join(f'{v:.2f}' for v in parts)})"
