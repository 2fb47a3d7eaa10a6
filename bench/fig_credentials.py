"""Figure 2: `GET /v1/connections/{id}/credentials` on valid tokens.

N connections with tokens valid for an hour; `authbroker web` (one process) and the bare
handler of `bench/bare.py` (one process) are each loaded by `bench/loadgen.py` (a process of its
own): first closed loop at fixed concurrency (peak throughput, p50, p99), then open loop at half
of that peak (p50, p99 without coordinated omission).
"""

# ruff: noqa: RUF001
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from authbroker.embedded import free_port
from bench.common import BENCH_DIR, Bench, Row, fmt_spread, spread, yes
from bench.data import insert_connections
from bench.profiling import Recorder, summarize

PATH = "/v1/connections/{}/credentials"


async def load(
    b: Bench,
    port: int,
    ids_file: str,
    *,
    concurrency: int,
    rate: float,
    seconds: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    out = b.env.workdir / "loadgen.json"
    args = [
        "--url",
        f"http://127.0.0.1:{port}{PATH}",
        "--ids",
        ids_file,
        "--out",
        str(out),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(seconds),
        "--warmup",
        "1",
    ]
    if rate:
        args += ["--rate", f"{rate:.1f}", "--connections", "64"]
    meter = b.cpu_meter("server", server_pid) if server_pid else None
    if meter:
        await meter.start()
    process = b.env.spawn(
        [sys.executable, "-m", "bench.loadgen", *args], "loadgen", BENCH_API_KEY=b.api_key
    )
    code = await asyncio.to_thread(process.wait)
    cpu = await meter.stop() if meter else {}
    b.env.forget(process)
    if code != 0:
        raise RuntimeError(f"load generator failed: {b.env.log_tail('loadgen')}")
    result = json.loads(out.read_text())
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} failed requests: {result['statuses']}")
    if meter:
        total = max(result["answered_total"], 1)
        result["cpu_ms"] = {
            "server": 1000 * cpu["server"] / total,
            "postgres": 1000 * cpu["postgres"] / total,
        }
        result["machine_busy"] = meter.machine_busy
    return result


async def run(b: Bench) -> None:
    s = b.sizes
    await b.reset()
    pairs = await insert_connections(
        b.pool, b.ring, b.app.id, s.credentials_connections, "cred", due=False
    )
    ids_file = b.write_json("credential-ids.json", [cid for cid, _ in pairs])
    web = b.env.authbroker("web")
    bare_port = free_port()
    bare = b.env.python(
        "bench.bare", "credentials", "--port", str(bare_port), log_name="bare-credentials"
    )
    runs: list[dict[str, Any]] = []
    try:
        await b.env.wait_http(web, b.settings.port, "authbroker-web")
        await b.env.wait_http(bare, bare_port, "bare-credentials")
        for i in range(s.runs):
            one: dict[str, Any] = {}
            servers = (("product", b.settings.port, web.pid), ("bare", bare_port, bare.pid))
            for name, port, pid in servers:
                peak = await load(
                    b,
                    port,
                    ids_file,
                    concurrency=s.load_concurrency,
                    rate=0,
                    seconds=s.load_seconds,
                    server_pid=pid,
                )
                half = await load(
                    b, port, ids_file, concurrency=0, rate=peak["rps"] / 2, seconds=s.load_seconds
                )
                one[name] = {"peak": peak, "half": half}
                print(
                    f"  credentials run {i + 1} {name}: {peak['rps']:.0f}/s p99 "
                    f"{peak['p99_ms']:.1f} ms; at half rate p99 {half['p99_ms']:.1f} ms",
                    flush=True,
                )
            runs.append(one)
        profile_line = ""
        if b.profile:
            raw = BENCH_DIR / "profile-credentials.collapsed"
            recorder = Recorder(web.pid, raw)
            prof = await load(
                b,
                b.settings.port,
                ids_file,
                concurrency=s.load_concurrency,
                rate=0,
                seconds=s.load_seconds,
            )
            recorder.stop()
            text = summarize(raw) if recorder.error is None else recorder.error
            (BENCH_DIR / "profile-credentials.txt").write_text(
                f"py-spy, `authbroker web` process, figure 2 at concurrency {s.load_concurrency} "
                f"({prof['rps']:.0f} requests/s under py-spy)\n\n{text}\n"
            )
            profile_line = (
                "Profile: `bench/profile-credentials.txt` and `bench/profile-credentials.collapsed`"
                f" (an extra peak run under py-spy: {prof['rps']:.0f}/s)."
            )
    finally:
        b.env.forget(web)
        b.env.forget(bare)

    def pick(name: str, phase: str, key: str) -> list[float]:
        return [r[name][phase][key] for r in runs]

    rps, base_rps = pick("product", "peak", "rps"), pick("bare", "peak", "rps")
    ratio = spread(rps)[1] / spread(base_rps)[1]
    half_p99 = pick("product", "half", "p99_ms")
    b.rows.append(
        Row(
            f"2a. credentials throughput ({s.credentials_connections:,} connections, "
            f"concurrency {s.load_concurrency})",
            fmt_spread(rps, "/s")
            + f"; p50 {fmt_spread(pick('product', 'peak', 'p50_ms'), ' ms', 1)}"
            f", p99 {fmt_spread(pick('product', 'peak', 'p99_ms'), ' ms', 1)}",
            fmt_spread(base_rps, "/s")
            + f"; p50 {fmt_spread(pick('bare', 'peak', 'p50_ms'), ' ms', 1)}, p99 "
            f"{fmt_spread(pick('bare', 'peak', 'p99_ms'), ' ms', 1)}",
            f"{ratio:.2f}",
            "≥ 0.6 × baseline",
            yes(ratio >= 0.6),
        )
    )
    b.rows.append(
        Row(
            "2b. credentials p99 at half the peak rate (open loop)",
            f"p99 {fmt_spread(half_p99, ' ms', 1)}; p50 "
            f"{fmt_spread(pick('product', 'half', 'p50_ms'), ' ms', 1)}",
            f"p99 {fmt_spread(pick('bare', 'half', 'p99_ms'), ' ms', 1)} (bare, at half its peak)",
            "—",
            "p99 < 10 ms",
            yes(spread(half_p99)[1] < 10),
        )
    )
    lines = [
        "### 2. Credentials request",
        "",
        f"`GET /v1/connections/{{id}}/credentials` with an API key, ids drawn at random from "
        f"{s.credentials_connections:,} connections with valid tokens. Server: `authbroker web`, "
        "one process, log level info. Baseline: `bench/bare.py credentials`, one aiohttp process "
        "doing the API key check (one SELECT of the key hash, constant-time compare), one SELECT "
        "of the connection and one decrypt; same pool size (10). Load: `bench/loadgen.py` in its "
        f"own process; closed loop at concurrency {s.load_concurrency} for {s.load_seconds:g} s "
        "after 1 s warm-up, then open loop at half the peak just measured (latency counted from "
        "the scheduled send time).",
        "",
        "CPU ms per request: the server process / its Postgres backends, during the peak run "
        "(noise-robust: it does not depend on how much CPU other work left).",
        "",
        "| run | authbroker peak /s | p50 / p99 ms | at half rate: p50 / p99 ms | CPU ms per "
        "request | machine busy | bare peak /s | p50 / p99 ms | bare at half rate: p50 / p99 ms "
        "| bare CPU ms per request | machine busy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs, 1):
        p, x = r["product"], r["bare"]
        lines.append(
            f"| {i} | {p['peak']['rps']:.0f} | {p['peak']['p50_ms']:.1f} / "
            f"{p['peak']['p99_ms']:.1f} | {p['half']['p50_ms']:.1f} / {p['half']['p99_ms']:.1f} "
            f"| {_cpu(p['peak'])} | {p['peak']['machine_busy']:.0%} "
            f"| {x['peak']['rps']:.0f} | {x['peak']['p50_ms']:.1f} / {x['peak']['p99_ms']:.1f} "
            f"| {x['half']['p50_ms']:.1f} / {x['half']['p99_ms']:.1f} | {_cpu(x['peak'])} "
            f"| {x['peak']['machine_busy']:.0%} |"
        )
    if profile_line:
        lines += ["", profile_line]
    b.sections.append("\n".join(lines))


def _cpu(result: dict[str, Any]) -> str:
    ms = result["cpu_ms"]
    return f"{ms['server']:.2f} / {ms['postgres']:.2f}"
