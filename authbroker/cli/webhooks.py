"""`authbroker webhooks`: subscriptions that receive the events over HTTPS, through the HTTP
API. The signing secret is printed once, to stdout, by `create` and `rotate-secret` only."""

from __future__ import annotations

from typing import Any

import click

from authbroker.cli.api import ApiGroup, api_call
from authbroker.cli.base import POSITIVE, CliError, as_json
from authbroker.cli.output import details, emit, note, table, text, when
from authbroker.client import AuthbrokerClient, segment

webhooks = ApiGroup(
    "webhooks",
    short_help="webhook subscriptions: create, list, update, rotate the secret, deliveries",
    examples="authbroker webhooks create https://hooks.example.com/authbroker --type connection.\n"
    "authbroker webhooks deliveries 6f1c…",
)

id_argument = click.argument("webhook_id", metavar="ID")
type_option = click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    help="only events of this type, or under this prefix, e.g. connection. (repeat)",
)
app_option = click.option(
    "--app", "apps", multiple=True, metavar="APP", help="only this app's events (repeat)"
)
description_option = click.option("--description", metavar="TEXT", help="a note for people")


def _path(webhook_id: str, *rest: str) -> str:
    return "/".join(["/v1/webhooks", segment(webhook_id), *rest])


def _state(webhook: dict[str, Any]) -> str:
    if webhook.get("enabled"):
        return "enabled"
    return f"disabled ({webhook.get('disabled_reason') or 'operator'})"


def _show(webhook: dict[str, Any]) -> None:
    print(
        details(
            [
                ("id", webhook.get("id")),
                ("url", webhook.get("url")),
                ("state", _state(webhook)),
                ("disabled", when(webhook.get("disabled_at"))),
                ("types", webhook.get("types") or "every type"),
                ("apps", webhook.get("apps") or "every app"),
                ("description", webhook.get("description")),
                ("previous secret signs until", when(webhook.get("previous_secret_expires_at"))),
                ("created", when(webhook.get("created_at"))),
                ("updated", when(webhook.get("updated_at"))),
            ]
        )
    )


def _show_secret(answer: dict[str, Any], as_json: bool) -> None:
    """The subscription and its secret: the one time anyone sees it."""
    if as_json:
        emit(answer)
        return
    _show(answer)
    print(f"secret: {answer['secret']}", flush=True)
    note("Keep the secret now: it is not shown again. Receivers verify deliveries with it.")


@webhooks.command(
    short_help="subscribe a URL to events; prints its signing secret once",
    examples="authbroker webhooks create https://hooks.example.com/in\n"
    "authbroker webhooks create https://hooks.example.com/in --type connection. "
    "--type app.settings_invalid --app google --description billing",
)
@click.argument("target", metavar="URL")
@type_option
@app_option
@description_option
@as_json
@api_call
async def create(
    api: AuthbrokerClient,
    target: str,
    types: tuple[str, ...],
    apps: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL to the events from now on (all of them, or those of --type and --app) and
    print the secret that signs them, this once (Standard Webhooks: verify with the runtime
    client's verify_webhook)."""
    body: dict[str, Any] = {"url": target}
    if types:
        body["types"] = list(types)
    if apps:
        body["apps"] = list(apps)
    if description is not None:
        body["description"] = description
    _, created = await api.post("/v1/webhooks", body)
    _show_secret(created, as_json)


@webhooks.command(
    "list", short_help="list webhook subscriptions", examples="authbroker webhooks list"
)
@as_json
@api_call
async def list_webhooks(api: AuthbrokerClient, as_json: bool) -> None:
    items = (await api.get("/v1/webhooks"))["items"]
    if as_json:
        emit(items)
        return
    print(
        table(
            ["ID", "URL", "STATE", "TYPES", "APPS", "DESCRIPTION"],
            [
                [
                    w["id"],
                    w["url"],
                    _state(w),
                    w.get("types") or "all",
                    w.get("apps") or "all",
                    w.get("description"),
                ]
                for w in items
            ],
            widths={"URL": 60, "DESCRIPTION": 40},
            empty="no webhook subscriptions yet (add one: authbroker webhooks create URL)",
        )
    )


@webhooks.command(
    short_help="show a webhook subscription (never its secret)",
    examples="authbroker webhooks show 6f1c…",
)
@id_argument
@as_json
@api_call
async def show(api: AuthbrokerClient, webhook_id: str, as_json: bool) -> None:
    webhook = await api.get(_path(webhook_id))
    if as_json:
        emit(webhook)
    else:
        _show(webhook)


@webhooks.command(
    short_help="change a subscription's URL, filters or description",
    examples="authbroker webhooks update 6f1c… --new-url https://hooks.example.com/v2\n"
    "authbroker webhooks update 6f1c… --type connection.invalidated --all-apps",
)
@id_argument
@click.option("--new-url", metavar="URL", help="deliver to this URL from now on")
@type_option
@click.option("--all-types", is_flag=True, help="every event type again")
@app_option
@click.option("--all-apps", is_flag=True, help="every app's events again")
@description_option
@as_json
@api_call
async def update(
    api: AuthbrokerClient,
    webhook_id: str,
    new_url: str | None,
    types: tuple[str, ...],
    all_types: bool,
    apps: tuple[str, ...],
    all_apps: bool,
    description: str | None,
    as_json: bool,
) -> None:
    """Change what is given: --type and --app replace the filters (repeat them for several),
    --all-types and --all-apps lift them."""
    for given, lifted, name in ((types, all_types, "type"), (apps, all_apps, "app")):
        if given and lifted:
            raise CliError(f"--{name} and --all-{name}s cannot be used together")
    body: dict[str, Any] = {}
    if new_url is not None:
        body["url"] = new_url
    if types or all_types:
        body["types"] = list(types) or None
    if apps or all_apps:
        body["apps"] = list(apps) or None
    if description is not None:
        body["description"] = description or None
    if not body:
        raise CliError("nothing to change: give --new-url, --type, --app or --description")
    await _patch(api, webhook_id, body, as_json)


async def _patch(
    api: AuthbrokerClient, webhook_id: str, body: dict[str, Any], as_json: bool
) -> None:
    changed = await api.patch(_path(webhook_id), body)
    if as_json:
        emit(changed)
    else:
        _show(changed)


@webhooks.command(
    short_help="stop deliveries (pending ones are abandoned)",
    examples="authbroker webhooks disable 6f1c…",
)
@id_argument
@as_json
@api_call
async def disable(api: AuthbrokerClient, webhook_id: str, as_json: bool) -> None:
    await _patch(api, webhook_id, {"enabled": False}, as_json)


@webhooks.command(
    short_help="resume deliveries, of events from now on",
    examples="authbroker webhooks enable 6f1c…",
)
@id_argument
@as_json
@api_call
async def enable(api: AuthbrokerClient, webhook_id: str, as_json: bool) -> None:
    await _patch(api, webhook_id, {"enabled": True}, as_json)


@webhooks.command(
    short_help="delete a subscription and its delivery history",
    examples="authbroker webhooks delete 6f1c…",
)
@id_argument
@as_json
@api_call
async def delete(api: AuthbrokerClient, webhook_id: str, as_json: bool) -> None:
    await api.delete(_path(webhook_id))
    if as_json:
        emit({"id": webhook_id, "status": "deleted"})
    else:
        print(f"deleted webhook subscription {webhook_id}")


@webhooks.command(
    "rotate-secret",
    short_help="give a subscription a new secret; prints it once",
    examples="authbroker webhooks rotate-secret 6f1c…\n"
    "authbroker webhooks rotate-secret 6f1c… --keep-previous 0   # the old one stops now",
)
@id_argument
@click.option(
    "--keep-previous",
    type=click.IntRange(0, 7 * 86_400),
    default=86_400,
    metavar="S",
    help="seconds the previous secret keeps signing beside the new one (86400)",
)
@as_json
@api_call
async def rotate_secret(
    api: AuthbrokerClient, webhook_id: str, keep_previous: int, as_json: bool
) -> None:
    """Make a new signing secret and print it, this once. Until --keep-previous seconds have
    passed, every delivery carries a signature by each secret, so receivers can move to the new
    one without missing a delivery."""
    body = {"previous_expires_in": keep_previous}
    _, rotated = await api.post(_path(webhook_id, "rotate-secret"), body)
    _show_secret(rotated, as_json)


@webhooks.command(
    short_help="list a subscription's delivery attempts, newest first",
    examples="authbroker webhooks deliveries 6f1c…\n"
    "authbroker webhooks deliveries 6f1c… --limit 500 --json",
)
@id_argument
@click.option("--limit", type=POSITIVE, default=50, help="at most this many (50)")
@as_json
@api_call
async def deliveries(api: AuthbrokerClient, webhook_id: str, limit: int, as_json: bool) -> None:
    items: list[dict[str, Any]] = []
    after: int | None = None
    while len(items) < limit:
        page = await api.get(
            _path(webhook_id, "deliveries"), after=after, limit=min(limit - len(items), 1000)
        )
        items += page["items"]
        after = page.get("next")
        if after is None:
            break
    if as_json:
        emit(items)
        return
    print(
        table(
            ["DELIVERY", "ATTEMPT", "EVENT", "TYPE", "AT", "OUTCOME", "STATUS", "MS", "ERROR"],
            [
                [
                    a["delivery_id"],
                    a["attempt"],
                    a["event_id"],
                    a["event_type"],
                    when(a.get("attempted_at")),
                    a["outcome"]
                    + (f", next {when(a['next_attempt_at'])}" if a.get("next_attempt_at") else ""),
                    a.get("status_code"),
                    text(round(a["latency_ms"])) if a.get("latency_ms") is not None else None,
                    a.get("error"),
                ]
                for a in items
            ],
            widths={"ERROR": 50},
            empty="no delivery attempts yet",
        )
    )


@webhooks.command(
    short_help="send a delivery again now (same webhook-id)",
    examples="authbroker webhooks replay 6f1c… 1234",
)
@id_argument
@click.argument("delivery_id", metavar="DELIVERY", type=POSITIVE)
@as_json
@api_call
async def replay(api: AuthbrokerClient, webhook_id: str, delivery_id: int, as_json: bool) -> None:
    """Send DELIVERY (its number in `deliveries`) again, whatever became of it: the same event
    with the same webhook-id, so receivers that saw it can tell."""
    _, delivery = await api.post(_path(webhook_id, "deliveries", str(delivery_id), "replay"))
    if as_json:
        emit(delivery)
    else:
        print(
            f"delivery {delivery['delivery_id']} ({delivery['event_type']} "
            f"{delivery['event_id']}) is being sent again"
        )
