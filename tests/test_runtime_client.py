"""The runtime client (`client/`) against a real authbroker and the real OAuth server:
cached and shared credentials, the 401 → report → refresh → retry loop for httpx and aiohttp,
typed errors, `Retry-After`, and no secret in a repr or a log line."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
import pytest
from aiohttp import web
from authbroker_client import (
    AuthbrokerAuth,
    AuthbrokerClient,
    AuthbrokerMiddleware,
    ConnectionNotActive,
    Credentials,
    NotFound,
    TokenUnavailable,
    Unauthorized,
)
from authbroker_client.credentials import CredentialCache, keep_for
from prometheus_client import REGISTRY

from authbroker.embedded import free_port
from tests.helpers import (
    authorize_for_real,
    create_oauth_app,
    refresh_count,
    serving,
    start_connection,
)

CREDENTIALS_ROUTE = "/v1/connections/{connection_id}/credentials"
REPORT_ROUTE = "/v1/connections/{connection_id}/report"


def served(route: str, method: str = "GET", status: str = "200") -> float:
    """How many such requests authbroker's web server has answered (its own metric)."""
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("authbroker_http_requests_total", labels) or 0.0


@pytest.fixture
async def broker(web_server, admin_key):
    async with AuthbrokerClient(web_server, admin_key) as client:
        yield client


@pytest.fixture
async def connection(api, anonymous, oauth_server, worker, events, unique) -> str:
    """An active connection at the real OAuth server."""
    started = await authorize_for_real(api, anonymous, oauth_server, events, unique("rt"))
    return started["connection_id"]


async def rotate_out(api, oauth_server, connection: str, access_token: str) -> None:
    """Make the provider refuse `access_token` while the runtime still holds it: authbroker
    refreshes behind its back and the provider deletes the old access token on rotation.
    (Revoking the access token at this provider would kill the refresh grant too.)"""
    async with api.post(f"/v1/connections/{connection}/refresh") as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["outcome"] == "refreshed"
    assert (await oauth_server.call_resource(access_token))[0] == 401


def counted(stats: dict, key: str) -> Counter[str]:
    return Counter(stats.get(key, {}))


# ------------------------------------------------------------------------------ credentials


async def test_fifty_concurrent_callers_cost_one_request(broker, connection, oauth_server):
    before = served(CREDENTIALS_ROUTE)
    answers = await asyncio.gather(*(broker.credentials(connection) for _ in range(50)))
    assert served(CREDENTIALS_ROUTE) - before == 1
    assert len({a.authorization for a in answers}) == 1
    credentials = answers[0]
    assert credentials.type == "oauth2"
    assert credentials.authorization == f"Bearer {credentials.access_token}"
    assert credentials.expires_at is not None and credentials.expires_at > datetime.now(UTC)
    assert set(credentials.scopes) == {"read", "write"}
    assert credentials.access_token not in repr(credentials)
    assert (await oauth_server.call_resource(credentials.access_token))[0] == 200

    # Cached: an hour-long token is not asked for again …
    await asyncio.gather(*(broker.credentials(connection) for _ in range(50)))
    assert served(CREDENTIALS_ROUTE) - before == 1
    # … until the runtime drops it.
    broker.invalidate(connection)
    assert (await broker.credentials(connection)).authorization == credentials.authorization
    assert served(CREDENTIALS_ROUTE) - before == 2


def test_tokens_are_kept_until_shortly_before_they_expire():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert keep_for(now + timedelta(hours=1), now) == 3600 - 60
    assert keep_for(now + timedelta(seconds=30), now) == 15  # half the remaining life
    assert keep_for(now - timedelta(seconds=1), now) == 0  # expired: never served from cache
    assert keep_for(None, now) > 0


async def test_an_answer_under_way_when_invalidated_is_not_kept():
    cache = CredentialCache()
    release = asyncio.Event()
    fetched: list[str] = []

    async def fetch() -> tuple[Credentials, float]:
        fetched.append("x")
        await release.wait()
        return Credentials(type="oauth2", authorization=f"Bearer t{len(fetched)}"), 3600.0

    waiting = asyncio.create_task(cache.get("k", fetch))
    await asyncio.sleep(0)  # the fetch is under way
    cache.invalidate("k")  # e.g. the web service refused the token meanwhile
    release.set()
    assert (await waiting).authorization == "Bearer t1"  # its caller still gets an answer
    again = await cache.get("k", fetch)  # but it was not kept: asked again
    assert again.authorization == "Bearer t2" and len(fetched) == 2


async def test_basic_credentials(broker, api, unique):
    name = unique("basic")
    async with api.put(f"/v1/basic/{name}", json={"login": "svc", "password": "pa:ss"}) as r:
        assert r.status == 201, await r.text()
    before = served("/v1/basic/{name}/credentials")
    found = await broker.basic(name)
    assert (found.type, found.login, found.password) == ("basic", "svc", "pa:ss")
    assert found.authorization == "Basic " + base64.b64encode(b"svc:pa:ss").decode()
    assert found.headers == {"Authorization": found.authorization}
    assert "pa:ss" not in repr(found) and found.authorization not in repr(found)
    assert (await broker.basic(name)) is found  # cached briefly
    assert served("/v1/basic/{name}/credentials") - before == 1
    with pytest.raises(NotFound) as caught:
        await broker.basic(unique("missing"))
    assert caught.value.error == "basic_not_found"


# ------------------------------------------------------------------------------ errors


async def test_errors_are_typed_with_problem_and_remedy(
    broker, web_server, api, oauth_server, unique, admin_key
):
    with pytest.raises(NotFound) as missing:
        await broker.credentials(unique("nobody"))
    assert missing.value.status == 404 and missing.value.error == "connection_not_found"

    name = unique("pend")
    await create_oauth_app(api, oauth_server, name)
    pending = (await start_connection(api, name))["connection_id"]
    with pytest.raises(ConnectionNotActive) as not_active:
        await broker.credentials(pending)
    assert not_active.value.error == "connection_not_active"
    assert not_active.value.connection_status == "pending"
    assert "authorization not completed" in str(not_active.value)

    async with AuthbrokerClient(web_server, "ab_not-a-key") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.credentials(pending)
    assert refused.value.error == "unauthorized"
    assert "ab_not-a-key" not in repr(stranger) and admin_key not in repr(broker)


async def test_503_is_retried_as_retry_after_says(
    broker, web_server, admin_key, api, connection, oauth_server, resources
):
    """The provider is down and the token expired: authbroker answers 503 with Retry-After.
    Without patience that is a TokenUnavailable; with it the client waits and gets the token
    once the provider is back."""
    app = (await (await api.get(f"/v1/connections/{connection}")).json())["app"]
    await resources.pool.execute(
        "UPDATE apps SET token_url = $2 WHERE name = $1",
        app,
        f"http://127.0.0.1:{free_port()}/token",
    )
    await resources.pool.execute(
        "UPDATE connections SET expires_at = now() - interval '1 minute' WHERE id = $1",
        connection,
    )
    async with AuthbrokerClient(web_server, admin_key, max_wait=0) as impatient:
        with pytest.raises(TokenUnavailable) as unavailable:
            await impatient.credentials(connection)
    assert unavailable.value.status == 503
    assert unavailable.value.problem == "token_expired" and unavailable.value.detail
    assert unavailable.value.retry_after is not None and unavailable.value.retry_after > 0

    answered: list[int] = []
    refused = asyncio.Event()

    async def seen(response: httpx.Response) -> None:
        answered.append(response.status_code)
        if response.status_code == 503:
            refused.set()

    async with (
        httpx.AsyncClient(event_hooks={"response": [seen]}) as http,
        AuthbrokerClient(web_server, admin_key, http=http, max_wait=600) as patient,
    ):
        waiting = asyncio.create_task(patient.credentials(connection))
        await refused.wait()
        # The admin moves the token URL back to the provider (and confirms the new destination).
        fixed = {"token_url": oauth_server.token_url, "confirm_secret_destination": True}
        async with api.patch(f"/v1/apps/{app}", json=fixed) as r:
            assert r.status == 200, await r.text()
        credentials = await waiting
    assert answered[0] == 503 and answered[-1] == 200
    assert (await oauth_server.call_resource(credentials.access_token))[0] == 200


# ------------------------------------------------------------------------------ 401 handling


async def test_httpx_auth_reports_a_refused_token_and_retries_with_the_refreshed_one(
    broker, api, connection, oauth_server, admin_key, caplog
):
    caplog.set_level(logging.DEBUG)
    old = await broker.credentials(connection)  # cached, as in a running runtime
    await rotate_out(api, oauth_server, connection, old.access_token)
    before = await oauth_server.stats()
    refreshes = sum((await refresh_count(oauth_server)).values())

    async with httpx.AsyncClient(auth=AuthbrokerAuth(broker, connection)) as http:
        response = await http.get(oauth_server.resource_url)
    assert response.status_code == 200, response.text
    assert response.json()["user"] == "alice"
    # One refused attempt, one refresh at the provider, then the retry with the new token.
    after = await oauth_server.stats()
    assert counted(after, "resource_requests") - counted(before, "resource_requests") == {
        "401": 1,
        "200": 1,
    }
    assert sum((await refresh_count(oauth_server)).values()) == refreshes + 1
    new = await broker.credentials(connection)
    assert new.access_token != old.access_token
    assert response.request.headers["Authorization"] == new.authorization
    for secret in (old.access_token, new.access_token, admin_key):
        assert secret not in caplog.text


async def test_aiohttp_middleware_shares_one_report_among_a_burst_of_refusals(
    broker, api, connection, oauth_server
):
    old = await broker.credentials(connection)
    await rotate_out(api, oauth_server, connection, old.access_token)
    refreshes = sum((await refresh_count(oauth_server)).values())
    reports = served(REPORT_ROUTE, "POST")

    async def fetch(session: aiohttp.ClientSession) -> int:
        async with session.get(oauth_server.resource_url) as response:
            await response.read()
            return response.status

    middleware = AuthbrokerMiddleware(broker, connection)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        statuses = await asyncio.gather(*(fetch(session) for _ in range(20)))
    assert statuses == [200] * 20
    assert served(REPORT_ROUTE, "POST") - reports == 1
    assert sum((await refresh_count(oauth_server)).values()) == refreshes + 1


async def test_a_refusal_a_refresh_cannot_cure_is_reported_and_answered_as_it_was(
    broker, connection, api, events
):
    """A missing scope: authbroker records it; the same token would be refused again, so the
    service's 403 is returned without a second request."""
    hits: list[str] = []

    async def admin_only(request: web.Request) -> web.Response:
        hits.append(request.headers.get("Authorization", ""))
        return web.json_response(
            {"error": "insufficient_scope"},
            status=403,
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="admin"'},
        )

    service = web.Application()
    service.router.add_get("/admin", admin_only)
    async with (
        serving(service, free_port()) as url,
        httpx.AsyncClient(auth=AuthbrokerAuth(broker, connection)) as http,
    ):
        response = await http.get(f"{url}/admin")
    assert response.status_code == 403
    assert hits == [(await broker.credentials(connection)).authorization]
    event = await events.wait_for(
        lambda e: e["type"] == "connection.insufficient_scope" and e["connection_id"] == connection
    )
    assert event["data"]["required_scopes"] == ["admin"]
    async with api.get(f"/v1/connections/{connection}") as shown:
        assert (await shown.json())["problem"] == "insufficient_scope"


async def test_httpx_auth_needs_the_async_client(broker):
    with httpx.Client(auth=AuthbrokerAuth(broker, "any")) as http, pytest.raises(RuntimeError):
        http.get("http://127.0.0.1:9/")
