"""Server-sent events from `GET /v1/events`: the same stream as Redis, for runtimes that cannot
reach Redis. Each event's `id` is its stream entry id; reconnecting with `Last-Event-ID` goes
on after it, so an interrupted connection loses nothing the stream still holds."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from authbroker_client.errors import Unreachable

if TYPE_CHECKING:
    from authbroker_client.client import AuthbrokerClient


@dataclass(frozen=True)
class Message:
    """One dispatched server-sent event."""

    id: str | None
    event: str
    data: str


async def parse(lines: AsyncIterator[str]) -> AsyncIterator[Message]:
    """Messages from an event stream's lines, as the HTML standard's parser reads them:
    `field: value` lines, `:` comments, a blank line dispatches; the last id carries over."""
    last_id: str | None = None
    event, data = "", []
    async for line in lines:
        if not line:
            if data:
                yield Message(last_id, event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value or None


class SseReader:
    """Entries of the event stream over `GET /v1/events`. There is no consumer group here:
    acknowledging is a no-op and the position is the caller's (`after`)."""

    name = "sse"

    def __init__(self, broker: AuthbrokerClient, *, after: str | None, from_start: bool) -> None:
        self._broker = broker
        self._after = after
        self._from_start = from_start
        self._exit = contextlib.AsyncExitStack()
        self._messages: AsyncIterator[Message] | None = None

    async def open(self) -> None:
        headers = {"Accept": "text/event-stream"}
        params = {}
        if self._after:
            headers["Last-Event-ID"] = self._after
        elif self._from_start:
            params["from_start"] = "1"
        response = await self._exit.enter_async_context(
            self._broker.stream("/v1/events", params=params, headers=headers)
        )
        self._messages = parse(response.aiter_lines())

    async def next(self) -> tuple[str, str | None]:
        assert self._messages is not None, "open() first"
        try:
            async for message in self._messages:
                if message.event == "error":
                    raise Unreachable(f"the event stream broke off: {_message_of(message.data)}")
                if message.id is not None:
                    return message.id, message.data
        except httpx.TransportError as exc:
            raise Unreachable(f"the event stream broke off: {type(exc).__name__}") from exc
        raise Unreachable("the event stream ended")

    async def ack(self, entry_ids: list[str]) -> None:
        """Nothing to tell: the server keeps no position for this reader."""

    async def aclose(self) -> None:
        await self._exit.aclose()


def _message_of(data: str) -> str:
    try:
        return str(json.loads(data).get("message", data))
    except (ValueError, AttributeError):
        return data
