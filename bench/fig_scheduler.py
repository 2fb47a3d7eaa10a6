"""Figure 4: the scheduler at scale.

Minimal connection rows inserted with generate_series (active, no secrets, 1 % due, the others
due within the hour). One scheduling pass is the refresh engine's claim: the real
`storage.leases.claim(pool, holder, 500, …)`, one statement that leases up to 500 due
connections with their apps; the leases are dropped after each pass so every pass claims anew.
Baseline: the same pass over 10,000 connections with as many due (equal work). Worker RSS: a
real `authbroker worker` over the table for a while (it claims and handles the due rows), peak
RSS from /proc.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.common import Bench, Row, fmt_spread, spread, yes
from bench.data import insert_minimal, restore_minimal_due, vacuum_analyze
from bench.env import rss_mb
from services.refresh import LEASE_SECONDS
from storage import leases
from storage.resources import Resources

DUE_EVERY = 100  # 1 % due
SCHEDULER_BATCH = 500  # connections one pass claims at most (a worker claims its free slots)


async def release(res: Resources) -> None:
    await res.pool.execute(
        "UPDATE connections SET lease_holder = NULL, lease_until = NULL "
        "WHERE lease_holder LIKE 'bench:%'"
    )


async def passes(b: Bench, res: Resources, times: int) -> dict[str, Any]:
    """One warm-up pass, then `times` timed passes, each claiming anew."""
    pass_ms, enqueued = [], []
    for i in range(times + 1):
        await release(res)
        t0 = time.perf_counter()
        claimed = await leases.claim(res.pool, f"bench:{i}", SCHEDULER_BATCH, LEASE_SECONDS)
        elapsed = (time.perf_counter() - t0) * 1000
        if i == 0:
            continue  # warm-up: caches, prepared statements
        pass_ms.append(elapsed)
        enqueued.append(len(claimed))
    await release(res)
    return {"pass_ms": pass_ms, "enqueued": enqueued}


async def worker_rss(b: Bench, seconds: float) -> dict[str, float]:
    worker = b.env.authbroker("worker")
    peak = current = 0.0
    try:
        await b.env.wait_worker_ready(worker, b.redis)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            current, peak = rss_mb(worker.pid)
            await asyncio.sleep(0.25)
        handled = await b.pool.fetchval(
            "SELECT count(*) FROM connections WHERE id LIKE 'm%' AND refresh_at IS NULL"
        )
    finally:
        b.env.forget(worker)
    return {"rss": current, "peak": peak, "handled": handled}


async def explain(b: Bench) -> str:
    """The plan of the claim (run, then rolled back, so nothing stays leased)."""
    async with b.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + leases.CLAIM_DUE,
                "bench:explain",
                LEASE_SECONDS,
                SCHEDULER_BATCH,
            )
        finally:
            await tx.rollback()
    return "\n".join(r[0] for r in rows)


async def run(b: Bench) -> None:
    s = b.sizes
    times = max(3, s.runs)
    await b.reset()
    res = await Resources.open(b.settings, b.ring, pool_max=4)
    try:
        small = s.scale_baseline
        await insert_minimal(b.pool, b.app.id, 1, small, DUE_EVERY)
        await vacuum_analyze(b.env.database_url)
        base = await passes(b, res, times)
        print(f"  scheduler, {small:,} rows: pass {statistics.median(base['pass_ms']):.0f} ms")
        # Equal work: as many due as the big table's pass claims (a full batch).
        await b.pool.execute(
            """UPDATE connections SET refresh_at = now() - interval '1 minute'
               WHERE id IN (SELECT id FROM connections WHERE refresh_at > now()
                            ORDER BY id LIMIT $1)""",
            SCHEDULER_BATCH - small // DUE_EVERY,
        )
        equal = await passes(b, res, times)
        await b.pool.execute(
            """UPDATE connections SET refresh_at = now() + interval '30 minutes'
               WHERE refresh_at BETWEEN now() - interval '2 minutes' AND now()
                 AND substr(id, 2)::int % $1 <> 0""",
            DUE_EVERY,
        )
        rss_small = await worker_rss(b, s.rss_seconds)
        await restore_minimal_due(b.pool, 1, small, DUE_EVERY)

        big = s.scale_connections
        t0 = time.perf_counter()
        await insert_minimal(b.pool, b.app.id, small + 1, big, DUE_EVERY)
        await vacuum_analyze(b.env.database_url)
        insert_s = time.perf_counter() - t0
        total = await b.pool.fetchval("SELECT count(*) FROM connections")
        due_now = await b.pool.fetchval(
            "SELECT count(*) FROM connections WHERE status = 'active' AND refresh_at <= now()"
        )
        large = await passes(b, res, times)
        plan = await explain(b)
        print(f"  scheduler, {total:,} rows: pass {statistics.median(large['pass_ms']):.0f} ms")
        rss_big = await worker_rss(b, s.rss_seconds)
    finally:
        await res.close()
        await b.reset()

    ratio = spread(large["pass_ms"])[1] / spread(equal["pass_ms"])[1]
    naive = spread(large["pass_ms"])[1] / spread(base["pass_ms"])[1]
    b.rows.append(
        Row(
            f"4a. scheduling pass (one claim of up to {SCHEDULER_BATCH}), {total:,} connections "
            f"({due_now:,} due)",
            fmt_spread(large["pass_ms"], " ms"),
            f"{fmt_spread(equal['pass_ms'], ' ms')} ({small:,} connections, "
            f"{equal['enqueued'][0]} claimed: equal work)",
            f"{ratio:.2f}",
            "≤ 2",
            yes(ratio <= 2),
        )
    )
    b.rows.append(
        Row(
            f"4b. the same pass against {small:,} connections with 1 % due (diagnostic)",
            fmt_spread(large["pass_ms"], " ms"),
            f"{fmt_spread(base['pass_ms'], ' ms')} ({base['enqueued'][0]} due and claimed)",
            f"{naive:.2f}",
            "(diagnostic: unequal work)",
            "—",
        )
    )
    b.rows.append(
        Row(
            f"4c. worker RSS over {total:,} connections (peak, {s.rss_seconds:g} s running)",
            f"{rss_big['peak']:.0f} MB",
            f"{rss_small['peak']:.0f} MB ({small:,} connections)",
            f"{rss_big['peak'] / rss_small['peak']:.2f}",
            "< 200 MB",
            yes(rss_big["peak"] < 200),
        )
    )
    lines = [
        "### 4. Scheduler at scale",
        "",
        f"Rows inserted with one `INSERT … SELECT generate_series` ({big - small:,} rows in "
        f"{insert_s:.0f} s including VACUUM ANALYZE): active, no secrets, every {DUE_EVERY}th "
        "due, the others due within the hour. There is no central scheduler: each worker's pass "
        "is one claim, `storage.leases.claim(pool, holder, n, …)` (an UPDATE of up to n due "
        "rows picked with `FOR UPDATE SKIP LOCKED` in `refresh_at` order, the apps joined), run "
        f"here with n = {SCHEDULER_BATCH} and the leases dropped before each pass; one warm-up "
        f"pass, then {times} timed passes.",
        "",
        "| table | due | claimed per pass | pass ms (each) |",
        "| --- | --- | --- | --- |",
        f"| {small:,} | {small // DUE_EVERY:,} | {base['enqueued'][0]} | "
        f"{', '.join(f'{x:.1f}' for x in base['pass_ms'])} |",
        f"| {small:,} (equal work) | {equal['enqueued'][0]} | {equal['enqueued'][0]} | "
        f"{', '.join(f'{x:.1f}' for x in equal['pass_ms'])} |",
        f"| {total:,} | {due_now:,} | {large['enqueued'][0]} | "
        f"{', '.join(f'{x:.1f}' for x in large['pass_ms'])} |",
        "",
        f"Per claimed connection: {spread(equal['pass_ms'])[1] / max(equal['enqueued'][0], 1):.3f}"
        f" ms at {small:,} rows, {spread(large['pass_ms'])[1] / max(large['enqueued'][0], 1):.3f} "
        f"ms at {total:,}.",
        "",
        f"Worker RSS: {rss_small['peak']:.0f} MB peak over {small:,} rows, {rss_big['peak']:.0f} "
        f"MB peak over {total:,} rows ({rss_big['handled']:,} due rows handled in "
        f"{s.rss_seconds:g} s).",
        "",
        "Plan of the claim at the large size (run and rolled back):",
        "",
        "```",
        plan,
        "```",
    ]
    b.sections.append("\n".join(lines))
