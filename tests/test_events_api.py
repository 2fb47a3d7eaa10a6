"""`GET /v1/events`: the Redis event stream as server-sent events, filtered, resumable, kept
alive, and let go of when the client leaves or the server stops."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from authbroker.events import EventType, make_event
from handlers import events as events_handler
from handlers import sse as sse_module
from tests.helpers import publish
from tests.operator_app import OperatorServer, operator_server  # noqa: F401


class Stream:
    """A server-sent events reader over an open response."""

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response
        self.comments: list[str] = []

    async def next(self, timeout: float = 10.0) -> tuple[str | None, dict[str, Any]]:
        """The next event (id, data); comments are collected on the way."""
        event_id, data = None, []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no event within {timeout} s; comments {self.comments}")
            raw = await asyncio.wait_for(self.response.content.readline(), remaining)
            if not raw:
                raise EOFError("the server ended the stream")
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                return event_id, json.loads("\n".join(data))

    async def comment(self, text: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in c for c in self.comments):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} comment; saw {self.comments}"
            raw = await asyncio.wait_for(self.response.content.readline(), remaining)
            if not raw:
                raise EOFError("the server ended the stream")
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)


@pytest.fixture
async def sse(operator_server: OperatorServer, admin_key: str):  # noqa: F811
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def open_stream(
        params: Any = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[Stream]:
        session = aiohttp.ClientSession(base_url=operator_server.url)
        sessions.append(session)
        async with session.get(
            "/v1/events",
            params=params,
            headers={"Authorization": f"Bearer {admin_key}", **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
        ) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            stream = Stream(response)
            await stream.comment("stream open")
            yield stream

    yield open_stream
    for session in sessions:
        await session.close()


def event(type_: EventType, app: str, connection_id: str | None = None) -> dict[str, Any]:
    return make_event(type_, app=app, connection_id=connection_id, status="active")


async def test_from_start_filters_by_app_and_type_prefix(sse, redis, settings, unique):
    app, other = unique("ev"), unique("ev")
    first = await publish(redis, settings, event(EventType.AUTHORIZED, app, "c1"))
    await publish(redis, settings, event(EventType.AUTHORIZED, other, "c2"))
    await publish(redis, settings, event(EventType.INVALIDATED, app, "c1"))
    third = await publish(redis, settings, event(EventType.REFRESHED, app, "c1"))

    async with sse({"from_start": "1", "app": app}) as stream:
        seen = [await stream.next() for _ in range(3)]
    assert [e["type"] for _, e in seen] == [
        "connection.authorized",
        "connection.invalidated",
        "connection.refreshed",
    ]
    assert seen[0][0] == first and seen[2][0] == third
    assert all(e["app"] == app for _, e in seen)

    async with sse([("from_start", "1"), ("app", app), ("type", "connection.refresh")]) as stream:
        event_id, data = await stream.next()
    assert data["type"] == "connection.refreshed" and event_id == third


async def test_live_events_and_resume_with_last_event_id(sse, redis, settings, unique):
    app = unique("live")
    await publish(redis, settings, event(EventType.AUTHORIZED, app))  # before: not shown live
    async with sse({"app": app}) as stream:
        sent = await publish(redis, settings, event(EventType.REFRESHED, app))
        event_id, data = await stream.next()
    assert event_id == sent and data["type"] == "connection.refreshed"

    later = await publish(redis, settings, event(EventType.REVOKED, app))
    async with sse({"app": app}, headers={"Last-Event-ID": sent}) as stream:
        event_id, data = await stream.next()
    assert event_id == later and data["type"] == "connection.revoked"


async def test_keepalive_comments(sse, monkeypatch, unique):
    monkeypatch.setattr(sse_module, "KEEPALIVE", 0.3)
    monkeypatch.setattr(sse_module, "READ_BLOCK", 0.1)
    async with sse({"app": unique("quiet")}) as stream:
        await stream.comment("keepalive", timeout=5)


async def test_a_client_that_leaves_is_let_go(sse, operator_server, monkeypatch, unique):  # noqa: F811
    monkeypatch.setattr(sse_module, "READ_BLOCK", 0.1)
    before = events_handler.open_streams(operator_server.app)
    async with sse({"app": unique("gone")}):
        assert events_handler.open_streams(operator_server.app) == before + 1
    deadline = time.monotonic() + 5
    while events_handler.open_streams(operator_server.app) > before:
        assert time.monotonic() < deadline, "the stream outlived its client"
        await asyncio.sleep(0.05)


async def test_shutdown_ends_open_streams(sse, operator_server, monkeypatch, unique):  # noqa: F811
    monkeypatch.setattr(sse_module, "READ_BLOCK", 0.1)
    async with sse({"app": unique("shut")}) as stream:
        await events_handler.close_streams(operator_server.app)
        with pytest.raises(EOFError):
            await stream.next(timeout=5)


async def test_refusals(operator_server, admin_key):  # noqa: F811
    async with aiohttp.ClientSession(base_url=operator_server.url) as session:
        async with session.get("/v1/events") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {admin_key}", "Last-Event-ID": "yesterday"}
        async with session.get("/v1/events", headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "invalid_last_event_id"
        too_many = [("type", f"t{i}") for i in range(30)]
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with session.get("/v1/events", params=too_many, headers=headers) as response:
            assert response.status == 400
