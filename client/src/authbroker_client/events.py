"""Auth events for a runtime: each event handled once per consumer group, acknowledged only
after the runtime's code for it returned.

    async with broker.events(group="billing", consumer="billing-1", redis_url=url) as stream:
        async for event in stream:
            await handle(event)        # acknowledged when the loop asks for the next one

Acknowledging: asking for the next event acknowledges the one before; `await stream.ack()`
acknowledges the one in hand at once; leaving the `async with` block normally (a `break`)
acknowledges it too, leaving it by an exception does not. An event not acknowledged stays
pending for this consumer and is handed out again first when the consumer starts again
(give consumers stable names). After your code raised, open a new stream rather than iterating
the same one again: asking it for the next event would count the failed one as handled.

Delivery is at least once; events are deduplicated on their `id` within the last
`dedup_size` ones seen by this stream (a relay may append an event twice).

Transport: the Redis stream `{prefix}:events` with a consumer group (created when missing,
from the first entry kept with `from_start=True`, else from now). Without `redis_url`, or when
Redis refuses the connection, the same stream is read over `GET /v1/events` (server-sent
events, resumed with `Last-Event-ID`); there is no consumer group then, so every stream of
every process sees every event. Interruptions of either are retried with a capped backoff,
trying Redis first each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authbroker_client.credentials import parse_time
from authbroker_client.errors import ServiceUnavailable, Unreachable
from authbroker_client.redis_group import GroupReader
from authbroker_client.sse import SseReader

if TYPE_CHECKING:
    from authbroker_client.client import AuthbrokerClient

log = logging.getLogger("authbroker_client.events")

FIRST_DELAY = 0.5  # seconds before the first reconnection; doubled on each failure …
MAX_DELAY = 30.0  # … up to this
# Failures that pass: the stream is read again after a pause.
TRANSIENT = (Unreachable, ServiceUnavailable, RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True)
class Event:
    """One auth event (see authbroker's README, *Events*); `entry_id` is its stream entry id
    and `payload` the whole JSON."""

    id: str
    type: str
    entry_id: str
    app: str | None = None
    connection_id: str | None = None
    status: str | None = None
    problem: str | None = None
    detail: str | None = None
    occurred_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, text: str | None, entry_id: str) -> Event | None:
        """The event in a stream entry, or None when the entry holds no event."""
        try:
            payload = json.loads(text or "")
        except ValueError:
            return None
        if not isinstance(payload, dict) or not payload.get("id") or not payload.get("type"):
            return None
        return cls(
            id=str(payload["id"]),
            type=str(payload["type"]),
            entry_id=entry_id,
            app=payload.get("app"),
            connection_id=payload.get("connection_id"),
            status=payload.get("status"),
            problem=payload.get("problem"),
            detail=payload.get("detail"),
            occurred_at=parse_time(payload.get("occurred_at")),
            data=payload.get("data") or {},
            payload=payload,
        )


class Reader(Protocol):
    name: str

    async def next(self) -> tuple[str, str | None]: ...

    async def ack(self, entry_ids: list[str]) -> None: ...

    async def aclose(self) -> None: ...


class EventStream:
    """An async iterator of `Event`s; see the module's description. `transport` says what it
    reads (`redis` or `sse`), `last_id` the newest stream entry id read."""

    def __init__(
        self,
        broker: AuthbrokerClient,
        *,
        group: str,
        consumer: str,
        redis_url: str | None = None,
        prefix: str = "authbroker",
        from_start: bool = False,
        dedup_size: int = 10_000,
    ) -> None:
        if not group or not consumer:
            raise ValueError("group and consumer are required")
        self._broker = broker
        self.group = group
        self.consumer = consumer
        self._redis_url = redis_url
        self.stream_key = f"{prefix}:events"
        self._from_start = from_start
        self._dedup_size = max(1, dedup_size)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._reader: Reader | None = None
        self._in_hand: Event | None = None
        self._to_ack: list[str] = []
        self._delay = FIRST_DELAY
        self._closed = False
        self.transport: str | None = None
        self.last_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"EventStream(group={self.group!r}, consumer={self.consumer!r}, "
            f"transport={self.transport!r})"
        )

    async def __aenter__(self) -> EventStream:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            await self.ack()
        await self.aclose()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        if self._in_hand is not None:
            self._to_ack.append(self._in_hand.entry_id)
            self._in_hand = None
        while True:
            try:
                reader = self._reader or await self._connect()
                await self._send_acks(reader)
                entry_id, text = await reader.next()
            except Exception as exc:
                if not _passing(exc):
                    raise
                await self._pause(exc)
                continue
            self._delay = FIRST_DELAY
            self.last_id = entry_id
            event = Event.from_json(text, entry_id)
            if event is None or event.id in self._seen:
                self._to_ack.append(entry_id)
                continue
            self._seen[event.id] = None
            if len(self._seen) > self._dedup_size:
                self._seen.popitem(last=False)
            self._in_hand = event
            return event

    async def open(self) -> None:
        """Connect now (to Redis, creating the group, else to `/v1/events`), waiting out
        interruptions; what is appended from then on is seen. `async with` and the first
        iteration do it otherwise."""
        while self._reader is None and not self._closed:
            try:
                await self._connect()
            except Exception as exc:
                if not _passing(exc):
                    raise
                await self._pause(exc)

    async def ack(self) -> None:
        """Acknowledge the event in hand now. When Redis cannot take it now, it is sent after
        reconnecting, before anything new is read."""
        if self._in_hand is None:
            return
        self._to_ack.append(self._in_hand.entry_id)
        self._in_hand = None
        if self._reader is None:
            return
        try:
            await self._send_acks(self._reader)
        except TRANSIENT as exc:
            log.warning("acknowledging failed (%s); sent again after reconnecting", exc)
            await self._drop_reader()

    async def aclose(self) -> None:
        self._closed = True
        await self._drop_reader()

    async def _connect(self) -> Reader:
        if self._redis_url:
            group = await GroupReader.connect(
                self._redis_url,
                self.stream_key,
                self.group,
                self.consumer,
                from_start=self._from_start,
            )
            if group is not None:
                return self._use(group)
            log.warning("Redis cannot be reached: reading events from authbroker's /v1/events")
        sse = SseReader(self._broker, after=self.last_id, from_start=self._from_start)
        try:
            await sse.open()
        except BaseException:
            await sse.aclose()
            raise
        return self._use(sse)

    def _use(self, reader: Reader) -> Reader:
        self._reader = reader
        self.transport = reader.name
        return reader

    async def _send_acks(self, reader: Reader) -> None:
        if self._to_ack:
            await reader.ack(self._to_ack)
            self._to_ack = []

    async def _pause(self, exc: BaseException) -> None:
        await self._drop_reader()
        log.warning("event stream interrupted (%s); reading again in %g s", exc, self._delay)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_DELAY)

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(TRANSIENT):
                await reader.aclose()


def _passing(exc: Exception) -> bool:
    """Whether reading may go on after `exc` (a pause, then a new connection): an outage or a
    group that vanished (its stream was deleted) passes; a refused password does not."""
    if isinstance(exc, AuthenticationError):
        return False
    if isinstance(exc, ResponseError):
        return str(exc).startswith("NOGROUP")
    return isinstance(exc, TRANSIENT)
