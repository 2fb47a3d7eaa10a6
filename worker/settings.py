"""The arq worker: its jobs, its crons, and what it opens at start and closes at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from arq import cron
from arq.cron import CronJob
from arq.worker import Worker, func
from prometheus_client import start_http_server

from authbroker.config import Settings
from authbroker.logs import get_logger
from services import queue
from storage import gauges
from storage.resources import Resources, redis_settings
from storage.sealing import KeyRing
from worker.context import CTX_KEY, WorkerContext, provider_session
from worker.engine import RefreshEngine
from worker.jobs import (
    exchange_code,
    expire_authorizations,
    mark_expired_tokens,
    probe_connection,
    prune,
    revoke_connection,
    schedule_probes,
    sweep_codes,
    sweep_revocations,
)
from worker.relay import Relay
from worker.webhooks import WebhookDispatcher

log = get_logger("authbroker.worker")

EVERY_5_SECONDS = set(range(0, 60, 5))
EVERY_15_SECONDS = {0, 15, 30, 45}
ENGINE_KEY = "refresh_engine"
_metrics_served: list[int] = []


def build_worker(
    settings: Settings,
    ring: KeyRing,
    *,
    relay: bool = True,
    concurrency: int | None = None,
    handle_signals: bool = False,
    periodic: bool = True,
) -> Worker:
    """An arq Worker bound to the settings' Redis and queue, with the refresh engine running
    beside its jobs; `relay` also runs the event relay (safe on every worker: only one relays
    at a time) and the webhook deliveries. `concurrency` bounds both the arq jobs and the
    refreshes in flight. Without `periodic` it only runs the jobs it is given: no refresh
    engine, no sweeps (for tests that drive those themselves)."""

    async def startup(ctx: dict[str, Any]) -> None:
        resources = await Resources.open(settings, ring, pool_max=concurrency_ + 4)
        http = provider_session(settings.outbound, per_host=concurrency_)
        wc = WorkerContext(resources=resources, http=http)
        ctx[CTX_KEY] = wc
        if periodic:
            ctx[ENGINE_KEY] = engine = RefreshEngine(
                wc, concurrency=concurrency_, dsn=settings.database_url or ""
            )
            engine.start()
        if relay:
            ctx["relay"] = Relay(
                settings.database_url or "",
                resources.redis,
                stream=settings.events_stream,
                channel=settings.events_channel,
            )
            wc.tasks.append(asyncio.create_task(ctx["relay"].run(), name="relay"))
            webhooks = WebhookDispatcher(resources, rules=settings.outbound)
            wc.tasks.append(asyncio.create_task(webhooks.run(), name="webhooks"))
        if settings.metrics_port:
            if not _metrics_served:
                # The worker has no web server of its own: expose its metrics on a port, once
                # per process (a supervised worker may start again).
                start_http_server(settings.metrics_port, addr=settings.host)
                _metrics_served.append(settings.metrics_port)
            wc.tasks.append(asyncio.create_task(_sample_gauges(resources), name="gauges"))
        log.info("worker_started", worker_id=wc.worker_id, queue=settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        wc: WorkerContext | None = ctx.pop(CTX_KEY, None)  # idempotent: may run twice
        if wc is None:
            return
        engine: RefreshEngine | None = ctx.pop(ENGINE_KEY, None)
        if engine is not None:
            await engine.stop(grace=0)
        if "relay" in ctx:
            await ctx["relay"].stop()
        for task in wc.tasks:
            if task.get_name() != "relay":  # the relay flushes and ends; others just stop
                task.cancel()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        await wc.http.close()
        await wc.resources.close()
        log.info("worker_stopped", worker_id=wc.worker_id)

    concurrency_ = concurrency or settings.worker_concurrency
    # A job may send a few provider requests (client-auth placements, previous secrets), each
    # allowed to connect and to wait long for its answer, then write through a Postgres
    # restart: the job's limit leaves room for that.
    timeout = int(3 * (settings.provider_connect_timeout + settings.provider_timeout) + 30)
    return Worker(
        functions=[
            func(exchange_code, name=queue.EXCHANGE, max_tries=30, timeout=timeout),
            func(revoke_connection, name=queue.REVOKE, max_tries=10, timeout=timeout),
            func(probe_connection, name=queue.PROBE, max_tries=3, timeout=timeout),
        ],
        cron_jobs=periodic_jobs(settings) if periodic else None,
        redis_settings=redis_settings(settings.redis_url or ""),
        queue_name=settings.queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=concurrency_,
        handle_signals=handle_signals,
        # Outcomes live in Postgres: no job keeps a result, so a job id is free again (and the
        # same work can be enqueued anew) as soon as the job is done.
        keep_result=0,
        job_timeout=timeout,
        job_completion_wait=20,
        # How soon a queued job starts when the queue was idle: an exchange after a callback
        # is waited on by a person. 20 cheap polls a second per idle worker.
        poll_delay=0.05,
    )


def periodic_jobs(settings: Settings) -> list[CronJob]:
    """The sweeps that keep the web side's promises (stored codes exchanged, revocations done,
    authorizations ended), the probes, the expiry check and the pruning."""
    return [
        # Cron job ids are global in arq; the prefix keeps deployments sharing a Redis apart.
        cron(
            mark_expired_tokens,
            name=f"{settings.redis_prefix}:mark_expired_tokens",
            second=EVERY_5_SECONDS,
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
    ]


async def _sample_gauges(resources: Resources) -> None:
    """Keep the data gauges of a worker's /metrics current (there is no scrape hook there)."""
    while True:
        try:
            await gauges.sample(resources.pool, every=0)
        except Exception as exc:  # Postgres away: the next round tries again
            log.debug("gauges_not_sampled", error=type(exc).__name__)
        await asyncio.sleep(gauges.SAMPLE_EVERY)


async def stop_worker(worker: Worker, grace: float = 20.0) -> None:
    """Stop taking jobs and claiming refreshes, let the running ones finish (up to `grace`
    seconds), then close; a refresh cut short keeps its lease until it lapses, so nothing is
    refreshed twice."""
    worker.allow_pick_jobs = False
    engine: RefreshEngine | None = worker.ctx.get(ENGINE_KEY)
    running = [t for t in worker.tasks.values() if not t.done()]
    stops = [asyncio.create_task(engine.stop(grace))] if engine is not None else []
    if running or stops:
        await asyncio.wait([*running, *stops], timeout=grace + 1)
    await worker.close()
    if worker.main_task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.main_task


class SupervisedWorker:
    """An arq worker that outlives Redis outages: when the worker dies (arq gives up on the
    first connection error), its resources are closed and a new one starts after a backoff, so
    a worker process waits for Redis instead of exiting."""

    def __init__(self, build: Callable[[], Worker]):
        self._build = build
        self._stopping = asyncio.Event()
        self.current: Worker | None = None

    async def run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            self.current = worker = self._build()
            try:
                await worker.async_run()
                return
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    return
                raise
            except Exception as exc:  # Redis (or Postgres at startup) unavailable
                log.warning(
                    "worker_interrupted",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    retry_in=delay,
                )
                await _discard(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, 30.0)

    async def stop(self, grace: float = 20.0) -> None:
        self._stopping.set()
        if self.current is not None:
            await stop_worker(self.current, grace=grace)


async def _discard(worker: Worker) -> None:
    """Close a dead worker as far as possible, and its resources in any case."""
    with contextlib.suppress(Exception):
        await worker.close()
    if worker.on_shutdown is not None:
        await worker.on_shutdown(worker.ctx)
