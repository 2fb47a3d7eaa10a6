"""The console's Webhooks page: subscriptions with their state and last deliveries; create (the
secret shown on the answer, once), disable, enable, rotate the secret, replay, delete. Every
change goes through `services.webhooks`, validated with the API's models."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from authbroker.schemas import WebhookCreate
from handlers.console import forms
from handlers.console.render import FORM, PREFIX, action, page, render, see_other
from handlers.context import resources
from services import webhooks as service
from services.errors import DomainError
from storage import webhooks as stored
from storage.webhooks import Webhook

routes = web.RouteTableDef()

PAGE = PREFIX + "/webhooks"
LAST_ATTEMPTS = 5
PREVIOUS_SECRET_SIGNS = 86_400  # a rotation from the console keeps the old secret a day


def _url(webhook: Webhook, action_name: str = "") -> str:
    return f"{PAGE}/{quote(str(webhook.id), safe='')}" + (f"/{action_name}" if action_name else "")


def _state(webhook: Webhook) -> tuple[str, str]:
    if webhook.enabled:
        return "enabled", "ok"
    reason = {"gone": "receiver gone (410)", "failing": "failed for a day"}.get(
        webhook.disabled_reason or "", "by an operator"
    )
    return f"disabled: {reason}", "bad" if webhook.disabled_reason != "operator" else "muted"


async def _page(
    request: web.Request,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    *,
    secret: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    res = resources(request)
    found = await service.list_all(res)
    latest = await stored.latest_attempts(res.pool, [w.id for w in found], LAST_ATTEMPTS)
    items = []
    for webhook in found:
        state, tone = _state(webhook)
        items.append(
            {
                "id": str(webhook.id),
                "url": webhook.url,
                "description": webhook.description,
                "types": webhook.types,
                "apps": webhook.apps,
                "enabled": webhook.enabled,
                "state": state,
                "tone": tone,
                "previous_secret_expires_at": webhook.previous_secret_expires_at,
                "attempts": latest.get(webhook.id, []),
                "self_url": _url(webhook),
            }
        )
    return render(
        request,
        "webhooks.html",
        {
            "webhooks": items,
            "form": form or {},
            "errors": errors or {},
            "secret": secret,
            "events": None,
        },
        status=status,
    )


@routes.get(PAGE)
@page
async def webhooks_page(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post(PAGE)
@action
async def create_webhook(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    form = request[FORM]
    shown = forms.raw(form)
    data: dict[str, Any] = {"url": shown.get("url", "").strip()}
    for name in ("types", "apps"):
        if shown.get(name, "").strip():
            data[name] = shown[name].split()
    if shown.get("description", "").strip():
        data["description"] = shown["description"].strip()
    model, errors = forms.validate(WebhookCreate, data, **res.settings.validation_context)
    if model is None:
        return await _page(request, shown, errors, status=400)
    try:
        webhook, secret = await service.create(res, model.model_dump(), via="console")
    except DomainError as exc:
        errors = {e["field"]: e["message"] for e in exc.details.get("fields", [])}
        return await _page(request, shown, errors or {"url": exc.message}, status=exc.http_status)
    # Shown on this answer only (never stored for a later page, never sent again).
    return await _page(
        request, secret={"id": str(webhook.id), "url": webhook.url, "value": secret}, status=201
    )


async def _load(request: web.Request) -> Webhook:
    try:
        return await service.get(resources(request), request.match_info["webhook_id"])
    except DomainError:
        raise web.HTTPNotFound() from None


@routes.post(PAGE + "/{webhook_id}/disable")
@action
async def disable_webhook(request: web.Request) -> web.StreamResponse:
    webhook = await _load(request)
    await service.update(resources(request), webhook, {"enabled": False}, via="console")
    return see_other(request, PAGE, f"Deliveries to {webhook.url} stopped.", "info")


@routes.post(PAGE + "/{webhook_id}/enable")
@action
async def enable_webhook(request: web.Request) -> web.StreamResponse:
    webhook = await _load(request)
    await service.update(resources(request), webhook, {"enabled": True}, via="console")
    return see_other(request, PAGE, f"Deliveries to {webhook.url} resume with new events.")


@routes.post(PAGE + "/{webhook_id}/rotate")
@action
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    webhook = await _load(request)
    rotated, secret = await service.rotate_secret(
        res, webhook, PREVIOUS_SECRET_SIGNS, via="console"
    )
    return await _page(
        request,
        secret={"id": str(rotated.id), "url": rotated.url, "value": secret, "rotated": "yes"},
    )


@routes.post(PAGE + "/{webhook_id}/deliveries/{delivery_id}/replay")
@action
async def replay(request: web.Request) -> web.StreamResponse:
    webhook = await _load(request)
    try:
        delivery_id = int(request.match_info["delivery_id"])
    except ValueError:
        delivery_id = 0
    try:
        delivery = await service.replay(resources(request), webhook, delivery_id, via="console")
    except DomainError as exc:
        return see_other(request, PAGE, exc.message, "bad")
    return see_other(
        request, PAGE, f"Sending {delivery.event_type} {delivery.event_id} again.", "info"
    )


@routes.get(PAGE + "/{webhook_id}/delete")
@page
async def confirm_delete(request: web.Request) -> web.StreamResponse:
    webhook = await _load(request)
    return render(
        request,
        "confirm.html",
        {
            "title": "Delete this webhook subscription?",
            "lines": [
                f"Deliveries to {webhook.url} stop, and its delivery history is deleted.",
                "This cannot be undone; a new subscription gets a new secret.",
            ],
            "action_url": _url(webhook, "delete"),
            "button": "Delete the subscription",
            "cancel_url": PAGE,
        },
    )


@routes.post(PAGE + "/{webhook_id}/delete")
@action
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    webhook = await _load(request)
    await service.delete(resources(request), webhook, via="console")
    return see_other(request, PAGE, f"Webhook subscription to {webhook.url} deleted.")
