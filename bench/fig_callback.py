"""Figure 3: callback to `connection.authorized`, as a runtime sees it.

`authbroker run` (web + worker + relay in one process, as an operator starts it) with the fake
provider as the app's token endpoint. For each authorization: `POST /v1/apps/{app}/connections`
(start), then `GET /oauth/callback?code&state` with the state from the authorize URL and a code
the fake provider accepts, then wait for `connection.authorized` of that connection on the
Redis stream, read by a consumer blocked in XREAD. Times: callback sent → event seen (the
figure), start → event seen, and the callback's own response time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from redis.asyncio import Redis

from bench.common import Bench, Row, fmt_spread, percentile, spread, yes


class StreamWatcher:
    """XREAD BLOCK on the events stream; resolves a future per awaited connection id."""

    def __init__(self, redis_url: str, stream: str):
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.stream = stream
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last = await self.redis.xrevrange(self.stream, count=1)
        self.last_id = last[0][0] if last else "0-0"
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            answer = await self.redis.xread({self.stream: self.last_id}, block=1000, count=500)
            seen = time.perf_counter()
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    if fields.get("type") != "connection.authorized":
                        continue
                    event = json.loads(fields["event"])
                    waiter = self.waiting.pop(event.get("connection_id"), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(seen)

    def expect(self, connection_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[connection_id] = future
        return future

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.redis.aclose()


async def one_run(b: Bench, run_no: int, count: int, concurrency: int) -> dict[str, Any]:
    base = b.settings.public_url
    watcher = StreamWatcher(b.env.redis_url, b.settings.events_stream)
    await watcher.start()
    semaphore = asyncio.Semaphore(concurrency)
    to_event: list[float] = []
    from_start: list[float] = []
    callback_ms: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {b.api_key}"}
    try:
        async with aiohttp.ClientSession(base_url=base) as session:

            async def one(i: int) -> None:
                cid = f"cb{run_no}-{i:05d}"
                async with semaphore:
                    started = time.perf_counter()
                    async with session.post(
                        f"/v1/apps/{b.app.name}/connections",
                        json={"connection_id": cid},
                        headers=headers,
                    ) as response:
                        body = await response.json()
                        if response.status != 201:
                            failures.append(f"start {response.status}: {body}")
                            return
                    state = parse_qs(urlsplit(body["authorize_url"]).query)["state"][0]
                    seen = watcher.expect(cid)
                    sent = time.perf_counter()
                    async with session.get(
                        "/oauth/callback",
                        params={"state": state, "code": "code-" + secrets.token_urlsafe(12)},
                        headers={"Accept": "application/json"},
                    ) as response:
                        outcome = await response.json()
                    answered = time.perf_counter()
                    if outcome.get("status") not in ("succeeded", "pending"):
                        failures.append(f"callback: {outcome}")
                    try:
                        at = await asyncio.wait_for(seen, timeout=60)
                    except TimeoutError:
                        failures.append(f"no event for {cid}")
                        return
                    to_event.append((at - sent) * 1000)
                    from_start.append((at - started) * 1000)
                    callback_ms.append((answered - sent) * 1000)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            seconds = time.perf_counter() - t0
    finally:
        await watcher.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} authorizations failed, first: {failures[0]}")
    return {
        "count": len(to_event),
        "seconds": seconds,
        "p50": percentile(to_event, 0.5),
        "p99": percentile(to_event, 0.99),
        "max": max(to_event),
        "start_p50": percentile(from_start, 0.5),
        "start_p99": percentile(from_start, 0.99),
        "callback_p50": percentile(callback_ms, 0.5),
        "callback_p99": percentile(callback_ms, 0.99),
    }


async def run(b: Bench) -> None:
    s = b.sizes
    await b.reset()
    process = b.env.authbroker("run")
    runs = []
    try:
        await b.env.wait_http(process, b.settings.port, "authbroker-run")
        await b.env.wait_worker_ready(process, b.redis)
        for i in range(s.runs):
            result = await one_run(b, i, s.authorizations, s.callback_concurrency)
            runs.append(result)
            print(
                f"  callback run {i + 1}: p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms",
                flush=True,
            )
    finally:
        b.env.forget(process)
    p99s = [r["p99"] for r in runs]
    b.rows.append(
        Row(
            f"3. callback → `connection.authorized` seen on the stream ({s.authorizations:,} "
            f"authorizations, {s.callback_concurrency} at a time)",
            f"p50 {fmt_spread([r['p50'] for r in runs], ' ms')}, p99 {fmt_spread(p99s, ' ms')}",
            "—",
            "—",
            "p99 < 100 ms",
            yes(spread(p99s)[1] < 100),
        )
    )
    lines = [
        "### 3. Callback to `connection.authorized`",
        "",
        "`authbroker run` (web + worker + relay, one process). Per authorization: start "
        "(`POST /v1/apps/{app}/connections`), callback with the state from the authorize URL and "
        "a code the fake provider accepts (`Accept: application/json`), then the event read by a "
        f"stream consumer blocked in XREAD. {s.authorizations:,} authorizations per run, "
        f"{s.callback_concurrency} in flight.",
        "",
        "| run | callback → event p50 / p99 / max ms | start → event p50 / p99 ms | callback "
        "response p50 / p99 ms | authorizations/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['p50']:.0f} / {r['p99']:.0f} / {r['max']:.0f} | {r['start_p50']:.0f} / "
            f"{r['start_p99']:.0f} | {r['callback_p50']:.0f} / {r['callback_p99']:.0f} | "
            f"{r['count'] / r['seconds']:.0f} |"
        )
    b.sections.append("\n".join(lines))
