"""Delivering events to webhook subscriptions: the outbox's events become deliveries
(`fan_out`), workers claim due ones (`claim`) and make one attempt each (`attempt`), which
decides what comes of it: delivered, tried again later, or given up and the subscription
disabled with a `webhook.disabled` event.

At least once: a delivery is marked only after the receiver's 2xx, and a worker that dies
mid-attempt leaves a claim that lapses, so another sends it again with the same `webhook-id`.
Retries wait about as long as the delivery has been failing (5 s at first, at most an hour,
randomised) and go on for a day from the first failure; a 410 Gone gives up at once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg

from authbroker import webhooks
from authbroker.events import EventType, WebhookDisabled, make_event
from authbroker.logs import get_logger
from authbroker.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LAG_SECONDS, WEBHOOKS_DISABLED
from storage import outbox
from storage import webhooks as stored
from storage.resources import Resources
from storage.webhooks import Claimed

log = get_logger("authbroker.webhooks")

# A claim outlives the longest attempt; a worker that dies mid-attempt holds it no longer.
CLAIM_SECONDS = webhooks.ATTEMPT_TIMEOUT + 20
BODY_READ = 64 * 1024  # of a receiver's answer: enough to keep the connection for the next


async def fan_out(res: Resources, limit: int) -> int:
    """Make the deliveries of up to `limit` new events; the number of events read (0 also
    when another worker is fanning out)."""
    async with res.pool.acquire() as conn, conn.transaction():
        read, _ = await stored.fan_out(conn, limit)
    return read


async def claim(res: Resources, limit: int, busy: list[uuid.UUID]) -> list[Claimed]:
    """Due deliveries to send now, none of the subscriptions in `busy`."""
    return await stored.claim(res.pool, limit, busy=busy, claim_seconds=CLAIM_SECONDS)


def retry_in(claimed: Claimed) -> float | None:
    """Seconds until the next attempt after this one failed; None: give up (a day of
    failures, on the database's clock). The wait grows with how long the delivery has been
    failing, so it roughly doubles from one attempt to the next."""
    now = claimed.claimed_at
    failing = (now - (claimed.first_failed_at or now)).total_seconds()
    if failing >= webhooks.RETRY_FOR:
        return None
    return webhooks.retry_delay(failing)


@dataclass(frozen=True)
class Reply:
    """What one attempt got. `kind`: delivered (2xx), rejected (another status), timeout or
    unreachable; `status`: None when no answer came; `error`: what went wrong, for people."""

    kind: str
    status: int | None
    latency_ms: float
    error: str | None


async def send(http: aiohttp.ClientSession, claimed: Claimed, signing: list[str]) -> Reply:
    """POST the event once, signed with each secret; redirects are not followed."""
    event = claimed.event
    payload = webhooks.body(event)
    headers = webhooks.headers(signing, str(event["id"]), int(time.time()), payload)
    started = time.perf_counter()
    status: int | None = None
    kind, error = "delivered", None
    try:
        async with http.post(
            claimed.url,
            data=payload,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=webhooks.ATTEMPT_TIMEOUT),
        ) as response:
            status = response.status
            await response.content.read(BODY_READ)
    except TimeoutError:
        kind, error = "timeout", f"no answer within {webhooks.ATTEMPT_TIMEOUT:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        kind, error = "unreachable", _describe(exc)
    if status is not None and not 200 <= status < 300:
        kind = "rejected"
        error = f"HTTP {status}" + (": redirects are not followed" if 300 <= status < 400 else "")
    return Reply(kind, status, (time.perf_counter() - started) * 1000, error)


async def attempt(res: Resources, http: aiohttp.ClientSession, claimed: Claimed) -> str:
    """Make one attempt and write what came of it: `delivered`, `retrying` or `failed` (given
    up: a 410 Gone, or a day of failures), which it returns."""
    signing = stored.open_secrets(
        res.ring, claimed.webhook_id, claimed.secret, claimed.previous_secret
    )
    reply = await send(http, claimed, signing)
    WEBHOOK_DELIVERIES.labels(reply.kind).inc()
    wait = None
    if reply.kind == "delivered":
        outcome = "delivered"
    else:
        wait = None if reply.status == 410 else retry_in(claimed)
        outcome = "failed" if wait is None else "retrying"
    async with res.pool.acquire() as conn, conn.transaction():
        await stored.record_attempt(
            conn,
            claimed,
            outcome=outcome,
            status_code=reply.status,
            latency_ms=reply.latency_ms,
            error=reply.error,
            retry_in=wait,
        )
        reason = "gone" if reply.status == 410 else "failing"
        disabled = outcome == "failed" and await _disable(conn, claimed, reason, reply)
    if outcome == "delivered":
        WEBHOOK_LAG_SECONDS.observe(_age(claimed.event))
    elif outcome == "retrying":
        log.info(
            "webhook_attempt_failed",
            webhook_id=str(claimed.webhook_id),
            delivery_id=claimed.id,
            attempt=claimed.attempt,
            status=reply.status,
            error=reply.error,
            retry_in=round(wait or 0, 1),
        )
    elif disabled:
        WEBHOOKS_DISABLED.labels(reason).inc()
        log.warning(
            "webhook_disabled",
            webhook_id=str(claimed.webhook_id),
            reason=reason,
            status=reply.status,
            error=reply.error,
            attempts=claimed.attempt,
        )
    return outcome


async def _disable(conn: asyncpg.Connection, claimed: Claimed, reason: str, reply: Reply) -> bool:
    """Disable the subscription (pending deliveries abandoned) with the `webhook.disabled`
    event that says why; False if it was disabled already."""
    if not await stored.disable(conn, claimed.webhook_id, reason):
        return False
    detail = (
        "The receiver answered 410 Gone: deliveries stopped. Enable the subscription again "
        "once its URL takes events."
        if reason == "gone"
        else "Every attempt to deliver an event failed for a day: deliveries stopped. Fix the "
        "receiver, enable the subscription again, and replay what it missed."
    )
    data = WebhookDisabled(
        webhook_id=str(claimed.webhook_id),
        reason=reason,
        failing_since=claimed.first_failed_at or claimed.claimed_at,
        last_status=reply.status,
        attempts=claimed.attempt,
    )
    event = make_event(EventType.WEBHOOK_DISABLED, app=None, detail=detail, data=data)
    await outbox.append(conn, event)
    return True


def _age(event: dict[str, object]) -> float:
    """Seconds since the event occurred."""
    try:
        occurred = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, (datetime.now(UTC) - occurred).total_seconds())


def _describe(exc: BaseException) -> str:
    """An error for the attempts' history: what happened, without the URL (it may hold a
    receiver's token)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        return f"cannot connect: {cause.strerror or cause}" if cause else "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without answering"
    return f"{type(exc).__name__}: {exc}"[:300]
