"""`authbroker events tail`: the auth events as they happen, through the HTTP API's stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import click

from authbroker.cli.api import ApiGroup, api_call
from authbroker.cli.base import POSITIVE, as_json
from authbroker.cli.output import emit_line, note, text, when
from authbroker.client import AuthbrokerClient, Unreachable

events = ApiGroup(
    "events",
    short_help="follow auth events",
    examples="authbroker events tail --app google",
)


def event_line(event: dict[str, Any]) -> str:
    """time, type, app, connection, problem, detail: one line an event."""
    return "  ".join(
        [
            when(event.get("occurred_at")),
            f"{event.get('type') or '?':<34}",
            text(event.get("app")),
            text(event.get("connection_id")),
            text(event.get("problem")),
            str(event.get("detail") or ""),
        ]
    ).rstrip()


@events.command(
    short_help="print auth events as they happen",
    examples="authbroker events tail\n"
    "authbroker events tail --type connection.invalidated --type app. --app google\n"
    "authbroker events tail --from-start --json --limit 100 > events.jsonl",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="PREFIX",
    help="only events whose type starts with PREFIX (repeat), e.g. connection.refresh",
)
@click.option("--app", "apps", multiple=True, metavar="APP", help="only this app's events (repeat)")
@click.option("--from-start", is_flag=True, help="begin with the oldest event Redis keeps")
@click.option("--limit", type=POSITIVE, default=None, help="stop after N events")
@as_json
@api_call
async def tail(
    api: AuthbrokerClient,
    types: tuple[str, ...],
    apps: tuple[str, ...],
    from_start: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """Print auth events as they happen, one line each: time (UTC), type, app, connection,
    problem, detail (or the event's JSON with --json). It reconnects after an interruption
    without losing events; Ctrl-C stops it."""
    params: list[tuple[str, str]] = [("type", t) for t in types]
    params += [("app", a) for a in apps]
    if from_start:
        params.append(("from_start", "1"))
    last_id: str | None = None
    shown = 0
    connected_once = False
    while True:
        try:
            async with contextlib.aclosing(api.events(params, last_id)) as stream:
                async for event in stream:
                    connected_once = True
                    last_id = event.id or last_id
                    if as_json:
                        emit_line(event.data)
                    else:
                        print(event_line(event.data), flush=True)
                    shown += 1
                    if limit and shown >= limit:
                        return
            connected_once = True
        except Unreachable as exc:
            if not connected_once:
                raise
            note(f"event stream interrupted ({exc.reason}); reconnecting…")
        # The server ended the stream (restart, shutdown): resume after the last event seen.
        await asyncio.sleep(1)
