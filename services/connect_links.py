"""Connect links: a remedy the end user can carry out. Most problems end in "authorize again",
and the person who must do it is usually a runtime's end user, who has no API key. A connect
link is a single-use, expiring URL on authbroker's public address (`/connect/{token}`) that
starts a fresh authorization of one connection when it is opened
(`services.authorizations.start_from_link`), and so lands on the callback's result page.

The token is 256 bits of randomness, stored only as its SHA-256 (like an authorization's
state). It grants nothing but that one authorization: no other route accepts it, and it is not
an API key. Apps with `reconnect_links` put a fresh link in the events whose remedy is to
authorize again (`for_event`), made in the transaction of the event.

Refusals name what happened to the link (`link_unknown`, `link_used`, `link_expired`). Telling
a used or expired link from an unknown one reveals nothing useful: the answer is about the one
token presented, which only its holder has, and guessing a live token is hopeless. No answer
names the link's app or connection, so an old link found in a mailbox says nothing about them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from authbroker.logs import get_logger
from authbroker.states import CONNECT_LINK_LIFETIME
from services import apps as apps_service
from services.errors import Conflict, Gone, NotFound
from storage import connect_links, connections
from storage.apps import App
from storage.connect_links import ConnectLink
from storage.resources import Resources

log = get_logger("authbroker.connect_links")

# What `secrets.token_urlsafe(32)` makes; anything else is no token of ours.
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
ASK_AGAIN = "Ask the application that sent it for a new link."


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: datetime
    connection_id: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _store(
    conn: asyncpg.Connection,
    res: Resources,
    app_id: uuid.UUID,
    connection_id: str,
    *,
    scopes: list[str] | None,
    lifetime: int,
    only_if_wanted: bool = False,
    settings: dict[str, str] | None = None,
) -> Link | None:
    token = secrets.token_urlsafe(32)
    expires_at = await connect_links.create(
        conn,
        token_hash=_digest(token),
        app_id=app_id,
        connection_id=connection_id,
        scopes=scopes,
        lifetime_seconds=lifetime,
        only_if_wanted=only_if_wanted,
        settings=settings,
    )
    if expires_at is None:
        return None
    return Link(f"{res.settings.public_url}/connect/{token}", expires_at, connection_id)


async def create(
    res: Resources,
    app: App,
    *,
    connection_id: str | None,
    scopes: list[str] | None,
    expires_in: int = CONNECT_LINK_LIFETIME,
    settings: dict[str, str] | None = None,
) -> Link:
    """A link that authorizes `connection_id` again (or, without one, a new connection whose id
    is made now, so the caller knows it). `scopes` None: those the connection asked for last,
    or the app's; `settings` None: the connection's own connection settings. Settings the app
    could not be used with are refused now, not when the link is opened."""
    apps_service.require_authorizable(app)
    connection_id = connection_id or connections.new_id()
    if settings is not None or app.connection_settings:
        named = await connections.get(res.pool, connection_id)
        own = named.settings if named is not None and named.app_id == app.id else {}
        await apps_service.for_connection(res, app, own if settings is None else settings)
    async with res.pool.acquire() as conn, conn.transaction():
        existing = await connections.get(conn, connection_id)
        if existing is not None and existing.app_id != app.id:
            raise Conflict(
                "connection_exists", f"connection {connection_id!r} belongs to another app"
            )
        if existing is not None and existing.service:
            raise Conflict(
                "connection_exists",
                f"connection {connection_id!r} is a service connection (client credentials): no "
                "user signs in for it",
            )
        link = await _store(
            conn,
            res,
            app.id,
            connection_id,
            scopes=scopes,
            lifetime=expires_in,
            settings=settings,
        )
    assert link is not None  # made unconditionally
    log.info(
        "connect_link_created",
        app=app.name,
        connection_id=connection_id,
        expires_at=link.expires_at.isoformat(),
    )
    return link


async def for_event(
    conn: asyncpg.Connection, res: Resources, app_id: uuid.UUID, connection_id: str
) -> str | None:
    """Within the transaction of an event whose remedy is to authorize again: a fresh link's
    URL for its `data.reconnect_url` if the app hands them out (`reconnect_links`), else None."""
    link = await _store(
        conn,
        res,
        app_id,
        connection_id,
        scopes=None,
        lifetime=CONNECT_LINK_LIFETIME,
        only_if_wanted=True,
    )
    return link.url if link else None


async def use(conn: asyncpg.Connection, token: str) -> ConnectLink:
    """The link of `token`, locked in the caller's transaction, which uses it up
    (`mark_used`); `NotFound` or `Gone` when it cannot be used."""
    link = await connect_links.take(conn, _digest(token)) if TOKEN.fullmatch(token) else None
    if link is None:
        raise NotFound("link_unknown", f"This link is not valid. {ASK_AGAIN}")
    if link.used_at is not None:
        raise Gone("link_used", f"This link was already used: each link works once. {ASK_AGAIN}")
    if link.expires_at <= datetime.now(UTC):
        raise Gone("link_expired", f"This link has expired. {ASK_AGAIN}")
    return link


async def mark_used(
    conn: asyncpg.Connection, link: ConnectLink, authorization_id: uuid.UUID
) -> None:
    await connect_links.mark_used(conn, link.id, authorization_id)
