"""`python -m bench`: measure authbroker on this machine and write bench/RESULTS.md.

Every figure is measured beside its baseline in the same run (min/median/max over the runs).
`--quick` runs each figure once with small sizes, for development; its RESULTS go to
bench/RESULTS-quick.md so they never pass for the real thing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import traceback
from dataclasses import replace
from typing import Any

import asyncpg
from redis.asyncio import Redis

from authbroker.embedded import free_port
from authbroker.logs import configure_logging
from bench import report
from bench.common import BENCH_DIR, FULL, QUICK, Bench, Row
from bench.data import create_app
from bench.env import BenchEnv
from bench.provider import CLIENT_ID, CLIENT_SECRET, ProviderProcess
from storage import api_keys

FIGURES = ("refresh", "credentials", "callback", "scheduler", "outage", "webhooks")


async def _figure(b: Bench, name: str) -> None:
    from bench import (
        fig_callback,
        fig_credentials,
        fig_outage,
        fig_refresh,
        fig_scheduler,
        fig_webhooks,
    )

    module: Any = {
        "refresh": fig_refresh,
        "credentials": fig_credentials,
        "callback": fig_callback,
        "scheduler": fig_scheduler,
        "outage": fig_outage,
        "webhooks": fig_webhooks,
    }[name]
    await module.run(b)


async def main_async(args: argparse.Namespace) -> int:
    sizes = replace(QUICK if args.quick else FULL)
    if args.runs:
        sizes.runs = args.runs
    if args.outage_seconds:
        sizes.outage_seconds = args.outage_seconds
    for item in args.set or []:
        name, _, value = item.partition("=")
        if not hasattr(sizes, name):
            raise SystemExit(f"--set {item}: unknown size {name!r}")
        setattr(sizes, name, type(getattr(sizes, name))(value))
    configure_logging("json", "warning")
    started = time.time()
    env = await BenchEnv.open()
    provider = ProviderProcess(free_port()).start()
    pool = await asyncpg.create_pool(
        env.database_url,
        min_size=1,
        max_size=4,
        server_settings={"application_name": "bench-driver"},
    )
    redis = Redis.from_url(env.redis_url, decode_responses=True)
    print(f"bench: database {env.database}, Redis prefix {env.settings.redis_prefix}", flush=True)
    failures: list[str] = []
    load = report.BackgroundLoad()
    load.start()
    try:
        app = await create_app(pool, env.ring, "bench", provider.url, CLIENT_ID, CLIENT_SECRET)
        _, key = await api_keys.create(pool, "bench")
        b = Bench(env, provider, pool, redis, app, key, sizes, profile=not args.no_profile)
        chosen = args.only or list(FIGURES)
        for name in chosen:
            print(f"figure: {name}", flush=True)
            t0 = time.monotonic()
            try:
                await _figure(b, name)
            except Exception as exc:
                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                b.rows.append(Row(name, "failed to run", "", "", "", f"error: {exc}"[:200]))
            print(f"  {name} took {time.monotonic() - t0:.0f} s", flush=True)
        path = BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
        if args.only and not args.quick:
            path = BENCH_DIR / "RESULTS-partial.md"
        await load.stop()
        await report.write(b, path, started=started, quick=args.quick, failures=failures, load=load)
        print(f"wrote {path}", flush=True)
    finally:
        await load.stop()
        await pool.close()
        await redis.aclose()
        provider.stop()
        await env.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per figure, small sizes")
    parser.add_argument("--runs", type=int, default=0, help="runs per figure (default 3)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="only these figures")
    parser.add_argument(
        "--outage-seconds", type=float, default=0.0, help="provider outage length (default 20)"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy profiles and the diagnostic runs"
    )
    parser.add_argument(
        "--set", nargs="+", metavar="NAME=VALUE", help="override a size (see bench/common.py)"
    )
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))
