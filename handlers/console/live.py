"""The console's strip of auth events: the newest ones from the Redis stream when a page is
rendered (works without JavaScript), then live ones from the Redis channel over server-sent
events.

The page tells the stream where it stopped (`since`, the newest stream id it rendered); the
stream subscribes to the channel first, then sends what the Redis stream holds after `since`,
so an event relayed between rendering and subscribing is not lost. Events are deduplicated by
their id, here and in the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from aiohttp import web

from authbroker.events import FIELDS, EventType
from authbroker.logs import get_logger
from handlers.console import session as sessions
from handlers.context import resources

log = get_logger("authbroker.console")

STRIP_SIZE = 15
SCAN_LIMIT = 500  # stream entries read to find STRIP_SIZE matching ones
KEEPALIVE = 15.0
RECHECK = 60.0  # seconds between checks that the session is still valid
MAX_STREAM = 600.0  # then the stream ends; EventSource reconnects (and re-authenticates)
STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
SHOWN = tuple(f for f in FIELDS if f != "data")
TYPES = tuple(str(t) for t in EventType)

STREAMS = web.AppKey("console_streams", set)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> Any:
    return fields.get(name.encode(), fields.get(name))


def shown(event: dict[str, Any]) -> dict[str, Any]:
    """What the strip shows of an event (no `data`: it is for machines)."""
    return {k: event.get(k) for k in SHOWN}


def matches(event: dict[str, Any], kind: str | None, app: str | None) -> bool:
    if kind and event.get("type") != kind:
        return False
    return not (app and event.get("app") != app)


def clean_filter(kind: str | None) -> str | None:
    return kind if kind in TYPES else None


async def recent(
    request: web.Request, *, kind: str | None = None, app: str | None = None
) -> dict[str, Any]:
    """The strip as rendered: newest first, plus the stream id the live stream goes on from."""
    res = resources(request)
    items: list[dict[str, Any]] = []
    newest = ""
    available = True
    try:
        entries = await res.redis.xrevrange(res.settings.events_stream, count=SCAN_LIMIT)
    except Exception as exc:
        log.warning("console_events_unavailable", error=type(exc).__name__)
        entries, available = [], False
    for entry_id, fields in entries:
        newest = newest or _text(entry_id)
        try:
            event = json.loads(_field(fields, "event") or b"{}")
        except ValueError:
            continue
        if isinstance(event, dict) and matches(event, kind, app):
            items.append(shown(event))
            if len(items) >= STRIP_SIZE:
                break
    return {
        "items": items,
        "since": newest,
        "kind": kind or "",
        "app": app or "",
        "types": TYPES,
        "available": available,
        "size": STRIP_SIZE,
    }


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: auth\ndata: {json.dumps(shown(event), separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    """`GET /console/events?type=&app=&since=`: server-sent events, one per auth event."""
    found = await sessions.load_session(request)
    if found is None:
        return web.Response(status=401, text="sign in first")
    res = resources(request)
    kind = clean_filter(request.query.get("type"))
    app = request.query.get("app") or None
    since = request.query.get("since", "")
    pubsub = res.redis.pubsub()
    try:
        await pubsub.subscribe(res.settings.events_channel)
    except Exception as exc:
        await pubsub.aclose()
        log.warning("console_stream_unavailable", error=type(exc).__name__)
        return web.Response(status=503, text="events unavailable", headers={"Retry-After": "10"})
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    stop = asyncio.Event()
    open_streams: set[asyncio.Event] = request.app[STREAMS]
    open_streams.add(stop)
    seen: set[str] = set()
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n: stream open\n\n")
        if STREAM_ID.fullmatch(since):
            entries = await res.redis.xrange(
                res.settings.events_stream, min=f"({since}", max="+", count=200
            )
            for _, fields in entries:
                try:
                    event = json.loads(_field(fields, "event") or b"{}")
                except ValueError:
                    continue
                if isinstance(event, dict) and matches(event, kind, app):
                    seen.add(str(event.get("id")))
                    await response.write(_sse(event))
        started = last_write = last_check = time.monotonic()
        while not stop.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            now = time.monotonic()
            if now - started > MAX_STREAM:
                break
            if now - last_check > RECHECK:
                last_check = now
                if await sessions.load_session(request) is None:
                    break
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                if time.monotonic() - last_write > KEEPALIVE:
                    await response.write(b": keepalive\n\n")
                    last_write = time.monotonic()
                continue
            try:
                event = json.loads(message["data"])
            except (ValueError, TypeError):
                continue
            if not isinstance(event, dict) or not matches(event, kind, app):
                continue
            event_id = str(event.get("id"))
            if event_id in seen:
                continue
            seen.add(event_id)
            if len(seen) > 10_000:
                seen.clear()
            await response.write(_sse(event))
            last_write = time.monotonic()
    except ConnectionResetError:
        pass
    except Exception as exc:
        log.warning("console_stream_ended", error=type(exc).__name__)
    finally:
        open_streams.discard(stop)
        with contextlib.suppress(Exception):
            await pubsub.unsubscribe()
        with contextlib.suppress(Exception):
            await pubsub.aclose()
    return response


async def close_streams(app: web.Application) -> None:
    """`on_shutdown`: end every open stream now rather than at the shutdown timeout."""
    for stop in list(app[STREAMS]):
        stop.set()
