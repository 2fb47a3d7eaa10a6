"""The webhook dispatcher: a task of every worker process that turns new outbox events into
deliveries and sends them, beside (never in the way of) the refreshes and the relay.

It keeps to itself: its own small Postgres pool and HTTP session, its own limit of attempts in
flight (and a smaller one per subscription, so one slow receiver cannot take every slot), no
lease and no transaction held while a receiver answers. It wakes on the outbox's NOTIFY (new
events) and on the webhooks' (deliveries made or replayed by another process), when an attempt
ends (the next event of its connection may go), and once a second for retries that fall due.
Any number of workers run one each: fan-outs take turns (a lock), claims skip each other's rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from typing import Any

import aiohttp

from authbroker import netguard
from authbroker.logs import get_logger
from services import webhook_delivery as delivery
from storage import outbox
from storage import webhooks as stored
from storage.notifications import listen
from storage.pool import create_pool
from storage.resources import Resources
from storage.webhooks import Claimed
from worker.context import provider_session

log = get_logger("authbroker.webhooks")

CONCURRENCY = 20
PER_WEBHOOK = 5
FAN_OUT_BATCH = 500
POOL_SIZE = 4
HOUSEKEEPING_EVERY = 60.0


class WebhookDispatcher:
    def __init__(
        self,
        resources: Resources,
        *,
        rules: netguard.Rules | None = None,
        concurrency: int = CONCURRENCY,
        per_webhook: int = PER_WEBHOOK,
        poll_interval: float = 1.0,
    ):
        self.resources = resources
        self.rules = rules
        self.concurrency = concurrency
        self.per_webhook = per_webhook
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[Any]] = set()
        self._per_webhook: collections.Counter[Any] = collections.Counter()

    async def run(self) -> None:
        """Deliver until cancelled; what is in flight then is sent again by a later claim.
        Postgres away: wait and start again."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhooks_interrupted", error=type(exc).__name__, detail=str(exc)[:200])
                await asyncio.sleep(2.0)

    async def _session(self) -> None:
        dsn = self.resources.settings.database_url or ""
        pool = await create_pool(dsn, min_size=1, max_size=POOL_SIZE)
        # The use cases get this pool: deliveries never wait for the refreshes' connections.
        res = dataclasses.replace(self.resources, pool=pool)
        http = provider_session(self.rules, per_host=self.per_webhook)
        listener = asyncio.create_task(
            listen(dsn, (outbox.NOTIFY_CHANNEL, stored.NOTIFY_CHANNEL), self._notified),
            name="webhooks-listen",
        )
        log.info("webhooks_started", concurrency=self.concurrency)
        housekept = 0.0
        try:
            while True:
                self._wake.clear()
                if time.monotonic() - housekept > HOUSEKEEPING_EVERY:
                    housekept = time.monotonic()
                    await stored.drop_expired_secrets(pool)
                if not await self._pass(res, http):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
        finally:
            for task in [*self._running, listener]:
                task.cancel()
            await asyncio.gather(*self._running, listener, return_exceptions=True)
            await http.close()
            await pool.close()

    def _notified(self, *_args: Any) -> None:
        self._wake.set()

    async def _pass(self, res: Resources, http: aiohttp.ClientSession) -> bool:
        """Fan out, claim what slots allow, start the attempts; whether to go again at once."""
        read = await delivery.fan_out(res, FAN_OUT_BATCH)
        free = self.concurrency - len(self._running)
        claimed: list[Claimed] = []
        if free > 0:
            busy = [w for w, n in self._per_webhook.items() if n >= self.per_webhook]
            claimed = await delivery.claim(res, free, busy)
        for item in claimed:
            self._per_webhook[item.webhook_id] += 1
            task = asyncio.create_task(self._attempt(res, http, item))
            self._running.add(task)
        return read >= FAN_OUT_BATCH or (free > 0 and len(claimed) == free)

    async def _attempt(self, res: Resources, http: aiohttp.ClientSession, item: Claimed) -> None:
        try:
            await delivery.attempt(res, http, item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not recorded: the claim lapses and the attempt is made again
            log.warning(
                "webhook_attempt_not_recorded",
                webhook_id=str(item.webhook_id),
                delivery_id=item.id,
                error=type(exc).__name__,
            )
        finally:
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._per_webhook[item.webhook_id] -= 1
            if self._per_webhook[item.webhook_id] <= 0:
                del self._per_webhook[item.webhook_id]
            self._wake.set()  # the next delivery of its order key may go now
