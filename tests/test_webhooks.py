"""Webhooks against real receivers on loopback (aiohttp servers in the test), with the session's
real worker delivering: events come from real flows or are written through the outbox as the
use cases write them. Every delivery is checked with the runtime client's `verify_webhook`.
Time is never waited out: retries are made due, and a day of failures is simulated, in SQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from authbroker_client import WebhookVerificationError, verify_webhook
from prometheus_client import REGISTRY

from authbroker.embedded import free_port
from authbroker.events import EventType, make_event
from storage import outbox
from storage import webhooks as stored
from storage.resources import Resources
from tests.chaos_helpers import FakeProvider, wait_until
from tests.helpers import authorize_for_real
from worker.webhooks import WebhookDispatcher

WAIT = 60.0  # generous: a busy machine may be slow, never this slow


@dataclass
class Request:
    """One request a receiver got, and what it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver at one path of a loopback server: records every request; answers
    `status` (settable), or holds requests while `hold` is set (until it is cleared)."""

    def __init__(self, server: FakeProvider, path: str):
        self.url = server.url(path)
        self.requests: list[Request] = []
        self.status = 200
        self.held = 0
        self.hold: asyncio.Event | None = None
        server.handlers[path] = self._handle

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.hold is not None:
            self.held += 1
            await self.hold.wait()
        status = self.status
        self.requests.append(Request(dict(request.headers), body, status))
        return web.Response(status=status)

    def answered(self, status: int = 200) -> list[Request]:
        return [r for r in self.requests if r.status == status]

    def ids(self, status: int = 200) -> list[str]:
        return [r.event["id"] for r in self.answered(status)]


class Hooks:
    """Subscriptions made through the API, deleted when the test ends."""

    def __init__(self, api: aiohttp.ClientSession):
        self.api = api
        self.made: list[str] = []

    async def create(self, url: str, **body: Any) -> dict[str, Any]:
        async with self.api.post("/v1/webhooks", json={"url": url, **body}) as response:
            assert response.status == 201, await response.text()
            created = await response.json()
        self.made.append(created["id"])
        return created

    async def get(self, webhook_id: str) -> dict[str, Any]:
        async with self.api.get(f"/v1/webhooks/{webhook_id}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def attempts(self, webhook_id: str, **params: Any) -> dict[str, Any]:
        path = f"/v1/webhooks/{webhook_id}/deliveries"
        async with self.api.get(path, params=params) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def delete_all(self) -> None:
        for webhook_id in self.made:
            async with self.api.delete(f"/v1/webhooks/{webhook_id}"):
                pass


@pytest.fixture
async def server() -> AsyncIterator[FakeProvider]:
    found = await FakeProvider().start()
    yield found
    await found.stop()


@pytest.fixture
async def hooks(api: aiohttp.ClientSession, worker: Any) -> AsyncIterator[Hooks]:
    made = Hooks(api)
    yield made
    await made.delete_all()


async def emit(
    resources: Resources, app: str | None, kind: EventType, connection_id: str | None = None
) -> dict[str, Any]:
    """Write one event through the outbox, as a use case does in its transaction."""
    event = make_event(kind, app=app, connection_id=connection_id, status="active")
    async with resources.pool.acquire() as conn, conn.transaction():
        await outbox.append(conn, event)
    return event


async def eventually(check: Callable[[], Any], what: str) -> None:
    async def ready() -> bool:
        result = check()
        return bool(await result if asyncio.iscoroutine(result) else result)

    assert await wait_until(ready, timeout=WAIT), f"not within {WAIT:g} s: {what}"


async def make_due(resources: Resources, webhook_id: str) -> None:
    """What time would do: the subscription's retries fall due now."""
    await resources.pool.execute(
        """UPDATE webhook_deliveries SET next_attempt_at = now()
           WHERE webhook_id = $1 AND state = 'pending'""",
        uuid.UUID(webhook_id),
    )
    await resources.pool.execute("SELECT pg_notify($1, '')", stored.NOTIFY_CHANNEL)


def delivered_count() -> float:
    return (
        REGISTRY.get_sample_value("authbroker_webhook_deliveries_total", {"outcome": "delivered"})
        or 0.0
    )


# ------------------------------------------------------------------------------ deliveries


async def test_a_delivery_is_signed_and_carries_the_event_as_the_stream_does(
    hooks: Hooks, server: FakeProvider, resources: Resources, events, redis, settings, unique
):
    app = unique("wh")
    receiver = Receiver(server, "/hook")
    created = await hooks.create(receiver.url, apps=[app], description="billing")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["enabled"] is True and created["types"] is None and created["apps"] == [app]
    # The secret is shown once, never again, and is not stored in plaintext.
    shown = await hooks.get(created["id"])
    assert "secret" not in shown and shown["description"] == "billing"
    async with hooks.api.get("/v1/webhooks") as response:
        listed = await response.text()
    assert created["id"] in listed and secret not in listed
    sealed = await resources.pool.fetchval(
        "SELECT secret FROM webhooks WHERE id = $1", uuid.UUID(created["id"])
    )
    assert secret.encode() not in sealed and secret[6:].encode() not in sealed

    before = delivered_count()
    event = await emit(resources, app, EventType.REFRESHED, f"{app}-c")
    await eventually(lambda: receiver.answered(), "the delivery")
    [request] = receiver.requests
    assert verify_webhook(request.headers, request.body, secret) == event
    assert request.headers["webhook-id"] == event["id"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "authbroker"
    # Byte for byte what the relay put on the Redis stream.
    streamed = await events.wait_for(lambda e: e["id"] == event["id"])
    entries = await redis.xrange(settings.events_stream)
    raw = next(f["event"] for _, f in entries if json.loads(f["event"])["id"] == event["id"])
    assert request.body == raw.encode() and streamed == event
    with pytest.raises(WebhookVerificationError):
        verify_webhook(request.headers, request.body.replace(b"active", b"failed"), secret)

    history = await hooks.attempts(created["id"])
    [attempt] = history["items"]
    assert attempt["event_id"] == event["id"] and attempt["event_type"] == "connection.refreshed"
    assert attempt["attempt"] == 1 and attempt["outcome"] == "delivered"
    assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0
    assert attempt["error"] is None and attempt["next_attempt_at"] is None
    assert history["next"] is None
    assert delivered_count() >= before + 1


async def test_types_and_apps_choose_what_a_subscription_receives(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    one, two, three = unique("wha"), unique("whb"), unique("whc")
    connections_of_one = Receiver(server, "/a")
    app_news = Receiver(server, "/b")
    all_of_two = Receiver(server, "/c")
    a = await hooks.create(connections_of_one.url, types=["connection."], apps=[one])
    b = await hooks.create(app_news.url, types=["app.settings_invalid"], apps=[one, two])
    c = await hooks.create(all_of_two.url, apps=[two])
    sent = [
        await emit(resources, one, EventType.REFRESHED, f"{one}-c"),
        await emit(resources, one, EventType.APP_SETTINGS_INVALID),
        await emit(resources, two, EventType.REVOKED, f"{two}-c"),
        await emit(resources, two, EventType.APP_SETTINGS_INVALID),
        await emit(resources, three, EventType.REFRESHED, f"{three}-c"),
        await emit(resources, None, EventType.WEBHOOK_DISABLED),
    ]
    ids = [e["id"] for e in sent]
    expected = {
        connections_of_one: {ids[0]},
        app_news: {ids[1], ids[3]},
        all_of_two: {ids[2], ids[3]},
    }
    for receiver, wanted in expected.items():
        await eventually(lambda r=receiver, w=wanted: set(r.ids()) >= w, "every expected event")
    # Every event has been considered (fanned out); none else was or will be delivered.
    await eventually(
        lambda: resources.pool.fetchval(
            "SELECT bool_and(fanned_out) FROM outbox WHERE event ->> 'id' = ANY($1::text[])", ids
        ),
        "the fan-out",
    )
    made = await resources.pool.fetch(
        "SELECT webhook_id::text AS w, event_id FROM webhook_deliveries WHERE event_id = ANY($1)",
        ids,
    )
    by_hook = {h["id"]: {r["event_id"] for r in made if r["w"] == h["id"]} for h in (a, b, c)}
    assert by_hook == {a["id"]: {ids[0]}, b["id"]: {ids[1], ids[3]}, c["id"]: {ids[2], ids[3]}}
    for receiver, wanted in expected.items():
        assert set(receiver.ids()) == wanted


async def test_a_failing_event_holds_back_its_connection_not_the_others(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    app = unique("whorder")
    receiver = Receiver(server, "/ordered")
    created = await hooks.create(receiver.url, apps=[app])
    # x's first event fails; x's later events wait behind it, y's go through meanwhile.
    receiver.status = 503
    first_of_x = await emit(resources, app, EventType.REFRESHED, f"{app}-x")
    await eventually(lambda: receiver.answered(503), "the first failed attempt")
    await resources.pool.execute(  # its next attempt: as far off as backing off may put it
        """UPDATE webhook_deliveries SET next_attempt_at = now() + interval '1 hour'
           WHERE webhook_id = $1 AND state = 'pending'""",
        uuid.UUID(created["id"]),
    )
    later_of_x = [await emit(resources, app, EventType.REFRESHED, f"{app}-x") for _ in range(2)]
    of_y = [await emit(resources, app, EventType.REFRESHED, f"{app}-y") for _ in range(2)]
    receiver.status = 200
    # y's events were waiting behind nothing; x's first is backing off, its others behind it.
    await eventually(lambda: set(receiver.ids()) >= {e["id"] for e in of_y}, "y's events")
    assert not set(receiver.ids()) & {first_of_x["id"], *(e["id"] for e in later_of_x)}
    pending = await resources.pool.fetch(
        """SELECT event_id, attempts FROM webhook_deliveries
           WHERE webhook_id = $1 AND state = 'pending' ORDER BY outbox_id""",
        uuid.UUID(created["id"]),
    )
    assert [r["event_id"] for r in pending] == [first_of_x["id"], *(e["id"] for e in later_of_x)]
    assert [r["attempts"] for r in pending] == [1, 0, 0]  # the later ones were never tried

    await make_due(resources, created["id"])
    x_ids = [first_of_x["id"], *(e["id"] for e in later_of_x)]
    await eventually(lambda: set(receiver.ids()) >= set(x_ids), "x's events")
    received_x = [r.event["id"] for r in receiver.requests if r.event["id"] in x_ids]
    assert received_x == [x_ids[0], x_ids[0], x_ids[1], x_ids[2]]  # failed, then in order
    history = await hooks.attempts(created["id"])
    failed = [a for a in history["items"] if a["outcome"] == "retrying"]
    assert [a["event_id"] for a in failed] == [x_ids[0]]
    assert failed[0]["status_code"] == 503 and failed[0]["error"] == "HTTP 503"
    assert failed[0]["next_attempt_at"] is not None


async def test_a_receiver_outage_loses_and_duplicates_nothing(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    app = unique("whoutage")
    receiver = Receiver(server, "/outage")
    created = await hooks.create(receiver.url, apps=[app])
    receiver.status = 503
    sent = []
    for i in range(24):
        sent.append(await emit(resources, app, EventType.REFRESHED, f"{app}-{i % 4}"))
    await eventually(lambda: len(receiver.answered(503)) >= 4, "the outage seen per connection")
    await make_due(resources, created["id"])  # retried during the outage: still 503
    await eventually(lambda: len(receiver.answered(503)) >= 8, "retries during the outage")
    receiver.status = 200  # the receiver comes back
    wanted = [e["id"] for e in sent]

    async def all_delivered() -> bool:
        await make_due(resources, created["id"])
        return set(receiver.ids()) >= set(wanted)

    await eventually(all_delivered, "every event after the outage")
    delivered = receiver.ids()
    assert sorted(delivered) == sorted(wanted)  # each once: nothing lost, nothing twice
    for connection in range(4):
        mine = [e["id"] for e in sent if e["connection_id"] == f"{app}-{connection}"]
        assert [i for i in delivered if i in mine] == mine  # in order per connection
    for request in receiver.requests:
        assert verify_webhook(request.headers, request.body, created["secret"])["id"] in wanted


async def test_two_dispatchers_deliver_each_event_once_in_order(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    """The session's worker and a second dispatcher (as another worker process runs one) on
    the same database: every event delivered once, each connection's in order."""
    app = unique("whtwo")
    receiver = Receiver(server, "/two")
    created = await hooks.create(receiver.url, apps=[app])
    second = asyncio.create_task(WebhookDispatcher(resources).run())
    try:
        sent = [
            await emit(resources, app, EventType.REFRESHED, f"{app}-{i % 5}") for i in range(60)
        ]
        wanted = [e["id"] for e in sent]
        await eventually(lambda: set(receiver.ids()) >= set(wanted), "every event")
    finally:
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
    assert sorted(receiver.ids()) == sorted(wanted)
    for connection in range(5):
        mine = [e["id"] for e in sent if e["connection_id"] == f"{app}-{connection}"]
        assert [i for i in receiver.ids() if i in mine] == mine
    for request in receiver.requests:
        assert verify_webhook(request.headers, request.body, created["secret"])["id"] in wanted


async def test_a_day_of_failures_disables_the_subscription_with_an_event(
    hooks: Hooks, server: FakeProvider, resources: Resources, events, unique
):
    app = unique("whday")
    failing = Receiver(server, "/failing")
    watcher = Receiver(server, "/watcher")
    created = await hooks.create(failing.url, apps=[app])
    watching = await hooks.create(watcher.url, types=["webhook.disabled"])
    failing.status = 503
    doomed = await emit(resources, app, EventType.REFRESHED, f"{app}-1")
    waiting = await emit(resources, app, EventType.REFRESHED, f"{app}-1")
    await eventually(lambda: failing.answered(503), "the first failure")
    before = (
        REGISTRY.get_sample_value("authbroker_webhooks_disabled_total", {"reason": "failing"})
        or 0.0
    )
    # A day later (as far as the delivery knows), its next attempt fails too.
    await resources.pool.execute(
        """UPDATE webhook_deliveries
           SET first_failed_at = now() - interval '24 hours 1 minute', next_attempt_at = now()
           WHERE webhook_id = $1 AND state = 'pending' AND attempts > 0""",
        uuid.UUID(created["id"]),
    )
    await resources.pool.execute("SELECT pg_notify($1, '')", stored.NOTIFY_CHANNEL)
    disabled = await events.wait_for(
        lambda e: e["type"] == "webhook.disabled" and e["data"].get("webhook_id") == created["id"],
        timeout=WAIT,
    )
    assert disabled["app"] is None and disabled["connection_id"] is None
    assert disabled["data"]["reason"] == "failing" and disabled["data"]["last_status"] == 503
    assert disabled["data"]["attempts"] >= 2 and disabled["detail"]
    shown = await hooks.get(created["id"])
    assert shown["enabled"] is False and shown["disabled_reason"] == "failing"
    states = dict(
        await resources.pool.fetch(
            "SELECT event_id, state FROM webhook_deliveries WHERE webhook_id = $1",
            uuid.UUID(created["id"]),
        )
    )
    assert states == {doomed["id"]: "failed", waiting["id"]: "abandoned"}
    last = (await hooks.attempts(created["id"]))["items"][0]
    assert last["outcome"] == "failed" and last["next_attempt_at"] is None
    assert (
        REGISTRY.get_sample_value("authbroker_webhooks_disabled_total", {"reason": "failing"})
        == before + 1
    )
    # The event itself is delivered like any other (to a subscription of every app).
    await eventually(lambda: disabled["id"] in watcher.ids(), "webhook.disabled delivered")
    got = next(r for r in watcher.answered() if r.event["id"] == disabled["id"])
    assert verify_webhook(got.headers, got.body, watching["secret"]) == disabled

    # Nothing more is sent while disabled; enabled again, a replay brings the lost event.
    meanwhile = await emit(resources, app, EventType.REFRESHED, f"{app}-2")
    await eventually(
        lambda: resources.pool.fetchval(
            "SELECT fanned_out FROM outbox WHERE event ->> 'id' = $1", meanwhile["id"]
        ),
        "the fan-out of an event while disabled",
    )
    async with hooks.api.post(
        f"/v1/webhooks/{created['id']}/deliveries/{last['delivery_id']}/replay"
    ) as response:
        assert response.status == 409 and (await response.json())["error"] == "webhook_disabled"
    async with hooks.api.patch(f"/v1/webhooks/{created['id']}", json={"enabled": True}) as r:
        assert r.status == 200 and (await r.json())["disabled_reason"] is None
    failing.status = 200
    async with hooks.api.post(
        f"/v1/webhooks/{created['id']}/deliveries/{last['delivery_id']}/replay"
    ) as response:
        assert response.status == 202
        assert (await response.json())["state"] == "pending"
    await eventually(lambda: doomed["id"] in failing.ids(), "the replayed event")
    assert failing.ids() == [doomed["id"]]


async def test_a_410_disables_at_once(
    hooks: Hooks, server: FakeProvider, resources: Resources, events, unique
):
    app = unique("whgone")
    receiver = Receiver(server, "/gone")
    created = await hooks.create(receiver.url, apps=[app])
    receiver.status = 410
    await emit(resources, app, EventType.REVOKED, f"{app}-1")
    disabled = await events.wait_for(
        lambda e: e["type"] == "webhook.disabled" and e["data"].get("webhook_id") == created["id"],
        timeout=WAIT,
    )
    assert disabled["data"]["reason"] == "gone" and disabled["data"]["attempts"] == 1
    shown = await hooks.get(created["id"])
    assert shown["enabled"] is False and shown["disabled_reason"] == "gone"
    assert len(receiver.requests) == 1


async def test_a_rotation_signs_with_both_secrets_for_its_window(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    app = unique("whrotate")
    receiver = Receiver(server, "/rotate")
    created = await hooks.create(receiver.url, apps=[app])
    old = created["secret"]
    async with hooks.api.post(f"/v1/webhooks/{created['id']}/rotate-secret") as response:
        assert response.status == 200
        rotated = await response.json()
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_")
    assert rotated["previous_secret_expires_at"] is not None
    assert (await hooks.get(created["id"]))["previous_secret_expires_at"] is not None

    event = await emit(resources, app, EventType.REFRESHED, f"{app}-c")
    await eventually(lambda: event["id"] in receiver.ids(), "a delivery during the rotation")
    request = receiver.answered()[-1]
    assert len(request.headers["webhook-signature"].split()) == 2
    assert verify_webhook(request.headers, request.body, old) == event  # receivers not moved yet
    assert verify_webhook(request.headers, request.body, new) == event  # and those that have

    # The window closes (as a day would close it): only the new secret signs.
    await resources.pool.execute(
        "UPDATE webhooks SET previous_secret_expires_at = now() WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    assert (await hooks.get(created["id"]))["previous_secret_expires_at"] is None
    await stored.drop_expired_secrets(resources.pool)  # what the dispatchers do every minute
    assert not await resources.pool.fetchval(
        "SELECT previous_secret IS NOT NULL FROM webhooks WHERE id = $1", uuid.UUID(created["id"])
    )
    later = await emit(resources, app, EventType.REFRESHED, f"{app}-c")
    await eventually(lambda: later["id"] in receiver.ids(), "a delivery after the window")
    request = receiver.answered()[-1]
    assert len(request.headers["webhook-signature"].split()) == 1
    assert verify_webhook(request.headers, request.body, new) == later
    with pytest.raises(WebhookVerificationError):
        verify_webhook(request.headers, request.body, old)

    # Rotating with no window drops the previous secret at once.
    async with hooks.api.post(
        f"/v1/webhooks/{created['id']}/rotate-secret", json={"previous_expires_in": 0}
    ) as response:
        newest = (await response.json())["secret"]
    last = await emit(resources, app, EventType.REFRESHED, f"{app}-c")
    await eventually(lambda: last["id"] in receiver.ids(), "a delivery after a hard rotation")
    request = receiver.answered()[-1]
    assert verify_webhook(request.headers, request.body, newest) == last
    with pytest.raises(WebhookVerificationError):
        verify_webhook(request.headers, request.body, new)


async def test_replay_sends_the_same_event_again(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    app = unique("whreplay")
    receiver = Receiver(server, "/replay")
    created = await hooks.create(receiver.url, apps=[app])
    event = await emit(resources, app, EventType.AUTHORIZED, f"{app}-c")
    await eventually(lambda: receiver.ids() == [event["id"]], "the delivery")
    [first] = (await hooks.attempts(created["id"]))["items"]
    path = f"/v1/webhooks/{created['id']}/deliveries/{first['delivery_id']}/replay"
    async with hooks.api.post(path) as response:
        assert response.status == 202
        replayed = await response.json()
    assert replayed["event_id"] == event["id"] and replayed["delivery_id"] == first["delivery_id"]
    await eventually(lambda: receiver.ids() == [event["id"]] * 2, "the replay")
    for request in receiver.requests:
        assert request.headers["webhook-id"] == event["id"]
        assert verify_webhook(request.headers, request.body, created["secret"]) == event
    history = await hooks.attempts(created["id"])
    assert [a["attempt"] for a in history["items"]] == [2, 1]  # newest first
    page = await hooks.attempts(created["id"], limit=1)
    assert len(page["items"]) == 1 and page["next"] == page["items"][0]["id"]
    rest = await hooks.attempts(created["id"], after=page["next"])
    assert [a["attempt"] for a in rest["items"]] == [1] and rest["next"] is None
    for bad in (f"{path[: path.rindex('/deliveries')]}/deliveries/999999999/replay",):
        async with hooks.api.post(bad) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "delivery_not_found"


async def test_a_slow_receiver_delays_neither_refreshes_nor_the_stream(
    hooks: Hooks, server: FakeProvider, api, anonymous, oauth_server, events, unique
):
    """A receiver that takes its time (here: until the test lets it answer) holds its own
    delivery and nothing else: a refresh is done and its event is on the Redis stream while
    the receiver still holds the request; then the deliveries go on, in order."""
    name = unique("whslow")
    receiver = Receiver(server, "/slow")
    receiver.hold = asyncio.Event()
    created = await hooks.create(receiver.url, apps=[name])
    started = await authorize_for_real(api, anonymous, oauth_server, events, name)
    connection_id = started["connection_id"]
    await eventually(lambda: receiver.held >= 1, "the receiver holding the first delivery")

    async with api.post(f"/v1/connections/{connection_id}/refresh") as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["outcome"] == "refreshed"
    refreshed = await events.wait_for(
        lambda e: e["type"] == "connection.refreshed" and e["connection_id"] == connection_id
    )
    assert receiver.requests == []  # still holding: nothing answered yet

    receiver.hold.set()
    await eventually(lambda: refreshed["id"] in receiver.ids(), "the deliveries after the hold")
    kinds = [r.event["type"] for r in receiver.answered()]
    assert kinds.index("connection.authorized") < kinds.index("connection.refreshed")
    for request in receiver.answered():
        verify_webhook(request.headers, request.body, created["secret"])


async def test_redirects_are_not_followed_and_unreachable_receivers_are_retried(
    hooks: Hooks, server: FakeProvider, resources: Resources, unique
):
    app = unique("whredirect")
    target = Receiver(server, "/elsewhere")

    async def moved(_request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": target.url})

    server.handlers["/moved"] = moved
    redirected = await hooks.create(server.url("/moved"), apps=[app])
    nowhere = await hooks.create(f"http://127.0.0.1:{free_port()}/in", apps=[app])
    before = (
        REGISTRY.get_sample_value("authbroker_webhook_deliveries_total", {"outcome": "unreachable"})
        or 0.0
    )
    await emit(resources, app, EventType.REFRESHED, f"{app}-c")

    async def attempted(webhook_id: str) -> list[dict[str, Any]]:
        return (await hooks.attempts(webhook_id))["items"]

    for created in (redirected, nowhere):
        await eventually(lambda c=created: attempted(c["id"]), "a failed attempt")
    [moved_attempt] = await attempted(redirected["id"])
    assert moved_attempt["outcome"] == "retrying" and moved_attempt["status_code"] == 307
    assert moved_attempt["error"] == "HTTP 307: redirects are not followed"
    assert target.requests == []
    [refused] = await attempted(nowhere["id"])
    assert refused["outcome"] == "retrying" and refused["status_code"] is None
    assert refused["error"].startswith("cannot connect")
    assert (
        REGISTRY.get_sample_value("authbroker_webhook_deliveries_total", {"outcome": "unreachable"})
        >= before + 1
    )


# ------------------------------------------------------------------------------ input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "https://[::ffff:169.254.169.254]/hook"}, "url"),
        ({"url": "https://0xa9fea9fe/hook"}, "url"),
        ({"url": "https://100.100.100.200/hook"}, "url"),
        ({"url": "http://hooks.example.com/in"}, "url"),
        ({"url": "ftp://hooks.example.com/in"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/in"}, "url"),
        ({"url": "https://hooks.example.com/in", "types": ["connection.refreshd"]}, "types"),
        ({"url": "https://hooks.example.com/in", "types": []}, "types"),
        ({"url": "https://hooks.example.com/in", "apps": ["bad name"]}, "apps.0"),
        ({"url": "https://hooks.example.com/in", "secret": "mine"}, "secret"),
        ({"types": ["connection."]}, "url"),
    ],
)
async def test_refused_definitions_name_the_field(api, hooks: Hooks, body, field):
    async with api.post("/v1/webhooks", json=body) as response:
        assert response.status == 400
        answer = await response.json()
    assert answer["error"] == "invalid_request"
    assert [f["field"] for f in answer["fields"]] == [field], answer


async def test_changes_are_checked_like_definitions(api, hooks: Hooks, server: FakeProvider):
    created = await hooks.create(Receiver(server, "/changes").url)
    path = f"/v1/webhooks/{created['id']}"
    for change, field in (
        ({"url": "https://169.254.169.254/"}, "url"),
        ({"url": None}, "url"),
        ({"enabled": None}, "enabled"),
        ({"types": ["nope"]}, "types"),
    ):
        async with api.patch(path, json=change) as response:
            assert response.status == 400, change
            assert [f["field"] for f in (await response.json())["fields"]] == [field]
    async with api.patch(
        path, json={"types": ["app."], "apps": ["crm"], "description": "ops"}
    ) as response:
        changed = await response.json()
    assert (changed["types"], changed["apps"], changed["description"]) == (["app."], ["crm"], "ops")
    async with api.patch(path, json={"types": None, "apps": None, "enabled": False}) as response:
        changed = await response.json()
    assert changed["types"] is None and changed["apps"] is None
    assert changed["enabled"] is False and changed["disabled_reason"] == "operator"
    for unknown in ("/v1/webhooks/not-a-uuid", f"/v1/webhooks/{uuid.uuid4()}"):
        async with api.get(unknown) as response:
            assert response.status == 404
            assert (await response.json())["error"] == "webhook_not_found"
    async with api.delete(path) as response:
        assert response.status == 204
    async with api.get(path) as response:
        assert response.status == 404
