"""Every failure named rightly: each case brought about for real (the refresh job as a worker
runs it, the revoke job, the code exchange, the authorization URL fetched), with provider
answers shaped by aioresponses only where no real server can be made to give them, then read
through `GET …/diagnosis` as an operator would.

A worker of the test session may be running in this process (other modules start one): apps
here have token URLs of their own, connections are created not due and refreshed with
`force=True`, failures carry a long Retry-After so nothing falls due meanwhile, and every
connection is taken off the schedule when its test ends.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aioresponses import aioresponses

import services.diagnosis
from authbroker.embedded import free_port
from authbroker.oauth import TokenResponse
from authbroker.problems import Problem
from services.refresh import refresh_one
from storage import apps, connections
from storage.endpoints import FAILURES_TO_TRIP
from storage.resources import Resources
from tests.helpers import create_oauth_app, follow_callback, start_connection
from worker.context import WorkerContext

PROVIDER = "https://provider.test"
LATER = {"Retry-After": "3600"}  # a failure that leaves the connection alone for an hour


@pytest.fixture
async def made(api: aiohttp.ClientSession, resources: Resources) -> AsyncIterator[list[str]]:
    """Names of the apps a test makes; their connections leave the schedule afterwards."""
    names: list[str] = []
    yield names
    await resources.pool.execute(
        """UPDATE connections c SET refresh_at = NULL, lease_holder = NULL, lease_until = NULL
           FROM apps a WHERE a.id = c.app_id AND a.name = ANY($1::text[])""",
        names,
    )


async def provider_app(api: aiohttp.ClientSession, made: list[str], name: str) -> dict[str, Any]:
    made.append(name)
    body = {
        "name": name,
        "client_id": f"{name}-client",
        "client_secret": f"{name}-secret",
        "authorization_url": f"{PROVIDER}/{name}/authorize",
        "token_url": f"{PROVIDER}/{name}/token",
        "scopes": ["read"],
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def authorized(
    resources: Resources, app: str, *, expires_in: float = 600
) -> connections.Connection:
    """An active connection with a refresh token, as an exchange leaves it; not due."""
    found = await apps.get(resources.pool, app)
    assert found is not None
    cid = f"{app}-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    tokens = TokenResponse(
        access_token="AT1",
        token_type="Bearer",
        expires_in=None,
        refresh_token="RT1",
        refresh_token_expires_in=None,
        scopes=None,
        extra={},
        placement="body",
    )
    async with resources.pool.acquire() as conn, conn.transaction():
        await connections.start(
            conn, connection_id=cid, app_id=found.id, requested_scopes=["read"], metadata=None
        )
        stored = await connections.store_tokens(
            conn,
            resources.ring,
            cid,
            tokens,
            expires_at=now + timedelta(seconds=expires_in),
            refresh_at=now + timedelta(hours=1),
            refresh_token_expires_at=None,
            requested_scopes=["read"],
            granted_scopes=["read"],
            problem=None,
            authorized=True,
        )
    assert stored is not None
    return stored


async def refresh(resources: Resources, connection_id: str) -> str:
    """The refresh job, as a worker runs it."""
    async with aiohttp.ClientSession() as http:
        context = WorkerContext(resources=resources, http=http)
        return await refresh_one(context, connection_id, force=True)


async def checks(api: aiohttp.ClientSession, path: str) -> dict[str, dict[str, Any]]:
    async with api.get(path) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return {c["name"]: c for c in body["checks"]}


async def test_a_rotation_whose_answer_was_lost(api, resources, unique, made):
    """The provider rotated the refresh token, its answer was lost (a gateway's 502), and it
    refused the old token on the retry; another connection lost an answer not yet resolved."""
    name = unique("lost")
    app = await provider_app(api, made, name)
    gone, pending = await authorized(resources, name), await authorized(resources, name)
    with aioresponses() as provider:
        provider.post(app["token_url"], status=502, body="<html>Bad Gateway</html>")
        provider.post(app["token_url"], status=400, payload={"error": "invalid_grant"})
        assert await refresh(resources, gone.id) == "invalidated"
        provider.post(app["token_url"], exception=aiohttp.ServerDisconnectedError())
        provider.post(app["token_url"], status=503, headers=LATER)
        assert await refresh(resources, pending.id) == "retrying"

    found = await checks(api, f"/v1/connections/{gone.id}/diagnosis")
    rotation = found["rotation_lost"]
    assert rotation["status"] == "failing"
    assert "answer never reached authbroker" in rotation["summary"]
    assert rotation["evidence"]["last_error"]["error"] == "invalid_grant"
    assert rotation["evidence"]["events"][0]["data"]["answer_lost"] is True
    assert rotation["evidence"]["refresh_token_reuse_grace"] is None  # no preset: unknown
    assert rotation["evidence"]["provider_timeout"] == resources.settings.provider_timeout
    assert rotation["remedy"] == Problem.ROTATION_LOST.remedy
    assert found["refresh_token_invalidated"]["status"] == "ok"
    assert found["connection"]["status"] == "failing"

    found = await checks(api, f"/v1/connections/{pending.id}/diagnosis")
    assert found["rotation_lost"]["status"] == "warning"
    assert found["rotation_lost"]["evidence"]["answer_lost_at"]
    found = await checks(api, f"/v1/apps/{name}/diagnosis")
    assert found["rotation_lost"]["status"] == "warning"
    assert found["rotation_lost"]["evidence"]["connections_with_problem"] == 1
    assert found["rotation_lost"]["evidence"]["answers_lost_pending"] == 1


async def test_a_token_endpoint_outage_and_the_expired_token_it_leaves(
    api, resources, unique, made
):
    """Server errors in a row: a warning, then at the threshold the endpoint is unavailable,
    a failing check on the app and on its connection; the connection's expired token says
    why it was not refreshed."""
    name = unique("outage")
    app = await provider_app(api, made, name)
    c = await authorized(resources, name, expires_in=-60)  # the access token has expired
    path = f"/v1/connections/{c.id}/diagnosis"
    with aioresponses() as provider:
        provider.post(app["token_url"], status=503, headers=LATER, repeat=True)
        for _ in range(3):
            assert await refresh(resources, c.id) == "retrying"

    found = await checks(api, path)
    assert found["token_endpoint"]["status"] == "warning"
    assert found["token_endpoint"]["evidence"]["failures"] == 3
    assert found["token_endpoint"]["evidence"]["last_error"]["status"] == 503
    assert found["token_expiry"]["status"] == "failing"
    assert found["token_expiry"]["evidence"]["reason"] == "backing_off"

    with aioresponses() as provider:
        provider.post(app["token_url"], status=503, headers=LATER, repeat=True)
        for _ in range(FAILURES_TO_TRIP - 3):
            assert await refresh(resources, c.id) == "retrying"

    found = await checks(api, path)
    endpoint = found["token_endpoint"]
    assert endpoint["status"] == "failing"
    assert endpoint["evidence"]["available"] is False
    assert endpoint["evidence"]["failures"] == FAILURES_TO_TRIP
    assert endpoint["evidence"]["unavailable_since"] and endpoint["evidence"]["next_probe_at"]
    assert endpoint["remedy"] == Problem.PROVIDER_UNAVAILABLE.remedy
    assert found["token_expiry"]["evidence"]["reason"] == "provider_unavailable"
    found = await checks(api, f"/v1/apps/{name}/diagnosis")
    assert found["token_endpoint"]["status"] == "failing"
    assert found["token_endpoint"]["remedy"] == Problem.PROVIDER_UNAVAILABLE.remedy


async def test_an_expired_token_of_a_paused_app(api, resources, unique, made):
    """The provider refused the client credentials at a refresh: the app pauses, and the
    expired token says its refreshes wait for the app's settings."""
    name = unique("paused")
    app = await provider_app(api, made, name)
    c = await authorized(resources, name, expires_in=-60)
    with aioresponses() as provider:
        # Refused wherever the credentials go (the other placement is tried too).
        provider.post(
            app["token_url"], status=401, payload={"error": "invalid_client"}, repeat=True
        )
        assert await refresh(resources, c.id) == "app paused"
    found = await checks(api, f"/v1/connections/{c.id}/diagnosis")
    assert found["token_expiry"]["status"] == "warning"
    assert found["token_expiry"]["evidence"]["reason"] == "app_paused"
    assert found["settings"]["status"] == "failing"


@pytest.mark.parametrize(
    ("where", "status", "answer"),
    [
        ("real", "ok", {"status": 302}),  # to its login page
        ("no such path", "failing", {"status": 404}),
        ("no such host", "failing", {"error": "unresolvable"}),
        ("nothing listening", "failing", {"error": "refused"}),
    ],
)
async def test_the_authorization_url_is_fetched(
    api, oauth_server, unique, where, status, answer, monkeypatch
):
    # However busy the machine, the real server's answer counts, not how soon it comes.
    monkeypatch.setattr(services.diagnosis, "ANSWER_TIMEOUT", 300.0)
    urls = {
        "real": oauth_server.authorization_url,
        "no such path": oauth_server.base_url + "/o/no-such-authorize/",
        "no such host": "https://authorize.invalid/oauth/authorize",
        "nothing listening": f"http://127.0.0.1:{free_port()}/authorize",
    }
    name = unique("authurl")
    await create_oauth_app(api, oauth_server, name, authorization_url=urls[where])
    check = (await checks(api, f"/v1/apps/{name}/diagnosis"))["authorization_url"]
    assert check["status"] == status, check
    assert check["evidence"]["answer"].items() >= {"url": urls[where], **answer}.items()
    if status == "failing":
        assert "authorization_url" in check["remedy"]


async def test_a_revocation_the_provider_refused(
    api, anonymous, oauth_server, worker, unique, events, resources
):
    """The revoke URL is wrong: the provider answers 404 and the grant lives on. The app's
    diagnosis shows it with the provider's answer until the app is corrected."""
    name = unique("revoke")
    wrong = oauth_server.base_url + "/o/no-such-revoke/"
    await create_oauth_app(api, oauth_server, name, revoke_url=wrong)
    started = await start_connection(api, name)
    cid = started["connection_id"]
    _, outcome = await follow_callback(
        anonymous, await oauth_server.approve(started["authorize_url"])
    )
    assert outcome["status"] == "succeeded", outcome
    assert (await checks(api, f"/v1/apps/{name}/diagnosis"))["revocation"]["status"] == "ok"

    async with api.delete(f"/v1/connections/{cid}") as response:
        assert response.status == 202
    event = await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == cid, timeout=120
    )
    assert event["data"]["revoked_at_provider"] is False
    assert event["data"]["provider_status"] == 404

    check = (await checks(api, f"/v1/apps/{name}/diagnosis"))["revocation"]
    assert check["status"] == "failing"
    assert check["evidence"]["last_refused"]["connection_id"] == cid
    assert check["evidence"]["last_refused"]["provider_status"] == 404
    assert "HTTP 404" in check["summary"]
    assert wrong in check["remedy"] and "client_auth" in check["remedy"]

    # A new revoke URL moves where secrets go: the client secret comes with it.
    fixed = {"revoke_url": oauth_server.revoke_url, "client_secret": oauth_server.client_secret}
    async with api.patch(f"/v1/apps/{name}", json=fixed) as r:
        assert r.status == 200, await r.text()
    assert (await checks(api, f"/v1/apps/{name}/diagnosis"))["revocation"]["status"] == "warning"


async def test_a_provider_that_issues_no_refresh_token(
    api, anonymous, web_server, worker, unique, events
):
    """Facebook answers the code exchange with a 60-day token and nothing to refresh it: the
    event and both diagnoses name the provider, not a setting to fix."""
    name = unique("fb")
    body = {"name": name, "preset": "facebook", "client_id": "fb-app", "client_secret": "s"}
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        token_url = (await response.json())["token_url"]
    started = await start_connection(api, name)
    cid = started["connection_id"]
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    answer = {"access_token": "EAAB-token", "token_type": "bearer", "expires_in": 5183944}
    with aioresponses(passthrough=[web_server]) as provider:
        # The code exchange is a GET with the client credentials in the query.
        provider.get(re.compile(re.escape(token_url) + r"\?"), payload=answer, repeat=True)
        location = f"/oauth/callback?state={state}&code=fb-code"
        await follow_callback(anonymous, location)
        missing = await events.wait_for(
            lambda e: e["type"] == "connection.refresh_token_missing" and e["connection_id"] == cid,
            timeout=120,
        )
    assert "Facebook issues no refresh tokens" in missing["detail"]

    check = (await checks(api, f"/v1/connections/{cid}/diagnosis"))["refresh_token"]
    assert check["status"] == "failing"
    assert check["evidence"]["likely_cause"] == "provider_without_refresh"
    assert "cannot run unattended" in check["remedy"]
    check = (await checks(api, f"/v1/apps/{name}/diagnosis"))["refresh_token"]
    assert check["status"] == "failing"
    assert check["evidence"]["likely_cause"] == "provider_without_refresh"


async def test_granted_scopes_the_provider_did_not_report(api, resources, unique, made):
    """A token response without `scope` (Facebook's) leaves the granted scopes unknown: the
    exchange stores none (NULL), and the diagnosis says how to look at the provider."""
    name = unique("noscope")
    await provider_app(api, made, name)
    c = await authorized(resources, name)
    await resources.pool.execute("UPDATE connections SET granted_scopes = NULL WHERE id = $1", c.id)
    check = (await checks(api, f"/v1/connections/{c.id}/diagnosis"))["scopes_denied"]
    assert check["status"] == "warning"
    assert "unknown" in check["summary"]
    assert check["evidence"]["granted_scopes"] is None
    assert f"/v1/connections/{c.id}/report" in check["remedy"]
