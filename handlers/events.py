"""`GET /v1/events`: auth events as server-sent events, for people and tools that watch them
(`authbroker events tail`); runtimes keep consuming the Redis stream itself.

The stream is the one the relay appends to (`settings.events_stream`): each entry holds the
event's type and its JSON. A client starts at the newest entry, from the oldest kept
(`from_start=1`), or after the id it last saw (`Last-Event-ID`, sent back by EventSource on
reconnect), so reconnecting loses nothing the stream still holds.

    GET /v1/events?type=connection.refresh&app=google&from_start=1

    id: 1718000000000-0
    data: {"id":"…","type":"connection.refreshed","app":"google",…}

`type` matches a prefix (`connection.` for every connection event) and may be repeated, as may
`app` (exact names). A `: keepalive` comment goes out after 15 s without data so proxies keep
the connection open and clients notice a dead server. A client that goes away is noticed within
one read (at most 5 s) and its Redis read ends with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import weakref
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from authbroker.logs import get_logger
from handlers.context import resources
from handlers.operations import STRING, Answer, header_param, operation, query_param
from handlers.responses import fail

routes = web.RouteTableDef()
log = get_logger("authbroker.events")

KEEPALIVE = 15.0  # seconds without a write before a `: keepalive` comment
READ_BLOCK = 5.0  # seconds one XREAD waits; between reads a gone client or shutdown is noticed
BATCH = 200  # entries per XREAD
MAX_FILTERS = 20
STREAM_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
TRUE = {"1", "true", "yes", "on"}
STREAM_ID_SCHEMA = {"type": "string", "pattern": STREAM_ID.pattern}
FILTER_SCHEMA = {"type": "array", "items": STRING}

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


def _filters(request: web.Request, name: str) -> list[str]:
    values = [
        part.strip()
        for raw in request.query.getall(name, [])
        for part in raw.split(",")
        if part.strip()
    ]
    if len(values) > MAX_FILTERS:
        fail(400, "invalid_filter", f"at most {MAX_FILTERS} values for {name!r}")
    if any(len(v) > 200 for v in values):
        fail(400, "invalid_filter", f"a value of {name!r} is too long")
    return values


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> Any:
    """A stream entry's field, whether the client decodes responses or not."""
    return fields.get(name.encode(), fields.get(name))


def matches(event_type: str, payload: str | bytes, types: list[str], apps: list[str]) -> bool:
    """Whether an entry passes the filters (the app filter needs the event's JSON)."""
    if types and not any(event_type.startswith(prefix) for prefix in types):
        return False
    if apps:
        try:
            event = json.loads(payload)
        except ValueError:
            return False
        return isinstance(event, dict) and event.get("app") in apps
    return True


async def _newest_id(redis: Any, stream: str) -> str:
    newest = await redis.xrevrange(stream, count=1)
    return _text(newest[0][0]) if newest else "0-0"


@routes.get("/v1/events")
@operation(
    "streamEvents",
    "events",
    {
        200: Answer(
            "An endless `text/event-stream`: each message's `id` is the Redis stream id and its "
            "`data` one `Event` (JSON); `: keepalive` comments every 15 s of silence.",
            media={"text/event-stream": STRING},
        ),
        400: "A bad filter or Last-Event-ID (`invalid_filter`, `invalid_last_event_id`).",
        503: "Redis is unavailable (`redis_unavailable`).",
    },
    parameters=[
        query_param("type", "Event type prefixes (repeatable).", FILTER_SCHEMA, repeatable=True),
        query_param("app", "App names (repeatable).", FILTER_SCHEMA, repeatable=True),
        query_param(
            "from_start",
            "Start at the oldest event the stream keeps.",
            {"type": "string", "enum": ["1", "true", "yes", "on", "0", "false", "no", "off"]},
        ),
        query_param("last_event_id", "Resume after this stream id.", STREAM_ID_SCHEMA),
        header_param(
            "Last-Event-ID", "Resume after this stream id (sent by EventSource).", STREAM_ID_SCHEMA
        ),
    ],
)
async def events(request: web.Request) -> web.StreamResponse:
    """Auth events as server-sent events.

    Starts at the newest event, at the oldest kept (`from_start`), or after `Last-Event-ID`.
    Runtimes should consume the Redis stream itself.
    """
    res = resources(request)
    types = _filters(request, "type")
    apps = _filters(request, "app")
    from_start = request.query.get("from_start", "").lower() in TRUE
    last_id = (
        request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    ).strip()
    if last_id and not STREAM_ID.fullmatch(last_id):
        fail(400, "invalid_last_event_id", "Last-Event-ID must be a stream id such as 1718-0")
    redis = res.redis
    stream = res.settings.events_stream
    try:
        # Resolve `$` once: reading from `$` on every call would skip what arrived in between.
        cursor = last_id or ("0-0" if from_start else await _newest_id(redis, stream))
    except RedisError:
        fail(503, "redis_unavailable", "the event stream (Redis) is unavailable; retry later")

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
    sent = 0
    log.info("event_stream_opened", types=types, apps=apps, from_start=from_start)
    try:
        # A first comment so clients know the stream is open before any event arrives.
        await response.write(b": stream open\n\n")
        last_write = time.monotonic()
        while not stop.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            quiet = time.monotonic() - last_write
            wait = max(min(READ_BLOCK, KEEPALIVE - quiet), 0.001)
            found = await redis.xread({stream: cursor}, count=BATCH, block=int(wait * 1000))
            chunks: list[bytes] = []
            for _, entries in found or ():
                for entry_id, fields in entries:
                    cursor = _text(entry_id)
                    payload = _field(fields, "event")
                    if payload is None:
                        continue
                    event_type = _text(_field(fields, "type") or "")
                    if not event_type:
                        try:
                            event_type = str(json.loads(payload).get("type", ""))
                        except (ValueError, AttributeError):
                            continue
                    if not matches(event_type, payload, types, apps):
                        continue
                    data = payload if isinstance(payload, bytes) else payload.encode()
                    chunks.append(b"id: " + cursor.encode() + b"\ndata: " + data + b"\n\n")
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
