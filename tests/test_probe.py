"""Probing a connection at its app's probe URL (real test OAuth server): a 401 is answered by a
refresh and one more try; only a fresh token refused as well marks the connection invalidated."""

from __future__ import annotations

from aiohttp import web

from authbroker.embedded import free_port
from storage import connections
from storage.sealing import aad
from tests.helpers import create_oauth_app, follow_callback, start_connection
from worker.jobs import probe_connection, schedule_probes


async def authorized(api, anonymous, server, app: str) -> str:
    started = await start_connection(api, app)
    location = await server.approve(started["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"
    return started["connection_id"]


async def test_probe_refreshes_after_a_401_and_carries_on(
    api, anonymous, oauth_server, jobs_worker, unique, resources
):
    app = unique("probe")
    await create_oauth_app(api, oauth_server, app, probe_url=oauth_server.resource_url)
    cid = await authorized(api, anonymous, oauth_server, app)

    assert await probe_connection(jobs_worker.ctx, cid) == "ok (200)"
    probed = await connections.get(resources.pool, cid)
    assert probed and probed.last_probe_at is not None

    # The access token stops working early (the grant itself lives on): stand in a token the
    # provider never issued.
    old = probed.open_access_token(resources.ring)
    await resources.pool.execute(
        "UPDATE connections SET access_token = $2 WHERE id = $1",
        cid,
        resources.ring.seal("not-a-token", aad=aad("connections", cid, "access_token")),
    )
    assert await probe_connection(jobs_worker.ctx, cid) == "ok (200)"
    after = await connections.get(resources.pool, cid)
    assert after and after.status == "active"
    assert after.open_access_token(resources.ring) != old  # refreshed on the way


async def test_a_fresh_token_refused_too_invalidates(
    api, anonymous, oauth_server, jobs_worker, unique, resources, events
):
    refusing = web.Application()

    async def always_401(_request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_token"}, status=401)

    refusing.router.add_get("/me", always_401)
    runner = web.AppRunner(refusing)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        app = unique("probe-401")
        await create_oauth_app(api, oauth_server, app, probe_url=f"http://127.0.0.1:{port}/me")
        cid = await authorized(api, anonymous, oauth_server, app)
        assert await probe_connection(jobs_worker.ctx, cid) == "invalidated"
    finally:
        await runner.cleanup()
    found = await connections.get(resources.pool, cid)
    assert found and found.status == "failed" and found.problem == "access_denied"
    event = await events.wait_for(
        lambda e: e["type"] == "connection.invalidated" and e["connection_id"] == cid
    )
    assert event["data"]["probe_status"] == 401


async def test_probes_are_scheduled_by_interval(
    api, anonymous, oauth_server, jobs_worker, unique, resources
):
    app = unique("probe-due")
    await create_oauth_app(
        api, oauth_server, app, probe_url=oauth_server.resource_url, probe_interval=60
    )
    cid = await authorized(api, anonymous, oauth_server, app)
    await resources.pool.execute(
        "UPDATE connections SET authorized_at = now() - interval '2 minutes' WHERE id = $1", cid
    )
    assert await schedule_probes(jobs_worker.ctx) >= 1
