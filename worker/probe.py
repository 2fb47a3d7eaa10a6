"""Probing: call an app's `probe_url` with a connection's token now and then, to learn that a
grant died at the provider before a runtime does.

A 401 may only mean the access token was revoked early, so the connection is refreshed and the
probe tried once more; only a fresh token refused as well marks the connection invalidated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from storage import apps, connections, outbox
from storage.jobs import job_id
from worker.context import WorkerContext
from worker.refresh import refresh_connection

log = get_logger("authbroker.probe")

DEFAULT_INTERVAL = 3600
BATCH = 200


async def schedule_probes(ctx: dict[str, Any]) -> int:
    """Enqueue probes of active connections whose app has a probe URL and whose last probe is
    older than the app's interval."""
    res = WorkerContext.of(ctx).resources
    rows = await res.pool.fetch(
        """SELECT c.id FROM connections c JOIN apps a ON a.id = c.app_id
           WHERE a.probe_url IS NOT NULL AND a.paused_at IS NULL AND c.status = 'active'
             AND coalesce(c.last_probe_at, c.authorized_at)
                 < now() - make_interval(secs => coalesce(a.probe_interval, $1))
           ORDER BY c.last_probe_at NULLS FIRST LIMIT $2""",
        DEFAULT_INTERVAL,
        BATCH,
    )
    for row in rows:
        await res.redis.enqueue_job(
            "probe_connection", row["id"], _job_id=job_id(res, "probe", row["id"])
        )
    return len(rows)


async def probe_connection(ctx: dict[str, Any], connection_id: str) -> str:
    wc = WorkerContext.of(ctx)
    res = wc.resources
    found = await connections.get(res.pool, connection_id)
    if found is None or found.status != "active":
        return "not active"
    app = await apps.get_by_id(res.pool, found.app_id)
    if app is None or not app.probe_url:
        return "no probe"
    status = await _call(wc, app.probe_url, found.open_access_token(res.ring) or "")
    if status == 401 and found.refresh_token is not None:
        outcome = await refresh_connection(ctx, connection_id, force=True)
        if outcome != "refreshed":
            # Busy (another refresh is in flight), failed or retrying: no verdict on the
            # token yet; the next probe looks again.
            return f"refresh {outcome}"
        found = await connections.get(res.pool, connection_id)
        if found is None or found.status != "active":
            return "refresh failed"
        status = await _call(wc, app.probe_url, found.open_access_token(res.ring) or "")
    await res.pool.execute(
        "UPDATE connections SET last_probe_at = $2 WHERE id = $1", connection_id, datetime.now(UTC)
    )
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
            status="failed",
            last_error={"stage": "probe", "status": 401},
        )
        await outbox.append(
            conn,
            make_event(
                EventType.INVALIDATED,
                app=app.name,
                connection_id=connection_id,
                status="failed",
                problem=problem,
                detail="The probe URL refused a freshly refreshed token.",
                data={"probe_status": 401},
            ),
        )
    log.warning("probe_invalidated", app=app.name, connection_id=connection_id)
    return "invalidated"


async def _call(wc: WorkerContext, url: str, access_token: str) -> int | None:
    """The probe's HTTP status, or None when the service could not be reached (not a verdict
    on the token)."""
    try:
        async with wc.http.get(
            url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=wc.resources.settings.provider_timeout),
            allow_redirects=False,
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("probe_unreachable", error=type(exc).__name__)
        return None
