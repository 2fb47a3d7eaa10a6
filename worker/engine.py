"""The refresh engine: every worker process refreshes due connections itself, in batches.

Each pass claims as many due connections as the process has free refresh slots, in one
statement (`storage.leases.claim`: `FOR UPDATE SKIP LOCKED`, most overdue first, the apps
joined), and refreshes each in a task of its own. Workers share nothing but Postgres: any number
of them claim side by side without meeting, and single flight stays exactly as strict as a
lease (one holder per connection, results written only by it).

Around that loop:
- leases are renewed every few seconds while their refreshes run, so a lease outlives the
  slowest provider answer and lapses within `LEASE_SECONDS` of its holder's death; the next
  claim takes over and knows the dead holder's answer may be lost;
- a runtime waiting for a refresh makes its connection due and NOTIFYs the workers, which wake
  at once instead of at the next pass;
- unavailable token endpoints are probed, one connection at a time (`services.refresh`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

from authbroker.logs import get_logger
from authbroker.metrics import REFRESHES_IN_FLIGHT
from services.refresh import LEASE_SECONDS, Probe, refresh
from storage import endpoints, leases, notifications
from storage.leases import Claimed
from worker.context import WorkerContext

log = get_logger("authbroker.engine")

RENEW_EVERY = LEASE_SECONDS / 3
# With nothing due, look again this often (and at once when a runtime asks).
IDLE_PASS = 1.0
# Claim again once this share of the slots is free: fewer, larger claims.
REFILL_SHARE = 0.25
# Unavailable endpoints are looked at this often for a due probe.
PROBE_CHECK_EVERY = 1.0
# A line in the logs this often with what the engine did (one line per refresh is debug).
SUMMARY_EVERY = 60.0


class RefreshEngine:
    """Runs in every worker process.

    `wc`: the process's resources and provider session; `concurrency`: refreshes in flight at
    most; `dsn`: for the connection that listens for wake-ups.
    """

    def __init__(self, wc: WorkerContext, *, concurrency: int, dsn: str) -> None:
        self.wc = wc
        self.concurrency = concurrency
        self.dsn = dsn
        self._running: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[Any]] = []
        self._probes_checked = -PROBE_CHECK_EVERY
        self._outcomes: Counter[str] = Counter()

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="refresh-dispatch"),
            asyncio.create_task(self._renew_loop(), name="refresh-leases"),
            asyncio.create_task(self._listen_loop(), name="refresh-wakeups"),
            asyncio.create_task(self._summary_loop(), name="refresh-summary"),
        ]

    async def stop(self, grace: float = 20.0) -> None:
        """Claim nothing more; let running refreshes finish for up to `grace` seconds. One cut
        short keeps its lease until it lapses: its request may have reached the provider, and
        whoever takes over must know its answer may be lost."""
        self._stopping = True
        self._wake.set()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        for task in list(self._running):
            task.cancel()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._running, *self._loops, return_exceptions=True)

    async def idle(self) -> None:
        """Return once no refresh of this engine is running (those started meanwhile too)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # -- claiming -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        refill = max(1, int(self.concurrency * REFILL_SHARE))
        while not self._stopping:
            free = self.concurrency - len(self._running)
            started = 0
            now = asyncio.get_running_loop().time()
            probes = now - self._probes_checked >= PROBE_CHECK_EVERY
            try:
                if free > 0:
                    if probes:
                        self._probes_checked = now
                    started = await self.dispatch(free, probes=probes)
            except Exception as exc:  # Postgres away: the next pass tries again
                log.warning("refresh_claim_failed", error=type(exc).__name__)
                await self._sleep(IDLE_PASS)
                continue
            if free > 0 and started < free:
                await self._sleep(IDLE_PASS)  # nothing more is due: wait for time or a wake-up
            else:
                await self._slots(refill)  # maybe more is due: claim again once slots free up

    async def dispatch(self, free: int, *, probes: bool = True) -> int:
        """One pass: probes of unavailable endpoints first (with `probes`), then due
        connections. Returns how many refreshes it started."""
        res = self.wc.resources
        started = 0
        if probes:
            for url, count in await endpoints.take_probes(
                res.pool, hold=self._probe_hold(), limit=free
            ):
                holder = self.wc.new_holder()
                claimed = await leases.claim_probe(res.pool, holder, url, LEASE_SECONDS)
                if claimed is None:
                    await endpoints.probe_later(res.pool, url, 2.0)
                    continue
                self._start(claimed, holder, Probe(url, count))
                started += 1
        if started >= free:
            return started
        holder = self.wc.new_holder()
        for claimed in await leases.claim(res.pool, holder, free - started, LEASE_SECONDS):
            self._start(claimed, holder, None)
            started += 1
        return started

    def _probe_hold(self) -> float:
        """How long a taken probe keeps others off: longer than the probe can take."""
        settings = self.wc.resources.settings
        return 2 * (settings.provider_connect_timeout + settings.provider_timeout) + 10

    def _start(self, claimed: Claimed, holder: str, probe: Probe | None) -> None:
        self.wc.leases[claimed.connection.id] = holder
        task = asyncio.create_task(self._run(claimed, holder, probe))
        self._running.add(task)
        REFRESHES_IN_FLIGHT.set(len(self._running))
        task.add_done_callback(self._finished)

    async def _run(self, claimed: Claimed, holder: str, probe: Probe | None) -> None:
        connection_id = claimed.connection.id
        try:
            with self.wc.holding(connection_id, holder):
                outcome = await refresh(self.wc, claimed, holder, probe=probe)
                self._outcomes[outcome.replace(" ", "_")] += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease lapses and the next claim retries; nothing else to do here.
            log.exception("refresh_crashed", app=claimed.app.name, connection_id=connection_id)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        REFRESHES_IN_FLIGHT.set(len(self._running))
        self._slot_freed.set()

    async def _slots(self, wanted: int) -> None:
        """Wait until `wanted` slots are free (or all refreshes are done, or a stop)."""
        while not self._stopping and self.concurrency - len(self._running) < min(
            wanted, self.concurrency
        ):
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _summary_loop(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY)
            if self._outcomes:
                outcomes, self._outcomes = dict(self._outcomes), Counter()
                log.info("refreshes", every_s=SUMMARY_EVERY, **outcomes)

    # -- leases -----------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await leases.renew_leases(
                    self.wc.resources.pool, dict(self.wc.leases), LEASE_SECONDS
                )
            except Exception as exc:  # Postgres away: a lease may lapse; writes check for that
                log.warning("lease_renewal_failed", error=type(exc).__name__)

    # -- wake-ups ---------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Wake on runtimes waiting for a refresh (and on recovered endpoints). Without it the
        engine still finds due connections every pass."""
        await notifications.listen(self.dsn, leases.REFRESH_WANTED, self._woken)

    def _woken(self, *_args: Any) -> None:
        self._wake.set()
