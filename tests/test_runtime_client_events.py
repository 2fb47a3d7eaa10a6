"""The runtime client's event stream: a Redis consumer group that acknowledges an event only
after the runtime's code for it returned, deduplicates, resumes after a restart, and falls back
to authbroker's server-sent events when Redis cannot be reached."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from authbroker_client import AuthbrokerClient, Event, EventStream

from authbroker.embedded import free_port
from authbroker.events import EventType, make_event
from handlers import sse as sse_module
from handlers.app import create_app
from tests.helpers import authorize_for_real, publish, serving

PATIENCE = 60.0  # seconds a test waits for an event before it fails rather than hangs


async def next_event(stream: EventStream) -> Event:
    return await asyncio.wait_for(anext(stream), PATIENCE)


async def first_of(stream: EventStream, wanted: Callable[[Event], bool]) -> Event:
    """The first event `wanted` (the stream is shared with the rest of the suite)."""

    async def scan() -> Event:
        async for event in stream:
            if wanted(event):
                return event
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(scan(), PATIENCE)


class Boom(Exception):
    """The runtime's code failed on an event."""


@pytest.fixture
async def broker(web_server, admin_key):
    async with AuthbrokerClient(web_server, admin_key) as client:
        yield client


@pytest.fixture
def private(settings, unique):
    """A stream of the test's own (`{prefix}:events`), that only the test writes to."""
    prefix = unique(f"{settings.redis_prefix}-client")
    return {"prefix": prefix, "stream": f"{prefix}:events", "redis_url": settings.redis_url}


def an_event(app: str, type_: EventType = EventType.REFRESHED) -> dict[str, Any]:
    return make_event(type_, app=app, connection_id=f"{app}-c", status="active")


async def append(redis, stream: str, event: dict[str, Any]) -> str:
    return await redis.xadd(stream, {"type": event["type"], "event": json.dumps(event)})


async def pending(redis, stream: str, group: str) -> list[str]:
    return [p["message_id"] for p in await redis.xpending_range(stream, group, "-", "+", 100)]


async def test_an_event_is_acknowledged_only_once_the_next_is_asked_for(
    broker, redis, private, unique
):
    app = unique("ack")
    stream = broker.events(
        group="g", consumer="c1", redis_url=private["redis_url"], prefix=private["prefix"]
    )
    async with stream:
        first_id = await append(redis, private["stream"], an_event(app))
        second_id = await append(redis, private["stream"], an_event(app, EventType.REVOKED))
        first = await next_event(stream)
        assert stream.transport == "redis"
        assert (first.entry_id, first.type, first.app) == (first_id, "connection.refreshed", app)
        assert first.connection_id == f"{app}-c" and first.occurred_at is not None
        assert first_id in await pending(redis, private["stream"], "g")  # in hand: not yet

        second = await next_event(stream)  # asking for the next acknowledges the first
        assert second.type == "connection.revoked"
        assert await pending(redis, private["stream"], "g") == [second_id]
        await stream.ack()  # done with it before asking for more
        assert await pending(redis, private["stream"], "g") == []


async def test_a_failed_event_comes_back_first_after_a_restart(broker, redis, private, unique):
    app = unique("restart")
    options = {"redis_url": private["redis_url"], "prefix": private["prefix"]}
    failed_id = await append(redis, private["stream"], an_event(app))  # before the group: …
    with pytest.raises(Boom):
        async with broker.events(group="g", consumer="c1", from_start=True, **options) as stream:
            async for event in stream:  # … from_start reads it anyway
                raise Boom(event.id)
    assert await pending(redis, private["stream"], "g") == [failed_id]

    later_id = await append(redis, private["stream"], an_event(app, EventType.REVOKED))
    # Another consumer of the group gets only what nobody holds.
    async with broker.events(group="g", consumer="c2", **options) as other:
        assert (await next_event(other)).entry_id == later_id
    # The restarted consumer gets its unacknowledged event back first.
    async with broker.events(group="g", consumer="c1", **options) as again:
        assert (await next_event(again)).entry_id == failed_id
    assert await pending(redis, private["stream"], "g") == []  # a normal exit acknowledges


async def test_a_group_starts_from_now_unless_asked_for_the_start(broker, redis, private, unique):
    app = unique("start")
    options = {"redis_url": private["redis_url"], "prefix": private["prefix"]}
    old_id = await append(redis, private["stream"], an_event(app))
    async with broker.events(group="now", consumer="c", **options) as stream:
        new_id = await append(redis, private["stream"], an_event(app, EventType.REVOKED))
        assert (await next_event(stream)).entry_id == new_id
    async with broker.events(group="all", consumer="c", from_start=True, **options) as stream:
        assert [(await next_event(stream)).entry_id for _ in range(2)] == [old_id, new_id]


async def test_duplicates_are_skipped_and_acknowledged(broker, redis, private, unique):
    app = unique("dup")
    event = an_event(app)
    await append(redis, private["stream"], event)
    await append(redis, private["stream"], event)  # the relay appended it twice
    last_id = await append(redis, private["stream"], an_event(app, EventType.REVOKED))
    async with broker.events(
        group="g",
        consumer="c",
        from_start=True,
        redis_url=private["redis_url"],
        prefix=private["prefix"],
    ) as stream:
        first = await next_event(stream)
        second = await next_event(stream)
    assert first.id == event["id"]
    assert second.entry_id == last_id  # the second copy of the first was not handed out
    assert await pending(redis, private["stream"], "g") == []


async def test_events_of_a_real_authorization_reach_the_group(
    broker, api, anonymous, oauth_server, worker, events, settings, unique
):
    stream = broker.events(
        group=unique("runtime"),
        consumer="c",
        redis_url=settings.redis_url,
        prefix=settings.redis_prefix,
    )
    async with stream:
        started = await authorize_for_real(api, anonymous, oauth_server, events, unique("ev"))
        event = await first_of(
            stream,
            lambda e: (
                e.connection_id == started["connection_id"] and e.type == "connection.authorized"
            ),
        )
    assert event.status == "active"
    assert event.data["has_refresh_token"] is True


@pytest.mark.parametrize("reach", ["no_url", "refused"])
async def test_without_redis_events_come_over_sse(broker, redis, settings, unique, reach):
    redis_url = f"redis://127.0.0.1:{free_port()}/0" if reach == "refused" else None
    app = unique("sse")
    async with broker.events(group="g", consumer="c", redis_url=redis_url) as stream:
        assert stream.transport == "sse"
        sent = await publish(redis, settings, an_event(app))
        event = await first_of(stream, lambda e: e.app == app)
    assert event.entry_id == sent and event.type == "connection.refreshed"


async def test_sse_resumes_after_the_server_went_away(
    resources, admin_key, redis, settings, unique, monkeypatch
):
    """authbroker restarts between two events: the client reconnects with Last-Event-ID and
    gets the event published while it was away."""
    monkeypatch.setattr(sse_module, "READ_BLOCK", 0.1)  # streams end promptly at shutdown
    port = free_port()
    app = unique("resume")
    async with AuthbrokerClient(f"http://127.0.0.1:{port}", admin_key) as broker:
        stream = broker.events(group="g", consumer="c")
        async with serving(create_app(resources), port):
            await stream.open()
            first = await publish(redis, settings, an_event(app))
            assert (await next_event(stream)).entry_id == first
        while_away = await publish(redis, settings, an_event(app, EventType.REVOKED))
        async with serving(create_app(resources), port), stream:
            event = await next_event(stream)
    assert event.entry_id == while_away and event.type == "connection.revoked"
