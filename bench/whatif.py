"""What-if runs: `authbroker` with proposed product changes applied as patches at start, so their
gain can be measured with the same harness before anyone edits the product.

`python -m bench --whatif pool_reset,touch_once … --only credentials` starts
`python -m bench.whatif <command>` instead of `authbroker <command>`, with the patches named in
BENCH_WHATIF. Results go to bench/RESULTS-whatif.md, never to RESULTS.md. The patches:

- `pool_reset`: asyncpg pools return connections without the reset query (one round trip per
  pool use); safe because authbroker's pool connections never LISTEN, SET or take advisory
  locks (the relay and migrations use connections of their own).
- `touch_once`: `api_keys.touch` at most once a minute per key and process, not per request.
- `poll_fast`: arq polls the queue every 20 ms instead of 200 ms.
- `batch_refresh`: the scheduler refreshes the due connections itself, as many at a time as the
  worker has job slots, each under its lease, batch after batch while any is due, instead of
  one arq job per connection (no per-job Redis bookkeeping, no 1 s cron cadence).
- `batch_enqueue`: the scheduler enqueues its whole batch in one Redis call (a Lua script that
  does what arq's `enqueue_job` does per job: skip ids whose job or result exists, else store
  the job and add it to the queue) instead of three round trips per connection.
- `lean_refresh`: apps cached for 5 s per process in the refresh path; the outbox row and its
  NOTIFY in one statement.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

PATCHES = (
    "pool_reset",
    "touch_once",
    "poll_fast",
    "batch_refresh",
    "lean_refresh",
    "batch_enqueue",
)


def apply(names: list[str]) -> None:
    for name in names:
        if name not in PATCHES:
            raise SystemExit(f"unknown what-if patch {name!r}; known: {', '.join(PATCHES)}")
        globals()[f"_{name}"]()


def _pool_reset() -> None:
    import storage.pool
    import storage.resources

    original = storage.pool.create_pool

    async def keep_session(conn: Any) -> None:
        return None

    async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any) -> Any:
        return await original(dsn, min_size=min_size, max_size=max_size, reset=keep_session, **kw)

    storage.pool.create_pool = create_pool
    storage.resources.create_pool = create_pool


def _touch_once() -> None:
    from storage import api_keys

    original = api_keys.touch
    last: dict[str, float] = {}

    async def touch(db: Any, key_id: str) -> None:
        now = time.monotonic()
        if now - last.get(key_id, -1e9) < 60:
            return
        last[key_id] = now
        await original(db, key_id)

    api_keys.touch = touch


def _poll_fast() -> None:
    import worker.settings

    base = worker.settings.Worker

    class Worker(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any):
            kw["poll_delay"] = 0.02
            super().__init__(*args, **kw)

    worker.settings.Worker = Worker


def _batch_refresh() -> None:
    import worker.refresh
    import worker.settings
    from worker.context import WorkerContext

    running = asyncio.Lock()

    async def schedule_refreshes(ctx: dict[str, Any]) -> int:
        if running.locked():
            return 0
        async with running:
            wc = WorkerContext.of(ctx)
            pool = wc.resources.pool
            # As many at once as the worker has job slots (its pool is sized slots + 2).
            semaphore = asyncio.Semaphore(max(pool.get_max_size() - 2, 1))
            done = 0

            async def one(connection_id: str) -> None:
                async with semaphore:
                    await worker.refresh.refresh_connection(
                        {**ctx, "job_id": f"batch-{connection_id}"}, connection_id
                    )

            # Keep going while there is due work, not one batch per cron second.
            started = time.monotonic()
            while time.monotonic() - started < 50:
                due = await worker.refresh.connections.due(pool, worker.refresh.SCHEDULER_BATCH)
                if not due:
                    break
                await asyncio.gather(*(one(c) for c in due))
                done += len(due)
            return done

    schedule_refreshes.__qualname__ = "schedule_refreshes"
    worker.refresh.schedule_refreshes = schedule_refreshes
    worker.settings.schedule_refreshes = schedule_refreshes


def _lean_refresh() -> None:
    import worker.refresh
    from storage import outbox

    get_by_id = worker.refresh.apps.get_by_id
    cache: dict[Any, tuple[float, Any]] = {}

    async def cached_app(db: Any, app_id: Any) -> Any:
        now = time.monotonic()
        hit = cache.get(app_id)
        if hit and now - hit[0] < 5:
            return hit[1]
        app = await get_by_id(db, app_id)
        cache[app_id] = (now, app)
        return app

    original_append = outbox.append

    async def append(conn: Any, *events: dict[str, Any]) -> None:
        if len(events) != 1:
            await original_append(conn, *events)
            return
        await conn.execute(
            """WITH added AS (INSERT INTO outbox (event) VALUES ($1) RETURNING id)
               SELECT pg_notify($2, '') FROM added""",
            events[0],
            outbox.NOTIFY_CHANNEL,
        )

    class AppsProxy:
        def __getattr__(self, name: str) -> Any:
            return cached_app if name == "get_by_id" else getattr(worker.refresh.apps_module, name)

    worker.refresh.apps_module = worker.refresh.apps
    worker.refresh.apps = AppsProxy()
    outbox.append = append


ENQUEUE_MANY = """
local added = 0
for i = 1, #KEYS do
  local id = KEYS[i]
  if redis.call('EXISTS', 'arq:job:' .. id, 'arq:result:' .. id) == 0 then
    redis.call('PSETEX', 'arq:job:' .. id, ARGV[1], ARGV[i + 3])
    redis.call('ZADD', ARGV[2], ARGV[3], id)
    added = added + 1
  end
end
return added
"""


def _batch_enqueue() -> None:
    from arq.jobs import serialize_job
    from arq.utils import timestamp_ms

    import worker.refresh
    import worker.settings
    from storage.jobs import job_id
    from worker.context import WorkerContext

    async def schedule_refreshes(ctx: dict[str, Any]) -> int:
        wc = WorkerContext.of(ctx)
        res = wc.resources
        due = await worker.refresh.connections.due(res.pool, worker.refresh.SCHEDULER_BATCH)
        if not due:
            return 0
        now = timestamp_ms()
        ids = [job_id(res, "refresh", c) for c in due]
        jobs = [
            serialize_job("refresh_connection", (c, False), {}, None, now, serializer=None)
            for c in due
        ]
        await res.redis.eval(
            ENQUEUE_MANY,
            len(ids),
            *ids,
            res.redis.expires_extra_ms,
            res.settings.queue_name,
            now,
            *jobs,
        )
        return len(due)

    schedule_refreshes.__qualname__ = "schedule_refreshes"
    worker.refresh.schedule_refreshes = schedule_refreshes
    worker.settings.schedule_refreshes = schedule_refreshes


def main() -> int:
    names = [n for n in os.environ.get("BENCH_WHATIF", "").split(",") if n]
    apply(names)
    from authbroker.cli import main as authbroker_main

    return authbroker_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
