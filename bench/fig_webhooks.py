"""Figure 6: webhook delivery lag beside the Redis stream's, at a steady event rate.

One `authbroker worker` (relay and webhook dispatcher, as an operator starts it) and one
subscription to a receiver on loopback (aiohttp, in this process, answering 204 at once and
checking every signature with the runtime client's `verify_webhook`). Events are written
through the outbox as the use cases write them, at a fixed rate (open loop: a slow write does
not delay the next), spread over 50 connections. For each event: its commit → its arrival at
the receiver (the figure) and → its arrival on the Redis stream, read by a consumer blocked in
XREAD (the baseline: the same events, the same run). Every event must arrive, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from aiohttp import web
from authbroker_client import verify_webhook
from redis.asyncio import Redis

from authbroker import webhooks as protocol
from authbroker.embedded import free_port
from authbroker.events import EventType, make_event
from bench.common import Bench, Row, fmt_spread, percentile, spread, wait_until, yes
from storage import outbox
from storage import webhooks as stored
from storage.pool import create_pool

CONNECTIONS = 50
TARGET_MS = 200


class Receiver:
    """Records when each event arrives; counts what fails verification."""

    def __init__(self, secret: str):
        self.secret = secret
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.refused = 0
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.perf_counter()
        try:
            event = verify_webhook(request.headers, body, self.secret)
        except Exception:
            self.refused += 1
            return web.Response(status=400)
        if event["id"] in self.arrived:
            self.duplicates += 1
        self.arrived.setdefault(event["id"], at)
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class StreamReader:
    """XREAD BLOCK on the events stream: when each event id arrives."""

    def __init__(self, redis_url: str, stream: str):
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.stream = stream
        self.arrived: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last = await self.redis.xrevrange(self.stream, count=1)
        self.last_id = last[0][0] if last else "0-0"
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            answer = await self.redis.xread({self.stream: self.last_id}, block=1000, count=500)
            at = time.perf_counter()
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    self.arrived.setdefault(json.loads(fields["event"])["id"], at)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.redis.aclose()


async def one_run(b: Bench, run_no: int, rate: float, seconds: float) -> dict[str, Any]:
    await b.reset()
    secret = protocol.new_secret()
    receiver = Receiver(secret)
    url = await receiver.start()
    webhook_id = uuid.uuid4()
    await stored.create(b.pool, b.ring, webhook_id, {"url": url}, secret)
    stream = StreamReader(b.env.redis_url, b.settings.events_stream)
    worker = b.env.authbroker("worker")
    # The application's pool (JSON codecs): events are written as the use cases write them.
    pool = await create_pool(b.env.database_url, min_size=4, max_size=8)
    committed: dict[str, float] = {}
    try:
        await b.env.wait_worker_ready(worker, b.redis)
        await stream.start()
        count = int(rate * seconds)

        async def write(i: int) -> None:
            event = make_event(
                EventType.REFRESHED,
                app=b.app.name,
                connection_id=f"wh{run_no}-{i % CONNECTIONS}",
                status="active",
            )
            async with pool.acquire() as conn, conn.transaction():
                await outbox.append(conn, event)
            committed[event["id"]] = time.perf_counter()

        start = time.perf_counter()
        writes = []
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writes.append(asyncio.create_task(write(i)))
        await asyncio.gather(*writes)
        wrote_for = time.perf_counter() - start

        async def all_arrived() -> bool:
            return set(committed) <= set(receiver.arrived) and set(committed) <= set(stream.arrived)

        await wait_until(all_arrived, timeout=120, interval=0.1)
    finally:
        b.env.forget(worker)
        await pool.close()
        await stream.stop()
        await receiver.stop()
        await b.pool.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    hook_ms = [
        (receiver.arrived[i] - t) * 1000 for i, t in committed.items() if i in receiver.arrived
    ]
    stream_ms = [
        (stream.arrived[i] - t) * 1000 for i, t in committed.items() if i in stream.arrived
    ]
    missing = len(set(committed) - set(receiver.arrived))
    if missing or receiver.refused:
        raise RuntimeError(
            f"{missing} events never delivered, {receiver.refused} deliveries failed verification"
        )
    return {
        "count": len(committed),
        "rate": len(committed) / wrote_for,
        "p50": percentile(hook_ms, 0.5),
        "p99": percentile(hook_ms, 0.99),
        "max": max(hook_ms),
        "stream_p50": percentile(stream_ms, 0.5),
        "stream_p99": percentile(stream_ms, 0.99),
        "stream_max": max(stream_ms),
        "duplicates": receiver.duplicates,
    }


async def run(b: Bench) -> None:
    s = b.sizes
    runs = []
    for i in range(s.runs):
        result = await one_run(b, i, s.webhook_rate, s.webhook_seconds)
        runs.append(result)
        print(
            f"  webhooks run {i + 1}: p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms "
            f"(stream p99 {result['stream_p99']:.0f} ms)",
            flush=True,
        )
    p99s = [r["p99"] for r in runs]
    b.rows.append(
        Row(
            f"6. webhook delivery lag at {s.webhook_rate:g} events/s to a loopback receiver "
            f"({int(s.webhook_rate * s.webhook_seconds):,} events, 1 worker)",
            f"p50 {fmt_spread([r['p50'] for r in runs], ' ms')}, p99 {fmt_spread(p99s, ' ms')}",
            f"Redis stream p50 {fmt_spread([r['stream_p50'] for r in runs], ' ms')}, "
            f"p99 {fmt_spread([r['stream_p99'] for r in runs], ' ms')} (same events, same run)",
            "—",
            f"p99 < {TARGET_MS} ms",
            yes(spread(p99s)[1] < TARGET_MS),
        )
    )
    lines = [
        "### 6. Webhook delivery lag",
        "",
        "One `authbroker worker` (relay and webhook dispatcher) and one subscription to a "
        "receiver on loopback in the benchmark's process (answers 204, verifies every "
        f"signature). Events written through the outbox at {s.webhook_rate:g}/s for "
        f"{s.webhook_seconds:g} s (open loop), over {CONNECTIONS} connections. Lag: the "
        "event's commit → its arrival at the receiver; baseline: the same event's arrival on "
        "the Redis stream (a consumer blocked in XREAD).",
        "",
        "| run | events | written /s | webhook p50 / p99 / max ms | stream p50 / p99 / max ms "
        "| duplicates |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r['count']:,} | {r['rate']:.0f} | {r['p50']:.0f} / {r['p99']:.0f} / "
            f"{r['max']:.0f} | {r['stream_p50']:.0f} / {r['stream_p99']:.0f} / "
            f"{r['stream_max']:.0f} | {r['duplicates']} |"
        )
    b.sections.append("\n".join(lines))
