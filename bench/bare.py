"""The baselines: the least any implementation must do, written as plainly as possible.

- `refresh`: a bare asyncio loop, 64 refreshes at a time, each doing only what any refresh must:
  the token POST (aiohttp), sealing both tokens with the real KeyRing, one UPDATE, one XADD.
- `credentials`: a bare aiohttp server whose one handler does the API key check (one SELECT of
  the key's hash, constant-time compare), one SELECT of the connection, one decrypt.

Each runs in a process of its own, like the authbroker process it is compared with:
`python -m bench.bare refresh …` / `python -m bench.bare credentials …`.
"""

# ruff: noqa: ASYNC110, ASYNC230, ASYNC240
# (benchmark code: small files read and written between measurements, polling loops,
# typographic characters in report text)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from storage.sealing import KeyRing, aad

UPDATE = """UPDATE connections SET access_token = $2, refresh_token = $3, token_type = $4,
    expires_at = now() + make_interval(secs => $5), refresh_at = now() + make_interval(secs => $6),
    last_refresh_at = now(), version = version + 1, updated_at = now()
    WHERE id = $1"""


async def bare_refresh(args: argparse.Namespace) -> None:
    with open(args.items) as handle:
        items: list[list[str]] = json.load(handle)
    ring = KeyRing.parse(args.keys)
    pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool)
    redis = Redis.from_url(args.redis)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
    semaphore = asyncio.Semaphore(args.concurrency)
    errors = 0

    async def one(connection_id: str, refresh_token: str) -> None:
        nonlocal errors
        async with semaphore:
            async with session.post(
                args.token_url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": args.client_id,
                    "client_secret": args.client_secret,
                },
            ) as response:
                body = await response.json(content_type=None)
            if response.status != 200:
                errors += 1
                return
            access = ring.seal(
                body["access_token"], aad=aad("connections", connection_id, "access_token")
            )
            refresh = ring.seal(
                body["refresh_token"], aad=aad("connections", connection_id, "refresh_token")
            )
            lifetime = float(body["expires_in"])
            await pool.execute(
                UPDATE, connection_id, access, refresh, "Bearer", lifetime, lifetime * 0.8
            )
            event = {
                "id": str(uuid.uuid4()),
                "type": "connection.refreshed",
                "occurred_at": datetime.now(UTC).isoformat(),
                "connection_id": connection_id,
                "status": "active",
            }
            await redis.xadd(
                args.stream,
                {"type": event["type"], "event": json.dumps(event)},
                maxlen=100_000,
                approximate=True,
            )

    # Warm up the connections, then wait for the go, so the timing and the CPU accounting
    # cover the refreshes only.
    await redis.ping()
    await pool.fetchval("SELECT 1")
    await _handshake(args.out + ".ready", args.out + ".go")
    started = time.perf_counter()
    await asyncio.gather(*(one(cid, rt) for cid, rt in items))
    seconds = time.perf_counter() - started
    with open(args.out, "w") as handle:
        json.dump({"count": len(items), "errors": errors, "seconds": seconds}, handle)
    # Keep the connections open until told to quit: their backends' CPU is being read.
    await _handshake(args.out + ".done", args.out + ".quit")
    await session.close()
    await redis.aclose()
    await pool.close()


async def _handshake(tell: str, wait_for: str) -> None:
    with open(tell, "w") as handle:
        handle.write("1")
    while not os.path.exists(wait_for):
        await asyncio.sleep(0.01)


def credentials_app(pool: asyncpg.Pool, ring: KeyRing) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        parts = key.split("_")
        if scheme.lower() != "bearer" or len(parts) != 3:
            return web.json_response({"error": "unauthorized"}, status=401)
        stored = await pool.fetchval(
            "SELECT key_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL", parts[1]
        )
        if stored is None or not hmac.compare_digest(
            stored, hashlib.sha256(parts[2].encode()).digest()
        ):
            return web.json_response({"error": "unauthorized"}, status=401)
        connection_id = request.match_info["connection_id"]
        row = await pool.fetchrow(
            """SELECT access_token, token_type, expires_at FROM connections
               WHERE id = $1 AND status = 'active'""",
            connection_id,
        )
        if row is None:
            return web.json_response({"error": "not_found"}, status=404)
        token = ring.open(
            row["access_token"], aad=aad("connections", connection_id, "access_token")
        )
        return web.json_response(
            {
                "access_token": token,
                "token_type": row["token_type"],
                "expires_at": row["expires_at"].isoformat(),
                "authorization": f"{row['token_type']} {token}",
            }
        )

    app = web.Application()
    app.router.add_get("/v1/connections/{connection_id}/credentials", handler)
    return app


async def bare_credentials(args: argparse.Namespace) -> None:
    # The same pool size as authbroker's web side (storage.resources.Resources.open default).
    pool = await asyncpg.create_pool(args.dsn, min_size=2, max_size=10)
    runner = web.AppRunner(credentials_app(pool, KeyRing.parse(args.keys)), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark baselines")
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("refresh")
    r.add_argument("--dsn", default=os.environ.get("AUTHBROKER_DATABASE_URL"))
    r.add_argument("--redis", default=os.environ.get("AUTHBROKER_REDIS_URL"))
    r.add_argument("--stream", required=True)
    r.add_argument("--token-url", required=True)
    r.add_argument("--client-id", required=True)
    r.add_argument("--client-secret", required=True)  # the fake provider's
    r.add_argument("--keys", default=os.environ.get("AUTHBROKER_ENCRYPTION_KEYS"))
    r.add_argument("--items", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--concurrency", type=int, default=64)
    r.add_argument("--pool", type=int, default=20)
    c = sub.add_parser("credentials")
    c.add_argument("--dsn", default=os.environ.get("AUTHBROKER_DATABASE_URL"))
    c.add_argument("--keys", default=os.environ.get("AUTHBROKER_ENCRYPTION_KEYS"))
    c.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.what == "refresh":
        asyncio.run(bare_refresh(args))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(bare_credentials(args))


if __name__ == "__main__":
    main()
