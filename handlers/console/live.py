"""The console's strip of auth events: the newest ones from the Redis stream when a page is
rendered (works without JavaScript), then live ones over server-sent events (`handlers.sse`,
the API's implementation) from the stream id the page stopped at (`since`), so an event
relayed between rendering and streaming is not lost."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from authbroker.events import FIELDS, EventType
from authbroker.logs import get_logger
from handlers import sse
from handlers.console import session as sessions
from handlers.context import resources

log = get_logger("authbroker.console")

STRIP_SIZE = 15
SCAN_LIMIT = 500  # stream entries read to find STRIP_SIZE matching ones
MAX_STREAM = 600.0  # then the stream ends; EventSource reconnects (and re-authenticates)
SHOWN = tuple(f for f in FIELDS if f != "data")
TYPES = tuple(str(t) for t in EventType)


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
        newest = newest or sse.text(entry_id)
        try:
            event = json.loads(sse.field(fields, "event") or b"{}")
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


async def stream(request: web.Request) -> web.StreamResponse:
    """`GET /console/events?type=&app=&since=`: server-sent events, one per auth event, from
    where the page stopped (`since`, or the browser's Last-Event-ID on a reconnect)."""
    if await sessions.load_session(request) is None:
        return web.Response(status=401, text="sign in first")
    res = resources(request)
    kind = clean_filter(request.query.get("type"))
    app = request.query.get("app") or None
    since = request.headers.get("Last-Event-ID") or request.query.get("since", "")
    try:
        cursor = since if sse.STREAM_ID.fullmatch(since) else await sse.newest_id(res)
    except Exception as exc:
        log.warning("console_stream_unavailable", error=type(exc).__name__)
        return web.Response(status=503, text="events unavailable", headers={"Retry-After": "10"})

    def select(_event_type: str, data: bytes) -> bytes | None:
        try:
            event = json.loads(data)
        except ValueError:
            return None
        if not isinstance(event, dict) or not matches(event, kind, app):
            return None
        return json.dumps(shown(event), separators=(",", ":")).encode()

    async def allowed() -> bool:
        return await sessions.load_session(request) is not None

    return await sse.serve(
        request,
        res,
        cursor=cursor,
        select=select,
        event_name="auth",
        allowed=allowed,
        max_seconds=MAX_STREAM,
        retry_ms=3000,
    )
