"""Probing: call an app's `probe_url` with a connection's token now and then, to learn that a
grant died at the provider before a runtime does.

A 401 may only mean the access token was revoked early, so the connection is refreshed and the
probe tried once more; only a fresh token refused as well marks the connection invalidated. A
connection without a refresh token cannot get a fresh one: a 401 fails it with `token_revoked`
(`services.revoked_tokens`).
"""

from __future__ import annotations

import aiohttp

from authbroker.events import EventType, Invalidated, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.states import Status
from services import connect_links, queue, revoked_tokens
from services.context import Context
from services.refresh import refresh_one
from storage import apps, connections, outbox
from storage.resources import Resources

log = get_logger("authbroker.probe")

DEFAULT_INTERVAL = 3600
BATCH = 200


async def schedule(res: Resources) -> int:
    """Enqueue probes of the connections whose last probe is older than their app's interval."""
    due = await connections.due_for_probe(res.pool, default_interval=DEFAULT_INTERVAL, limit=BATCH)
    for connection_id in due:
        await queue.enqueue_probe(res, connection_id)
    return len(due)


async def probe(context: Context, connection_id: str) -> str:
    res = context.resources
    found = await connections.get(res.pool, connection_id)
    if found is None or found.status != Status.ACTIVE:
        return "not active"
    app = await apps.get_by_id(res.pool, found.app_id)
    if app is None or not app.probe_url:
        return "no probe"
    app = app.for_connection(found.settings)
    status = await _call(context, app.probe_url, found.open_access_token(res.ring) or "")
    if status == 401 and not found.renewable:
        # Nothing can replace the token: the probe's 401 is the verdict.
        await connections.mark_probed(res.pool, connection_id)
        async with res.pool.acquire() as conn, conn.transaction():
            ended = await revoked_tokens.invalidate(conn, found, Invalidated(probe_status=401))
        return "invalidated" if ended else "superseded"
    if status == 401:
        outcome = await refresh_one(context, connection_id, force=True)
        if outcome != "refreshed":
            # Busy (another refresh is in flight), failed or retrying: no verdict on the
            # token yet; the next probe looks again.
            return f"refresh {outcome}"
        found = await connections.get(res.pool, connection_id)
        if found is None or found.status != Status.ACTIVE:
            return "refresh failed"
        status = await _call(context, app.probe_url, found.open_access_token(res.ring) or "")
    await connections.mark_probed(res.pool, connection_id)
    if status != 401:
        return f"ok ({status})" if status else "unreachable"
    problem = Problem.ACCESS_DENIED
    async with res.pool.acquire() as conn, conn.transaction():
        await connections.set_problem(
            conn,
            connection_id,
            problem=str(problem),
            detail="The web service refuses even a freshly refreshed token: the grant was "
            "revoked or access is restricted at the provider. Authorize the connection again.",
            status=Status.FAILED,
            last_error={"stage": "probe", "status": 401},
        )
        await outbox.append(
            conn,
            make_event(
                EventType.INVALIDATED,
                app=app.name,
                connection_id=connection_id,
                status=Status.FAILED,
                problem=problem,
                detail="The probe URL refused a freshly refreshed token.",
                data=Invalidated(
                    probe_status=401,
                    reconnect_url=await connect_links.for_event(conn, res, app.id, connection_id),
                ),
            ),
        )
    log.warning("probe_invalidated", app=app.name, connection_id=connection_id)
    return "invalidated"


async def _call(context: Context, url: str, access_token: str) -> int | None:
    """The probe's HTTP status, or None when the service could not be reached (not a verdict
    on the token)."""
    settings = context.resources.settings
    return await revoked_tokens.probe_status(
        context.http,
        url,
        access_token,
        limits=aiohttp.ClientTimeout(
            total=settings.provider_connect_timeout + settings.provider_timeout,
            connect=settings.provider_connect_timeout,
        ),
    )
