"""What a successful token answer says of the app's client authentication, recorded on the app.

`auto` remembers the placement that worked, so later requests start there. A fixed placement
(`client_auth` body, basic or query) that the provider refused while another one worked
(`TokenResponse.refused_placement`, see `authbroker.oauth.client_auth`) is a wrong setting that
nothing else would show, because the request succeeded: the app records the placement that
worked, with one `app.client_auth_mismatch` event naming the change to make. The setting itself
is left alone (the operator decides; every request keeps trying it first), the connection stays
as it is and its tokens are stored as usual.

Called on every code exchange and refresh, so it touches the database only when the answer is
news against the app row the caller already holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from authbroker import oauth
from authbroker.events import ClientAuthMismatch, EventType, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem, mismatch_summary, placement_remedy
from storage import apps, outbox
from storage.apps import App

log = get_logger("authbroker.client_auth")


async def note_placement(
    db: asyncpg.Pool | asyncpg.Connection,
    app: App,
    tokens: oauth.TokenResponse,
    *,
    connection_id: str | None = None,
) -> None:
    """Record what `tokens` says of where the client credentials work (see the module's
    docstring). `db`: a pool, or a connection whose transaction this joins."""
    if app.client_auth == "auto":
        if tokens.placement != app.client_auth_detected:
            async with _transaction(db) as conn:
                if await apps.remember_placement(conn, app.id, tokens.placement):
                    log.info("client_auth_detected", app=app.name, placement=tokens.placement)
        return
    refused = tokens.refused_placement
    if refused is None or refused != app.client_auth or app.client_auth_works == tokens.placement:
        return
    async with _transaction(db) as conn:
        seen = await apps.record_client_auth_works(
            conn, app.id, configured=refused, works=tokens.placement
        )
        if seen is None:
            return  # recorded already, or client_auth changed meanwhile
        await outbox.append(
            conn,
            make_event(
                EventType.APP_CLIENT_AUTH_MISMATCH,
                app=app.name,
                connection_id=connection_id,
                problem=Problem.CLIENT_AUTH_METHOD,
                detail=mismatch_summary(refused, tokens.placement)
                + " "
                + placement_remedy(app.name, tokens.placement),
                data=ClientAuthMismatch(configured=refused, worked=tokens.placement),
            ),
        )
    log.warning(
        "client_auth_mismatch",
        app=app.name,
        connection_id=connection_id,
        configured=refused,
        worked=tokens.placement,
    )


@asynccontextmanager
async def _transaction(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a pooled connection, or within the caller's connection's own."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
