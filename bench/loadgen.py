"""An HTTP load generator in a process of its own (wrk is not installed on the machine).

A lean HTTP/1.1 keep-alive client on asyncio protocols (an aiohttp client costs several times
more CPU per request, and on two cores the load generator's CPU is taken from the server).

Closed loop (default): `--concurrency N` connections, each sending its next request when the
previous one is answered; measures peak throughput. Open loop (`--rate R`): request i is due at
start + i/R whatever the answers, sent on the first free connection of `--connections`, and its
latency is counted from the moment it was due, so a stalled server is not hidden (no coordinated
omission; the client's timer slack, under 1 ms, is counted against the server).

`python -m bench.loadgen --url 'http://127.0.0.1:8080/v1/connections/{}/credentials'
--ids FILE --out FILE` (API key in BENCH_API_KEY) writes a JSON summary: requests, errors,
seconds, rps, p50/p90/p99/max in milliseconds.
"""

# ruff: noqa: ASYNC230
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; Content-Length bodies only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:
            self._fail(ConnectionError("response without Content-Length"))
            return
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop > 0 else None])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(status)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(share * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(latencies: list[float], statuses: Counter[int], seconds: float) -> dict[str, Any]:
    values = sorted(latencies)
    ok = statuses.get(200, 0)
    return {
        "requests": len(values),
        "ok": ok,
        "errors": len(values) - ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": seconds,
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": percentile(values, 0.50) * 1000,
        "p90_ms": percentile(values, 0.90) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": (values[-1] if values else float("nan")) * 1000,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with open(args.ids) as handle:
        ids = json.load(handle)
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    key = os.environ["BENCH_API_KEY"]
    requests = [
        (
            f"GET {url.path.format(cid)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
        ).encode()
        for cid in ids
    ]
    loop = asyncio.get_running_loop()
    count = args.connections if args.rate else args.concurrency
    connections = []
    for _ in range(count):
        _, protocol = await loop.create_connection(HttpConnection, host, port)
        connections.append(protocol)
    rng = random.Random(1)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    measure_from = start + args.warmup
    end = measure_from + args.duration
    last_answer = measure_from

    answered = 0

    async def send(conn: HttpConnection, due: float) -> None:
        nonlocal last_answer, answered
        try:
            status = await conn.request(rng.choice(requests))
        except ConnectionError:
            status = 0
        now = time.perf_counter()
        answered += 1
        if due >= measure_from:
            latencies.append(now - due)
            statuses[status] += 1
            last_answer = now

    if args.rate:
        ticket = itertools.count()
        interval = 1.0 / args.rate

        async def open_loop(conn: HttpConnection) -> None:
            while True:
                due = start + next(ticket) * interval
                if due >= end:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await send(conn, due)

        await asyncio.gather(*(open_loop(c) for c in connections))
        seconds = args.duration
    else:

        async def closed_loop(conn: HttpConnection) -> None:
            while True:
                sent = time.perf_counter()
                if sent >= end:
                    return
                await send(conn, sent)

        await asyncio.gather(*(closed_loop(c) for c in connections))
        seconds = max(last_answer - measure_from, 1e-9)
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return {**summary(latencies, statuses, seconds), "answered_total": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP load generator for the benchmark")
    parser.add_argument("--url", required=True, help="URL with {} where a connection id goes")
    parser.add_argument("--ids", required=True, help="JSON file with the connection ids")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--connections", type=int, default=64, help="open loop: connections")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
