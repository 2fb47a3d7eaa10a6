"""The arq worker: its jobs, its crons, and what it opens at start and closes at the end."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq import cron
from arq.worker import Worker, func
from prometheus_client import start_http_server

from authbroker.config import Settings
from authbroker.logs import get_logger
from storage.resources import Resources, redis_settings
from storage.sealing import KeyRing
from worker.context import CTX_KEY, WorkerContext, provider_session
from worker.exchange import exchange_code
from worker.probe import probe_connection, schedule_probes
from worker.refresh import refresh_connection, schedule_refreshes
from worker.relay import Relay
from worker.revoke import revoke_connection
from worker.sweep import expire_authorizations, prune, sweep_codes, sweep_revocations

log = get_logger("authbroker.worker")

EVERY_15_SECONDS = {0, 15, 30, 45}


def build_worker(
    settings: Settings,
    ring: KeyRing,
    *,
    relay: bool = True,
    concurrency: int | None = None,
    handle_signals: bool = False,
) -> Worker:
    """An arq Worker bound to the settings' Redis and queue; `relay` also runs the event relay
    (safe on every worker: only one relays at a time)."""

    async def startup(ctx: dict[str, Any]) -> None:
        resources = await Resources.open(settings, ring, pool_max=concurrency_ + 2)
        wc = WorkerContext(resources=resources, http=provider_session())
        ctx[CTX_KEY] = wc
        if relay:
            ctx["relay"] = Relay(
                settings.database_url or "",
                resources.redis,
                stream=settings.events_stream,
                channel=settings.events_channel,
            )
            wc.tasks.append(asyncio.create_task(ctx["relay"].run(), name="relay"))
        if settings.metrics_port:
            # The worker has no web server of its own: expose its metrics on a port.
            start_http_server(settings.metrics_port, addr=settings.host)
        log.info("worker_started", worker_id=wc.worker_id, queue=settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        wc: WorkerContext | None = ctx.get(CTX_KEY)
        if wc is None:
            return
        if "relay" in ctx:
            await ctx["relay"].stop()
        for task in wc.tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        await wc.http.close()
        await wc.resources.close()
        log.info("worker_stopped", worker_id=wc.worker_id)

    concurrency_ = concurrency or settings.worker_concurrency
    return Worker(
        functions=[
            func(exchange_code, max_tries=30, timeout=60),
            func(revoke_connection, max_tries=10, timeout=120),
            # Refresh outcomes live in Postgres; no result kept, so the job id frees at once.
            func(refresh_connection, max_tries=1, timeout=300, keep_result=0),
            func(probe_connection, max_tries=1, timeout=300, keep_result=0),
        ],
        cron_jobs=[
            # Cron job ids are global in arq; the prefix keeps deployments sharing a Redis apart.
            cron(
                schedule_refreshes,
                name=f"{settings.redis_prefix}:schedule_refreshes",
                second=set(range(60)),
                run_at_startup=True,
            ),
            cron(
                sweep_codes,
                name=f"{settings.redis_prefix}:sweep_codes",
                second=EVERY_15_SECONDS,
                run_at_startup=True,
            ),
            cron(
                expire_authorizations,
                name=f"{settings.redis_prefix}:expire_authorizations",
                second={5, 35},
            ),
            cron(
                sweep_revocations,
                name=f"{settings.redis_prefix}:sweep_revocations",
                second={10, 40},
            ),
            cron(
                schedule_probes,
                name=f"{settings.redis_prefix}:schedule_probes",
                second={20, 50},
            ),
            cron(prune, name=f"{settings.redis_prefix}:prune", minute={17}, second={0}),
        ],
        redis_settings=redis_settings(settings.redis_url or ""),
        queue_name=settings.queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=concurrency_,
        handle_signals=handle_signals,
        keep_result=3600,
        job_completion_wait=20,
        poll_delay=0.2,
    )


async def stop_worker(worker: Worker, grace: float = 20.0) -> None:
    """Stop taking jobs, let the running ones finish (up to `grace` seconds), then close; a
    job cut short keeps its lease until it expires, so nothing is refreshed twice."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=grace)
    await worker.close()
    if worker.main_task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.main_task
