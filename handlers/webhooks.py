"""`/v1/webhooks`: subscriptions that receive the events over HTTPS, signed per Standard
Webhooks. The signing secret comes out once, in the answer that made it (creation, rotation).

Every API key may manage them for now; each route is one handler here, which is where a role
check goes once roles exist.
"""

from __future__ import annotations

from aiohttp import web

from authbroker.roles import Permission
from authbroker.schemas import SecretRotation, WebhookCreate, WebhookUpdate
from handlers import models
from handlers.context import resources
from handlers.operations import NO_STORE, Answer, operation, path_param, query_param
from handlers.responses import fail, ok, read_model
from services import webhooks as service
from storage.webhooks import Webhook

routes = web.RouteTableDef()

WEBHOOK_ID = path_param(
    "webhook_id", "The subscription's id.", {"type": "string", "format": "uuid"}
)
DELIVERY_ID = path_param("delivery_id", "The delivery's id.", {"type": "integer"})
WEBHOOK_NOT_FOUND = "No subscription of that id (`webhook_not_found`)."
NO_STORE_HEADERS = {"Cache-Control": "no-store"}


async def load_webhook(request: web.Request) -> Webhook:
    return await service.get(resources(request), request.match_info["webhook_id"])


@routes.post("/v1/webhooks")
@operation(
    "createWebhook",
    "webhooks",
    {201: Answer("Created, with its signing secret.", models.WebhookWithSecret, headers=NO_STORE)},
    body=WebhookCreate,
    permission=Permission.WEBHOOKS,
)
async def create_webhook(request: web.Request) -> web.Response:
    """Subscribe a URL to events.

    The answer holds the signing secret, this once. Events that occur from now on and match
    `types` and `apps` are POSTed to the URL, signed.
    """
    res = resources(request)
    body = await read_model(request, WebhookCreate, **res.settings.validation_context)
    webhook, secret = await service.create(res, body.model_dump())
    return ok(
        models.WebhookWithSecret.with_secret(webhook, secret), status=201, headers=NO_STORE_HEADERS
    )


@routes.get("/v1/webhooks")
@operation(
    "listWebhooks",
    "webhooks",
    {200: Answer("Every subscription.", models.WebhookList)},
    permission=Permission.WEBHOOKS,
)
async def list_webhooks(request: web.Request) -> web.Response:
    """List webhook subscriptions (never their secrets)."""
    found = await service.list_all(resources(request))
    return ok(models.WebhookList(items=[models.Webhook.of(w) for w in found]))


@routes.get("/v1/webhooks/{webhook_id}")
@operation(
    "getWebhook",
    "webhooks",
    {200: Answer("The subscription.", models.Webhook), 404: WEBHOOK_NOT_FOUND},
    parameters=[WEBHOOK_ID],
    permission=Permission.WEBHOOKS,
)
async def show_webhook(request: web.Request) -> web.Response:
    """Show a webhook subscription (never its secret)."""
    return ok(models.Webhook.of(await load_webhook(request)))


@routes.patch("/v1/webhooks/{webhook_id}")
@operation(
    "updateWebhook",
    "webhooks",
    {200: Answer("The updated subscription.", models.Webhook), 404: WEBHOOK_NOT_FOUND},
    parameters=[WEBHOOK_ID],
    body=WebhookUpdate,
    permission=Permission.WEBHOOKS,
)
async def update_webhook(request: web.Request) -> web.Response:
    """Change a webhook subscription.

    Only the fields given change. `enabled: false` stops deliveries (pending ones are
    abandoned); `enabled: true` resumes them for events from then on.
    """
    res = resources(request)
    webhook = await load_webhook(request)
    body = await read_model(request, WebhookUpdate, **res.settings.validation_context)
    return ok(models.Webhook.of(await service.update(res, webhook, body.changes())))


@routes.delete("/v1/webhooks/{webhook_id}")
@operation(
    "deleteWebhook",
    "webhooks",
    {204: Answer("Deleted, with its deliveries."), 404: WEBHOOK_NOT_FOUND},
    parameters=[WEBHOOK_ID],
    permission=Permission.WEBHOOKS,
)
async def delete_webhook(request: web.Request) -> web.Response:
    """Delete a webhook subscription."""
    await service.delete(resources(request), await load_webhook(request))
    return web.Response(status=204)


@routes.post("/v1/webhooks/{webhook_id}/rotate-secret")
@operation(
    "rotateWebhookSecret",
    "webhooks",
    {
        200: Answer(
            "The subscription and its new secret, this once.",
            models.WebhookWithSecret,
            headers=NO_STORE,
        ),
        404: WEBHOOK_NOT_FOUND,
    },
    parameters=[WEBHOOK_ID],
    body=SecretRotation,
    body_required=False,
    permission=Permission.WEBHOOKS,
)
async def rotate_webhook_secret(request: web.Request) -> web.Response:
    """Give a webhook subscription a new signing secret.

    Deliveries carry a signature by each secret while the previous one keeps signing
    (`previous_expires_in`, a day by default), so receivers can switch without losing one.
    """
    res = resources(request)
    webhook = await load_webhook(request)
    body = await read_model(request, SecretRotation)
    rotated, secret = await service.rotate_secret(res, webhook, body.previous_expires_in)
    return ok(models.WebhookWithSecret.with_secret(rotated, secret), headers=NO_STORE_HEADERS)


@routes.get("/v1/webhooks/{webhook_id}/deliveries")
@operation(
    "listWebhookDeliveries",
    "webhooks",
    {
        200: Answer("A page of delivery attempts, newest first.", models.WebhookAttemptPage),
        400: "Invalid `limit` or `after` (`invalid_limit`, `invalid_after`).",
        404: WEBHOOK_NOT_FOUND,
    },
    parameters=[
        WEBHOOK_ID,
        query_param(
            "limit",
            "Page size.",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        ),
        query_param("after", "The `next` of the previous page.", {"type": "integer"}),
    ],
    permission=Permission.WEBHOOKS,
)
async def list_webhook_deliveries(request: web.Request) -> web.Response:
    """List a subscription's delivery attempts.

    Each attempt with its event's id and type, its number, the receiver's status code, the
    latency, the error and when its delivery is tried again.
    """
    res = resources(request)
    limit = _integer(request, "limit", 100, "invalid_limit", 1, 1000)
    after = _integer(request, "after", None, "invalid_after", 1, 2**63 - 1)
    webhook = await load_webhook(request)
    page, after_next = await service.attempts(res, webhook, after=after, limit=limit)
    items = [models.WebhookAttempt.of(a) for a in page]
    return ok(models.WebhookAttemptPage(items=items, next=after_next))


@routes.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay")
@operation(
    "replayWebhookDelivery",
    "webhooks",
    {
        202: Answer("It is sent again now.", models.WebhookDelivery),
        404: "No such subscription or delivery (`webhook_not_found`, `delivery_not_found`).",
        409: "The subscription is disabled (`webhook_disabled`).",
    },
    parameters=[WEBHOOK_ID, DELIVERY_ID],
    permission=Permission.WEBHOOKS,
)
async def replay_webhook_delivery(request: web.Request) -> web.Response:
    """Send a delivery again.

    Whatever became of it (delivered, failed, abandoned), it is attempted again now with the
    same `webhook-id`, ahead of later events of its connection; its retries start afresh.
    """
    res = resources(request)
    webhook = await load_webhook(request)
    try:
        delivery_id = int(request.match_info["delivery_id"])
    except ValueError:
        delivery_id = 0
    delivery = await service.replay(res, webhook, delivery_id)
    return ok(models.WebhookDelivery.of(delivery), status=202)


def _integer(
    request: web.Request, name: str, default: int | None, error: str, low: int, high: int
) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        fail(400, error, f"{name} must be an integer between {low} and {high}")
    return value
