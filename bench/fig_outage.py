"""Figure 5: provider outage recovery.

N connections with valid rotating refresh tokens are made due while the fake provider answers
503 to every token request; one `authbroker worker` keeps trying (transient failures back off
with full jitter, BACKOFF_BASE 5 s, cap 900 s, in services/refresh.py). After the outage the
provider answers again; timed until no connection is left unrefreshed. Checked: no connection
invalidated, no refresh token reused. The clearing rate is compared with figure 1's throughput.
"""

# ruff: noqa: RUF001
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import time
from typing import Any

from bench.common import Bench, Row, fmt_spread, spread, wait_until, yes
from bench.data import insert_connections
from services.refresh import BACKOFF_BASE, BACKOFF_CAP


async def one_run(
    b: Bench, tag: str, n: int, outage: float, max_wait: float = BACKOFF_CAP + 120
) -> dict[str, Any]:
    await b.reset()
    pairs = await insert_connections(b.pool, b.ring, b.app.id, n, tag, due=False)
    await b.provider.register([rt for _, rt in pairs])
    worker = b.env.authbroker("worker")
    try:
        await b.env.wait_worker_ready(worker, b.redis)
        before = await b.provider.stats()
        await b.provider.set_mode("503")
        down_at = time.perf_counter()
        await b.pool.execute("UPDATE connections SET refresh_at = now() - interval '1 second'")
        await _sleep_until(down_at + outage)
        state = await b.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE failed_attempts > 0) AS tried,
                      max(failed_attempts) AS max_attempts,
                      avg(failed_attempts) AS mean_attempts,
                      extract(epoch FROM max(refresh_at) - now()) AS last_retry_in
               FROM connections"""
        )
        await b.provider.set_mode("ok")
        up_at = time.perf_counter()

        async def cleared() -> bool:
            return await b.pending_refreshes() == 0

        finished = await wait_until(cleared, timeout=max_wait, interval=0.1)
        clear_s = time.perf_counter() - up_at
        after = await b.provider.stats()
        counts = await b.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'failed') AS failed,
                      count(*) FILTER (WHERE problem = 'refresh_token_invalidated') AS invalidated,
                      count(*) FILTER (WHERE last_refresh_at IS NULL) AS left_over
               FROM connections"""
        )
    finally:
        await b.provider.set_mode("ok")
        b.env.forget(worker)

    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    return {
        "finished": finished,
        "left": counts["left_over"],
        "clear_s": clear_s,
        "rate": (n - counts["left_over"]) / clear_s,
        "tried": state["tried"],
        "max_attempts": state["max_attempts"],
        "mean_attempts": float(state["mean_attempts"] or 0),
        "last_retry_in": float(state["last_retry_in"] or 0),
        "unavailable": delta("unavailable_503"),
        "reused": delta("reused"),
        "failed": counts["failed"],
        "invalidated": counts["invalidated"],
    }


def _cleared(r: dict[str, Any]) -> str:
    if r["finished"]:
        return f"cleared {r['clear_s']:.1f} s after recovery"
    return (
        f"NOT cleared {r['clear_s']:.0f} s after recovery ({r['left']:,} left; the last retry "
        f"was scheduled {r['last_retry_in']:.0f} s after recovery)"
    )


async def _sleep_until(moment: float) -> None:
    import asyncio

    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run(b: Bench) -> None:
    s = b.sizes
    n, outage = s.outage_connections, s.outage_seconds
    runs = []
    for i in range(s.runs):
        result = await one_run(b, f"o{i}", n, outage)
        runs.append(result)
        print(
            f"  outage run {i + 1}: cleared {result['clear_s']:.1f} s after recovery "
            f"({result['rate']:.0f}/s), {result['invalidated']} invalidated",
            flush=True,
        )
    reference = b.figures.get("refresh_rate")
    rates = [r["rate"] for r in runs]
    clear = [r["clear_s"] for r in runs]
    harm = sum(r["invalidated"] + r["failed"] + r["reused"] for r in runs)
    ratio = spread(rates)[1] / reference if reference else None
    b.rows.append(
        Row(
            f"5a. provider outage recovery ({n:,} due, 503 for {outage:g} s)",
            f"backlog cleared {fmt_spread(clear, ' s', 1)} after recovery = "
            f"{fmt_spread(rates, '/s')}; {harm} invalidated/failed/reused",
            f"{reference:.0f}/s (figure 1, median)" if reference else "figure 1 not run",
            f"{ratio:.2f}" if ratio is not None else "—",
            "no invalidation; ≥ 0.5 × throughput",
            yes(
                harm == 0
                and ratio is not None
                and ratio >= 0.5
                and all(r["finished"] for r in runs)
            ),
        )
    )
    lines = [
        "### 5. Provider outage recovery",
        "",
        f"{n:,} connections made due while the fake provider answers 503 to every token request "
        f"for {outage:g} s in {s.runs} runs (shortened from the issue's 60 s to keep `make bench` "
        f"short), then once for {s.long_outage_seconds:g} s (waiting at most "
        f"{s.long_outage_wait:g} s for the backlog to clear); one "
        f"`authbroker worker`; retries back off with full jitter (base {BACKOFF_BASE:g} s, cap "
        f"{BACKOFF_CAP:g} s). Cleared = no connection left with `last_refresh_at IS NULL`.",
        "",
        "| run | cleared after recovery | rate | 503s served | connections tried during "
        "outage | attempts, mean / max | latest retry scheduled at recovery | invalidated / "
        "failed / reused |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    long_run = None
    if s.long_outage_seconds:
        long_run = await one_run(b, "olong", n, s.long_outage_seconds, max_wait=s.long_outage_wait)
        print(
            f"  outage {s.long_outage_seconds:g} s: {_cleared(long_run)} "
            f"({long_run['rate']:.0f}/s), {long_run['invalidated']} invalidated",
            flush=True,
        )
        long_ratio = long_run["rate"] / reference if reference else None
        long_harm = long_run["invalidated"] + long_run["failed"] + long_run["reused"]
        b.rows.append(
            Row(
                f"5b. the same with the issue's {s.long_outage_seconds:g} s outage (one run)",
                f"backlog {_cleared(long_run)} = {long_run['rate']:.0f}/s; {long_harm} "
                "invalidated/failed/reused",
                f"{reference:.0f}/s (figure 1, median)" if reference else "figure 1 not run",
                f"{long_ratio:.2f}" if long_ratio is not None else "—",
                "no invalidation; ≥ 0.5 × throughput",
                yes(
                    long_harm == 0
                    and long_ratio is not None
                    and long_ratio >= 0.5
                    and long_run["finished"]
                ),
            )
        )
    for i, r in enumerate([*runs, *([long_run] if long_run else [])], 1):
        if long_run is not None and r is long_run:
            i = f"{s.long_outage_seconds:g} s outage"  # type: ignore[assignment]
        lines.append(
            f"| {i} | {_cleared(r)} | {r['rate']:.0f}/s | {r['unavailable']:,} | "
            f"{r['tried']:,} | {r['mean_attempts']:.1f} / {r['max_attempts']} | "
            f"+{r['last_retry_in']:.1f} s | {r['invalidated']} / {r['failed']} / {r['reused']} |"
        )
    b.sections.append("\n".join(lines))
