"""Auth events as server-sent events, one implementation for the API (`GET /v1/events`) and the
console's live strip.

Both read the Redis stream the relay appends to (`settings.events_stream`; each entry holds the
event's type and its JSON) from a cursor: after the id a client last saw (`Last-Event-ID`, sent
back by EventSource on reconnect), so reconnecting loses nothing the stream still holds. Each
message's `id` is the stream id. A `: keepalive` comment goes out after 15 s without data so
proxies keep the connection open and clients notice a dead server; a client that goes away is
noticed within one read (at most 5 s). Streams end at shutdown, after `max_seconds`, or when
`allowed()` says the caller may no longer read (a revoked key, a signed-out session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from authbroker.logs import get_logger
from storage.resources import Resources

log = get_logger("authbroker.events")

KEEPALIVE = 15.0  # seconds without a write before a `: keepalive` comment
READ_BLOCK = 5.0  # seconds one XREAD waits; between reads a gone client or shutdown is noticed
BATCH = 200  # entries per XREAD
RECHECK = 60.0  # seconds between checks that the caller may still read
STREAM_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")

# Open streams per application, so a shutdown hook can end them at once instead of letting the
# server wait its whole shutdown timeout for clients that never hang up.
_open: weakref.WeakKeyDictionary[web.Application, set[asyncio.Event]] = weakref.WeakKeyDictionary()


def open_streams(app: web.Application) -> int:
    """How many event streams `app` is serving now."""
    return len(_open.get(app, ()))


async def close_streams(app: web.Application) -> None:
    """`app.on_shutdown` hook: end every open event stream (clients reconnect elsewhere with
    Last-Event-ID)."""
    for stop in list(_open.get(app, ())):
        stop.set()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def field(fields: dict[Any, Any], name: str) -> Any:
    """A stream entry's field, whether the client decodes responses or not."""
    return fields.get(name.encode(), fields.get(name))


async def newest_id(res: Resources) -> str:
    newest = await res.redis.xrevrange(res.settings.events_stream, count=1)
    return text(newest[0][0]) if newest else "0-0"


Select = Callable[[str, bytes], bytes | None]
"""(event type, event JSON) -> the message's data, or None to leave the event out."""


async def serve(
    request: web.Request,
    res: Resources,
    *,
    cursor: str,
    select: Select,
    event_name: str | None = None,
    allowed: Callable[[], Awaitable[bool]] | None = None,
    max_seconds: float | None = None,
    retry_ms: int | None = None,
) -> web.StreamResponse:
    """Stream the events after `cursor` until the client leaves or the stream must end."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    await response.prepare(request)
    stop = asyncio.Event()
    streams = _open.setdefault(request.app, set())
    streams.add(stop)
    redis, stream = res.redis, res.settings.events_stream
    prefix = f"event: {event_name}\n".encode() if event_name else b""
    sent = 0
    try:
        # A first comment so clients know the stream is open before any event arrives.
        opening = (f"retry: {retry_ms}\n" if retry_ms else "") + ": stream open\n\n"
        await response.write(opening.encode())
        started = last_write = last_check = time.monotonic()
        while not stop.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            now = time.monotonic()
            if max_seconds is not None and now - started > max_seconds:
                break
            if allowed is not None and now - last_check >= RECHECK:
                last_check = now
                if not await allowed():
                    break
            wait = max(min(READ_BLOCK, KEEPALIVE - (now - last_write)), 0.001)
            found = await redis.xread({stream: cursor}, count=BATCH, block=int(wait * 1000))
            chunks: list[bytes] = []
            for _, entries in found or ():
                for entry_id, fields in entries:
                    cursor = text(entry_id)
                    data = _message(fields, select)
                    if data is not None:
                        chunks.append(
                            prefix + b"id: " + cursor.encode() + b"\ndata: " + data + b"\n\n"
                        )
            if chunks:
                await response.write(b"".join(chunks))
                sent += len(chunks)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= KEEPALIVE:
                await response.write(b": keepalive\n\n")
                last_write = time.monotonic()
    except (ConnectionError, RuntimeError):
        # The client went away mid-write ("Cannot write to closing transport").
        pass
    except RedisError as exc:
        log.warning("event_stream_redis_failed", error=type(exc).__name__)
        error = {"error": "redis_unavailable", "message": "the event stream was interrupted"}
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
    finally:
        streams.discard(stop)
    log.info("event_stream_closed", sent=sent)
    return response


def _message(fields: dict[Any, Any], select: Select) -> bytes | None:
    payload = field(fields, "event")
    if payload is None:
        return None
    data = payload if isinstance(payload, bytes) else payload.encode()
    event_type = text(field(fields, "type") or "")
    if not event_type:
        try:
            event_type = str(json.loads(data).get("type", ""))
        except (ValueError, AttributeError):
            return None
    return select(event_type, data)
