"""Webhook subscriptions: creating, changing, rotating secrets, looking at attempts, replaying;
whichever edge asks (the API, the console, the CLI through the API). Definitions arrive
validated by `authbroker.schemas.WebhookCreate` / `WebhookUpdate`; where a URL's host really
leads is checked here. A secret is handed back once, by `create` and `rotate_secret`, and never
logged. Delivering is `services.webhook_delivery`'s.
"""

from __future__ import annotations

import uuid
from typing import Any

from authbroker import netguard, webhooks
from authbroker.config import Settings
from authbroker.logs import get_logger
from services.errors import Conflict, Invalid, NotFound
from storage import webhooks as stored
from storage.resources import Resources
from storage.webhooks import Attempt, Delivery, Webhook

log = get_logger("authbroker.webhooks")


async def check_host(url: str | None, settings: Settings) -> None:
    """`Invalid` naming `url` when its host resolves to an address the outbound rules refuse
    (validation has already refused such addresses written literally)."""
    host = netguard.normalized_host(url) if url else None
    if host is None:
        return
    reason = await netguard.resolved_reason(host, settings.outbound)
    if reason:
        message = f"host {host} {reason}"
        raise Invalid(
            "invalid_request", "invalid fields: url", fields=[{"field": "url", "message": message}]
        )


def _host(url: str) -> str:
    """What logs say of a URL: its host (a path or query may hold a receiver's token)."""
    return netguard.normalized_host(url) or "?"


async def get(res: Resources, webhook_id: str) -> Webhook:
    try:
        key = uuid.UUID(webhook_id)
    except ValueError:
        key = None
    found = await stored.get(res.pool, key) if key else None
    if found is None:
        raise NotFound("webhook_not_found", f"no webhook subscription {webhook_id!r}")
    return found


async def list_all(res: Resources) -> list[Webhook]:
    return await stored.list_all(res.pool)


async def create(
    res: Resources, values: dict[str, Any], *, via: str = "api"
) -> tuple[Webhook, str]:
    """Subscribe `values["url"]` (`WebhookCreate.model_dump()`); the subscription and its
    secret, which is shown this once."""
    await check_host(values["url"], res.settings)
    secret = webhooks.new_secret()
    webhook = await stored.create(res.pool, res.ring, uuid.uuid4(), values, secret)
    log.info(
        "webhook_created",
        webhook_id=str(webhook.id),
        host=_host(webhook.url),
        types=webhook.types,
        apps=webhook.apps,
        via=via,
    )
    return webhook, secret


async def update(
    res: Resources, webhook: Webhook, changes: dict[str, Any], *, via: str = "api"
) -> Webhook:
    """Apply validated changes (`WebhookUpdate.changes()`). `enabled: false` stops deliveries
    and abandons the pending ones; `enabled: true` resumes deliveries of new events."""
    changes = dict(changes)
    enabled = changes.pop("enabled", None)
    if "url" in changes:
        await check_host(changes["url"], res.settings)
    async with res.pool.acquire() as conn, conn.transaction():
        if changes:
            await stored.update(conn, webhook.id, changes)
        if enabled is False:
            await stored.disable(conn, webhook.id, "operator")
        elif enabled is True:
            await stored.enable(conn, webhook.id)
        updated = await stored.get(conn, webhook.id)
    if updated is None:
        raise NotFound("webhook_not_found", f"no webhook subscription {str(webhook.id)!r}")
    fields = sorted([*changes, *(["enabled"] if enabled is not None else [])])
    log.info("webhook_updated", webhook_id=str(webhook.id), fields=fields, via=via)
    return updated


async def delete(res: Resources, webhook: Webhook, *, via: str = "api") -> None:
    """Delete the subscription with its deliveries and their history."""
    if not await stored.delete(res.pool, webhook.id):
        raise NotFound("webhook_not_found", f"no webhook subscription {str(webhook.id)!r}")
    log.info("webhook_deleted", webhook_id=str(webhook.id), via=via)


async def rotate_secret(
    res: Resources, webhook: Webhook, previous_for: float, *, via: str = "api"
) -> tuple[Webhook, str]:
    """A new secret, shown this once; the one it replaces keeps signing beside it for
    `previous_for` seconds (receivers switch meanwhile), then it is dropped."""
    secret = webhooks.new_secret()
    async with res.pool.acquire() as conn, conn.transaction():
        rotated = await stored.rotate(conn, res.ring, webhook.id, secret, previous_for)
    if rotated is None:
        raise NotFound("webhook_not_found", f"no webhook subscription {str(webhook.id)!r}")
    log.info(
        "webhook_secret_rotated",
        webhook_id=str(webhook.id),
        previous_for=previous_for,
        via=via,
    )
    return rotated, secret


async def attempts(
    res: Resources, webhook: Webhook, *, after: int | None, limit: int
) -> tuple[list[Attempt], int | None]:
    """A page of the subscription's delivery attempts, newest first, and the `after` of the
    next page (None on the last)."""
    found = await stored.attempts_page(res.pool, webhook.id, after=after, limit=limit + 1)
    page = found[:limit]
    return page, page[-1].id if len(found) > limit else None


async def replay(
    res: Resources, webhook: Webhook, delivery_id: int, *, via: str = "api"
) -> Delivery:
    """Send a delivery again now, with the same `webhook-id`, whatever became of it."""
    if not webhook.enabled:
        raise Conflict(
            "webhook_disabled",
            "the subscription is disabled: enable it first, then replay",
        )
    delivery = await stored.replay(res.pool, webhook.id, delivery_id)
    if delivery is None:
        raise NotFound(
            "delivery_not_found",
            f"subscription {webhook.id} has no delivery {delivery_id} (deliveries are kept as "
            "long as their event: a week)",
        )
    log.info("webhook_replay", webhook_id=str(webhook.id), delivery_id=delivery_id, via=via)
    return delivery
