"""The authorization-code flow end to end, against the real django-oauth-toolkit server: an
operator registers an app, a user approves consent like a browser, the real callback stores
the code, the real worker exchanges it, a runtime sees the event and uses the token."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from authbroker.embedded import free_port
from handlers import callback
from handlers.app import create_app
from services import authorizations as authorizations_service
from storage.resources import Resources
from tests.helpers import create_oauth_app, follow_callback, start_connection
from worker import jobs as sweep


@pytest.fixture
async def flow(api, anonymous, oauth_server, worker, unique, events):
    """An app registered at the real server, ready to authorize."""
    name = unique("dot")
    app = await create_oauth_app(api, oauth_server, name)
    return {"app": app, "name": name}


async def test_authorize_exchange_event_and_working_token(
    api, anonymous, oauth_server, flow, events, redis: Redis
):
    assert flow["app"]["redirect_url"].endswith("/oauth/callback")
    started = await start_connection(api, flow["name"], connection_id=f"{flow['name']}-c1")
    query = parse_qs(urlsplit(started["authorize_url"]).query)
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["read write"]
    assert query["redirect_uri"] == [flow["app"]["redirect_url"]]

    location = await oauth_server.approve(started["authorize_url"])
    assert location.startswith(flow["app"]["redirect_url"])
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200
    assert outcome["status"] == "succeeded", outcome
    assert outcome["connection_id"] == started["connection_id"]

    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorized" and e["connection_id"] == started["connection_id"]
        )
    )
    assert event["app"] == flow["name"]
    assert event["status"] == "active"
    assert set(event["data"]["granted_scopes"]) == {"read", "write"}
    assert event["data"]["has_refresh_token"] is True

    async with api.get(f"/v1/connections/{started['connection_id']}") as response:
        shown = await response.json()
    assert shown["status"] == "active"
    assert shown["has_refresh_token"] is True
    assert "access_token" not in shown and "refresh_token" not in shown

    async with api.get(f"/v1/connections/{started['connection_id']}/credentials") as response:
        assert response.status == 200
        credentials = await response.json()
    assert credentials["type"] == "oauth2"
    assert credentials["authorization"] == f"Bearer {credentials['access_token']}"
    resource_status, body = await oauth_server.call_resource(credentials["access_token"])
    assert resource_status == 200, body

    # The token appears in no event on the stream.
    raw = json.dumps(await redis.xrange(events.stream))
    assert credentials["access_token"] not in raw


async def test_browser_gets_a_readable_page(api, anonymous, oauth_server, flow):
    started = await start_connection(api, flow["name"])
    location = await oauth_server.approve(started["authorize_url"])
    status, html = await follow_callback(anonymous, location, json_answer=False)
    assert status == 200
    assert "Connected" in html
    assert "code=" not in html


async def test_fewer_scopes_granted_is_reported(api, anonymous, oauth_server, flow, events):
    started = await start_connection(api, flow["name"])
    location = await oauth_server.approve(started["authorize_url"], scopes=["read"])
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded"
    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.scopes_denied"
            and e["connection_id"] == started["connection_id"]
        )
    )
    assert event["problem"] == "scopes_denied"
    assert event["data"]["missing"] == ["write"]
    async with api.get(f"/v1/connections/{started['connection_id']}") as response:
        shown = await response.json()
    assert shown["granted_scopes"] == ["read"]
    assert shown["problem"] == "scopes_denied"


async def test_user_declines(api, anonymous, oauth_server, flow, events):
    started = await start_connection(api, flow["name"])
    location = await oauth_server.approve(started["authorize_url"], allow=False)
    assert "error=access_denied" in location
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200
    assert outcome["status"] == "failed"
    assert outcome["problem"] == "access_denied"
    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorization_failed"
            and e["connection_id"] == started["connection_id"]
        )
    )
    assert event["problem"] == "access_denied"
    async with api.get(f"/v1/connections/{started['connection_id']}") as response:
        assert (await response.json())["status"] == "failed"


async def test_replayed_and_forged_callbacks_are_refused(
    api, anonymous, oauth_server, flow, resources: Resources
):
    started = await start_connection(api, flow["name"])
    location = await oauth_server.approve(started["authorize_url"])
    status, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"

    # The same redirect again (a replayed code and state): refused, nothing enqueued.
    queued_before = await resources.redis.zcard(resources.settings.queue_name)
    status, body = await follow_callback(anonymous, location)
    assert status == 400 and body["error"] == "state_used"
    status, body = await follow_callback(
        anonymous, f"{flow['app']['redirect_url']}?code=abc&state=not-a-real-state"
    )
    assert status == 400 and body["error"] == "invalid_state"
    status, body = await follow_callback(anonymous, f"{flow['app']['redirect_url']}?code=abc")
    assert status == 400 and "state" in body["message"]
    assert await resources.redis.zcard(resources.settings.queue_name) <= queued_before


async def test_reauthorization_keeps_connection_and_refresh_token(
    api, anonymous, oauth_server, flow, events
):
    connection_id = f"{flow['name']}-again"
    for _ in range(2):
        started = await start_connection(api, flow["name"], connection_id=connection_id)
        location = await oauth_server.approve(started["authorize_url"])
        _, outcome = await follow_callback(anonymous, location)
        assert outcome["status"] == "succeeded"

    def authorized(e: dict) -> bool:
        return e["type"] == "connection.authorized" and e["connection_id"] == connection_id

    # The second grant's event may still be on its way to the stream: wait for it.
    await events.wait_for(lambda e: authorized(e) and e["data"]["reauthorization"])
    seen = [e["data"]["reauthorization"] for e in await events.all() if authorized(e)]
    assert seen == [False, True]


async def test_code_survives_a_redis_outage(
    api, oauth_server, flow, resources: Resources, settings, worker, events, monkeypatch
):
    """With Redis unreachable at the callback, the code is stored and the worker's sweep
    exchanges it once Redis is back (here: the web side's Redis was the unreachable one)."""
    monkeypatch.setattr(callback, "WAIT_FOR_OUTCOME", 0.5)
    dead_redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    broken = Resources(
        settings=settings, ring=resources.ring, pool=resources.pool, redis=dead_redis
    )
    runner = web.AppRunner(create_app(broken))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        started = await start_connection(api, flow["name"])
        location = await oauth_server.approve(started["authorize_url"])
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as browser:
            parts = urlsplit(location)
            async with browser.get(
                f"{parts.path}?{parts.query}", headers={"Accept": "application/json"}
            ) as response:
                assert response.status == 200
                body = await response.json()
        assert body["status"] == "pending"
        monkeypatch.setattr(authorizations_service, "STRANDED_AFTER", 0.0)
        assert await sweep.sweep_codes(worker.ctx) >= 1
        await events.wait_for(
            lambda e: (
                e["type"] == "connection.authorized"
                and e["connection_id"] == started["connection_id"]
            )
        )
    finally:
        await runner.cleanup()
        await dead_redis.aclose()
