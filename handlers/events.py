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
`app` (exact names). A key limited to some apps sees only their events (asking for another app
is refused), and a stream ends within a minute of its key being revoked. A `: keepalive` comment goes out after 15 s without data so proxies keep
the connection open and clients notice a dead server. A client that goes away is noticed within
one read (at most 5 s) and its Redis read ends with it.
"""

from __future__ import annotations

import json

from aiohttp import web
from redis.exceptions import RedisError

from authbroker.logs import get_logger
from authbroker.roles import Permission
from handlers import sse
from handlers.context import caller, resources
from handlers.operations import STRING, Answer, header_param, operation, query_param
from handlers.responses import fail, query_value, query_values
from storage import api_keys

routes = web.RouteTableDef()
log = get_logger("authbroker.events")

MAX_FILTERS = 20
TRUE = {"1", "true", "yes", "on"}
STREAM_ID_SCHEMA = {"type": "string", "pattern": sse.STREAM_ID.pattern}
FILTER_SCHEMA = {"type": "array", "items": STRING}
# Kept here for callers that watch the API's streams.
open_streams = sse.open_streams
close_streams = sse.close_streams


def _filters(request: web.Request, name: str) -> list[str]:
    values = [
        part.strip()
        for raw in query_values(request, name)
        for part in raw.split(",")
        if part.strip()
    ]
    if len(values) > MAX_FILTERS:
        fail(400, "invalid_filter", f"at most {MAX_FILTERS} values for {name!r}")
    if any(len(v) > 200 for v in values):
        fail(400, "invalid_filter", f"a value of {name!r} is too long")
    return values


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
    permission=Permission.EVENTS,
)
async def events(request: web.Request) -> web.StreamResponse:
    """Auth events as server-sent events.

    Starts at the newest event, at the oldest kept (`from_start`), or after `Last-Event-ID`.
    Runtimes should consume the Redis stream itself.
    """
    res = resources(request)
    types = _filters(request, "type")
    key = caller(request)
    apps = key.limited_to(_filters(request, "app")) or []
    from_start = (query_value(request, "from_start") or "").lower() in TRUE
    last_id = (
        request.headers.get("Last-Event-ID") or query_value(request, "last_event_id") or ""
    ).strip()
    if last_id and not sse.STREAM_ID.fullmatch(last_id):
        fail(400, "invalid_last_event_id", "Last-Event-ID must be a stream id such as 1718-0")
    try:
        # Resolve `$` once: reading from `$` on every call would skip what arrived in between.
        cursor = last_id or ("0-0" if from_start else await sse.newest_id(res))
    except RedisError:
        fail(503, "redis_unavailable", "the event stream (Redis) is unavailable; retry later")
    log.info("event_stream_opened", types=types, apps=apps, from_start=from_start)

    def select(event_type: str, data: bytes) -> bytes | None:
        return data if matches(event_type, data, types, apps) else None

    async def allowed() -> bool:
        return await api_keys.get_active(res.pool, key.key_id) is not None

    return await sse.serve(request, res, cursor=cursor, select=select, allowed=allowed)
