"""Figure 5: provider outage recovery.

N connections with valid rotating refresh tokens are made due while the fake provider answers
503 to every token request; their access tokens expire during the outage (spread over it, from
a quarter of it to its end), as they would when refreshes cannot run. One `authbroker worker`
keeps at it: the token endpoint turns unavailable after ten failures in a row, one connection at
a time probes it, and the first answer releases the backlog. After the outage the provider
answers again; timed until no connection is left unrefreshed, and until no access token is
expired any more. Checked: no connection invalidated or failed, no refresh token reused.
"""

# (typographic characters in report text)
from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import Bench, Row, fmt_spread, spread, wait_until, yes
from bench.data import insert_connections

CLEAR_TARGET = 30.0  # seconds after recovery: the whole backlog refreshed
EXPIRED_TARGET = 5.0  # seconds after recovery: no access token still expired


async def one_run(b: Bench, tag: str, n: int, outage: float, max_wait: float) -> dict[str, Any]:
    await b.reset()
    pairs = await insert_connections(b.pool, b.ring, b.app.id, n, tag, due=False)
    await b.provider.register([rt for _, rt in pairs])
    worker = b.env.authbroker("worker")
    try:
        await b.env.wait_worker_ready(worker, b.redis)
        before = await b.provider.stats()
        await b.provider.set_mode("503")
        down_at = time.perf_counter()
        # Tokens that expire during the outage, each refreshed a minute before its expiry (as
        # the app's margin would have it): all due now, the most urgent first.
        await b.pool.execute(
            """WITH spread AS (
                   SELECT id, now() + make_interval(
                       secs => $1 * (0.25 + 0.75 * (hashtext(id)::bigint + 2147483648)
                                               / 4294967295.0)) AS expires
                   FROM connections)
               UPDATE connections c SET expires_at = spread.expires,
                   refresh_at = spread.expires - interval '1 minute'
               FROM spread WHERE c.id = spread.id""",
            outage,
        )
        await _sleep_until(down_at + outage)
        state = await b.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE failed_attempts > 0) AS tried,
                      count(*) FILTER (WHERE expires_at <= now()) AS expired,
                      (SELECT probes FROM token_endpoints LIMIT 1) AS probes,
                      (SELECT NOT available FROM token_endpoints LIMIT 1) AS held_back
               FROM connections"""
        )
        await b.provider.set_mode("ok")
        up_at = time.perf_counter()

        async def no_expired() -> bool:
            return not await b.pool.fetchval(
                "SELECT count(*) FROM connections WHERE status = 'active' AND expires_at <= now()"
            )

        async def cleared() -> bool:
            return await b.pending_refreshes() == 0

        fresh = await wait_until(no_expired, timeout=max_wait, interval=0.05)
        fresh_s = time.perf_counter() - up_at
        finished = await wait_until(cleared, timeout=max_wait, interval=0.1)
        clear_s = time.perf_counter() - up_at
        after = await b.provider.stats()
        counts = await b.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'failed') AS failed,
                      count(*) FILTER (WHERE problem IN ('refresh_token_invalidated',
                                                         'rotation_lost')) AS invalidated,
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
        "fresh": fresh,
        "left": counts["left_over"],
        "clear_s": clear_s,
        "fresh_s": fresh_s,
        "rate": (n - counts["left_over"]) / clear_s,
        "tried": state["tried"],
        "expired_at_recovery": state["expired"],
        "probes": state["probes"] or 0,
        "held_back": bool(state["held_back"]),
        "unavailable": delta("unavailable_503"),
        "reused": delta("reused"),
        "failed": counts["failed"],
        "invalidated": counts["invalidated"],
    }


def _cleared(r: dict[str, Any]) -> str:
    if r["finished"]:
        return f"cleared {r['clear_s']:.1f} s after recovery"
    return f"NOT cleared {r['clear_s']:.0f} s after recovery ({r['left']:,} left)"


def _fresh(r: dict[str, Any]) -> str:
    if r["fresh"]:
        return f"no token expired {r['fresh_s']:.1f} s after recovery"
    return f"tokens still expired {r['fresh_s']:.0f} s after recovery"


def _met(r: dict[str, Any]) -> bool:
    harm = r["invalidated"] + r["failed"] + r["reused"]
    return (
        harm == 0
        and r["finished"]
        and r["fresh"]
        and r["clear_s"] <= CLEAR_TARGET
        and r["fresh_s"] <= EXPIRED_TARGET
    )


async def _sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def run(b: Bench) -> None:
    s = b.sizes
    n, outage = s.outage_connections, s.outage_seconds
    runs = []
    for i in range(s.runs):
        result = await one_run(b, f"o{i}", n, outage, s.long_outage_wait)
        runs.append(result)
        print(
            f"  outage run {i + 1}: {_fresh(result)}, {_cleared(result)}, "
            f"{result['invalidated']} invalidated",
            flush=True,
        )
    clear = [r["clear_s"] for r in runs]
    fresh = [r["fresh_s"] for r in runs]
    harm = sum(r["invalidated"] + r["failed"] + r["reused"] for r in runs)
    b.figures["outage_clear"] = spread(clear)[1]
    target = f"cleared ≤ {CLEAR_TARGET:g} s, none expired > {EXPIRED_TARGET:g} s, 0 invalidated"
    b.rows.append(
        Row(
            f"5a. provider outage recovery ({n:,} due, tokens expiring, 503 for {outage:g} s)",
            f"no token expired {fmt_spread(fresh, ' s', 1)} after recovery; backlog cleared "
            f"{fmt_spread(clear, ' s', 1)} after; {harm} invalidated/failed/reused",
            "—",
            "—",
            target,
            yes(all(_met(r) for r in runs)),
        )
    )
    long_run = None
    if s.long_outage_seconds:
        long_run = await one_run(b, "olong", n, s.long_outage_seconds, s.long_outage_wait)
        print(
            f"  outage {s.long_outage_seconds:g} s: {_fresh(long_run)}, {_cleared(long_run)}, "
            f"{long_run['invalidated']} invalidated",
            flush=True,
        )
        long_harm = long_run["invalidated"] + long_run["failed"] + long_run["reused"]
        b.rows.append(
            Row(
                f"5b. the same with a {s.long_outage_seconds:g} s outage (one run)",
                f"{_fresh(long_run)}; backlog {_cleared(long_run)}; {long_harm} "
                "invalidated/failed/reused",
                "—",
                "—",
                target,
                yes(_met(long_run)),
            )
        )
    lines = [
        "### 5. Provider outage recovery",
        "",
        f"{n:,} connections made due while the fake provider answers 503 to every token request "
        f"for {outage:g} s in {s.runs} runs, then once for {s.long_outage_seconds:g} s; their "
        "access tokens expire during the outage (spread from a quarter of it to its end). One "
        "`authbroker worker`. After ten failures in a row the token endpoint is held back as "
        "unavailable and probed by one connection at a time (2 s growing to 30 s, every second "
        "while tokens are expiring); its first answer releases the backlog. 'No token expired' "
        "= no active connection with `expires_at` in the past; 'cleared' = no connection left "
        "with `last_refresh_at IS NULL`.",
        "",
        "| run | tokens fresh again | backlog | 503s served | connections tried during outage "
        "| expired at recovery | probes | invalidated / failed / reused |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate([*runs, *([long_run] if long_run else [])], 1):
        label = f"{s.long_outage_seconds:g} s outage" if r is long_run else str(i)
        lines.append(
            f"| {label} | {_fresh(r)} | {_cleared(r)} ({r['rate']:.0f}/s) | "
            f"{r['unavailable']:,} | {r['tried']:,} | {r['expired_at_recovery']:,} | "
            f"{r['probes']} | {r['invalidated']} / {r['failed']} / {r['reused']} |"
        )
    b.sections.append("\n".join(lines))
