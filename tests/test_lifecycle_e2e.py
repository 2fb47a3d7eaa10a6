"""The token lifecycle against the real django-oauth-toolkit server with rotating refresh tokens
(grace period 0) and short-lived access tokens: proactive refresh, single flight, revocation,
invalidation. Provider calls are counted at the server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from storage import connections
from tests.helpers import (
    authorize,
    create_oauth_app,
    refresh_count,
    stored_tokens,
)
from tests.oauth_server import OAuthTestServer, basic_auth_header

LIFETIME = 15  # seconds: short enough to watch refreshes happen, long enough to be exact


@pytest.fixture(scope="module")
def short_server(workdir: Path, settings) -> Any:
    server = OAuthTestServer(workdir / "oauth-short", access_token_lifetime=LIFETIME)
    server.start(settings.redirect_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def race_server(workdir: Path, settings) -> Any:
    """A server of its own, so that its counts are this test's alone."""
    server = OAuthTestServer(workdir / "oauth-race", access_token_lifetime=3600)
    server.start(settings.redirect_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def late_server(workdir: Path, settings) -> Any:
    """Rotation without grace, and token answers held back after processing (see the test)."""
    server = OAuthTestServer(workdir / "oauth-late", access_token_lifetime=3600)
    server.start(settings.redirect_url)
    yield server
    server.stop()


async def test_scheduler_refreshes_before_expiry_and_rotates(
    api, anonymous, short_server, worker, unique, events, resources
):
    app = unique("short")
    await create_oauth_app(api, short_server, app, refresh_margin=0)
    cid = f"{app}-1"
    await authorize(api, anonymous, short_server, app, cid)
    _, old_refresh = await stored_tokens(resources, cid)
    first = await connections.get(resources.pool, cid)
    assert first and first.expires_at and first.refresh_at
    # Refresh is planned before expiry: margin 20 % of the lifetime plus up to 10 % jitter.
    ahead = (first.expires_at - first.refresh_at).total_seconds()
    assert LIFETIME * 0.2 <= ahead <= LIFETIME * 0.5

    event = await events.wait_for(
        lambda e: e["type"] == "connection.refreshed" and e["connection_id"] == cid,
        timeout=LIFETIME + 10,
    )
    assert event["data"]["refresh_token_rotated"] is True
    refreshed = await connections.get(resources.pool, cid)
    assert refreshed and refreshed.last_refresh_at
    assert refreshed.last_refresh_at < first.expires_at  # before the old token expired

    new_access, new_refresh = await stored_tokens(resources, cid)
    assert new_refresh != old_refresh
    assert (await short_server.introspect(old_refresh))["active"] is False
    assert (await short_server.introspect(new_refresh))["active"] is True
    status, _ = await short_server.call_resource(new_access)
    assert status == 200


async def test_fifty_concurrent_credentials_requests_cause_one_refresh(
    api, anonymous, short_server, worker, unique, resources
):
    app = unique("burst")
    await create_oauth_app(api, short_server, app, refresh_margin=0)
    cid = f"{app}-1"
    await authorize(api, anonymous, short_server, app, cid)
    # About to expire, and kept off the scheduler so only the requests can trigger a refresh.
    await resources.pool.execute(
        """UPDATE connections SET refresh_at = now() + interval '1 hour',
               expires_at = now() + interval '2 seconds',
               authorized_at = now() - interval '60 seconds'
           WHERE id = $1""",
        cid,
    )
    _, old_refresh = await stored_tokens(resources, cid)
    before = await refresh_count(short_server)

    async def fetch() -> dict[str, Any]:
        async with api.get(f"/v1/connections/{cid}/credentials") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    answers = await asyncio.gather(*(fetch() for _ in range(50)))
    after = await refresh_count(short_server)
    assert after.get("200", 0) - before.get("200", 0) == 1
    assert after.get("400", 0) == before.get("400", 0)
    tokens = {a["access_token"] for a in answers}
    assert len(tokens) == 1  # everyone got the fresh token
    _, new_refresh = await stored_tokens(resources, cid)
    assert new_refresh != old_refresh
    status, _ = await short_server.call_resource(tokens.pop())
    assert status == 200


async def test_revoked_grant_is_invalidated_on_refresh(
    api, anonymous, short_server, worker, unique, events, resources
):
    app = unique("revoked")
    await create_oauth_app(api, short_server, app)
    cid = f"{app}-1"
    await authorize(api, anonymous, short_server, app, cid)
    _, refresh = await stored_tokens(resources, cid)
    # The user revokes the grant at the provider.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            short_server.revoke_url,
            data={"token": refresh, "token_type_hint": "refresh_token"},
            headers={
                "Authorization": basic_auth_header(
                    short_server.client_id, short_server.client_secret
                )
            },
        ) as response,
    ):
        assert response.status == 200

    async with api.post(f"/v1/connections/{cid}/refresh") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["outcome"] == "failed"
    assert body["connection"]["status"] == "failed"
    assert body["connection"]["problem"] == "refresh_token_invalidated"
    event = await events.wait_for(
        lambda e: e["type"] == "connection.invalidated" and e["connection_id"] == cid
    )
    assert event["problem"] == "refresh_token_invalidated"
    assert "authorize again" in event["detail"]
    async with api.get(f"/v1/connections/{cid}/credentials") as response:
        assert response.status == 409
        assert (await response.json())["problem"] == "refresh_token_invalidated"


async def test_forced_refresh_and_reports(api, anonymous, short_server, worker, unique, events):
    app = unique("report")
    await create_oauth_app(api, short_server, app)
    cid = f"{app}-1"
    await authorize(api, anonymous, short_server, app, cid)

    async with api.post(f"/v1/connections/{cid}/refresh") as response:
        body = await response.json()
    assert body["outcome"] == "refreshed"

    # RFC 6750 insufficient_scope: recorded with the required scope, no refresh.
    before = await refresh_count(short_server)
    async with api.post(
        f"/v1/connections/{cid}/report",
        json={
            "status": 403,
            "www_authenticate": 'Bearer realm="x", error="insufficient_scope", scope="admin"',
        },
    ) as response:
        body = await response.json()
    assert body["problem"] == "insufficient_scope" and body["required_scopes"] == ["admin"]
    assert await refresh_count(short_server) == before
    await events.wait_for(
        lambda e: e["type"] == "connection.insufficient_scope" and e["connection_id"] == cid
    )

    # A 403 without a Bearer challenge: a hint that no token was sent.
    async with api.post(f"/v1/connections/{cid}/report", json={"status": 403}) as response:
        body = await response.json()
    assert body["action"] == "none" and "without" in body["hint"]

    # invalid_token: refreshed.
    async with api.post(
        f"/v1/connections/{cid}/report",
        json={"status": 401, "www_authenticate": 'Bearer error="invalid_token"'},
    ) as response:
        body = await response.json()
    assert body["action"] == "refreshed"
    after = await refresh_count(short_server)
    assert after.get("200", 0) == before.get("200", 0) + 1

    async with api.post(f"/v1/connections/{cid}/report", json={"status": 500}) as response:
        assert response.status == 400
        assert (await response.json())["fields"][0]["field"] == "status"


def _worker_process(settings, database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")},
        "AUTHBROKER_ENV": "test",
        "AUTHBROKER_DATABASE_URL": database_url,
        "AUTHBROKER_REDIS_URL": redis_url,
        "AUTHBROKER_REDIS_PREFIX": settings.redis_prefix,
        "AUTHBROKER_ENCRYPTION_KEYS": settings.encryption_keys,
        "AUTHBROKER_LOG_LEVEL": "warning",
        "AUTHBROKER_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "authbroker"), "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_workers_racing_refresh_each_connection_once(
    api, anonymous, race_server, worker, unique, resources, settings, database_url, redis_url
):
    """Two more worker processes (three with the test's own) race on 100 due connections:
    the server sees exactly one refresh per connection and refuses none."""
    app = unique("race")
    await create_oauth_app(api, race_server, app)
    ids = [f"{app}-{i}" for i in range(100)]
    semaphore = asyncio.Semaphore(8)

    async def one(cid: str) -> None:
        async with semaphore:
            await authorize(api, anonymous, race_server, app, cid)

    await asyncio.gather(*(one(cid) for cid in ids))
    # Keep them off the schedule until both processes are up.
    await resources.pool.execute(
        "UPDATE connections SET refresh_at = now() + interval '1 hour' WHERE id = ANY($1)", ids
    )
    before = await refresh_count(race_server)
    processes = [_worker_process(settings, database_url, redis_url) for _ in range(2)]
    try:
        await asyncio.sleep(2.5)  # let both start and listen
        assert all(p.poll() is None for p in processes), processes[0].stderr.read().decode()
        await resources.pool.execute(
            "UPDATE connections SET refresh_at = now() WHERE id = ANY($1)", ids
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = await resources.pool.fetchval(
                "SELECT count(*) FROM connections WHERE id = ANY($1) AND last_refresh_at IS NULL",
                ids,
            )
            if pending == 0:
                break
            await asyncio.sleep(0.2)
        assert pending == 0
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            p.wait(timeout=30)
    after = await refresh_count(race_server)
    assert after.get("200", 0) - before.get("200", 0) == len(ids)
    assert after.get("400", 0) == before.get("400", 0)
    statuses = await resources.pool.fetch(
        "SELECT DISTINCT status FROM connections WHERE id = ANY($1)", ids
    )
    assert [r["status"] for r in statuses] == ["active"]


LATE = 15.0  # seconds: three times the provider timeout this suite used to run with


async def test_a_rotation_answered_late_keeps_every_grant(
    api, anonymous, late_server, worker, unique, resources
):
    """The server rotates the refresh token (the old one dies at once) and answers only LATE
    seconds later. Every answer is waited for and stored: each grant keeps working, and the
    server never sees an old refresh token again."""
    app = unique("late")
    await create_oauth_app(api, late_server, app)
    ids = [f"{app}-{i}" for i in range(5)]
    for cid in ids:
        await authorize(api, anonymous, late_server, app, cid)
    old = {cid: (await stored_tokens(resources, cid))[1] for cid in ids}
    before = await refresh_count(late_server)
    await late_server.set_token_delay(LATE)
    try:
        await resources.pool.execute(
            "UPDATE connections SET refresh_at = now() WHERE id = ANY($1)", ids
        )
        deadline = time.monotonic() + 10 * LATE
        while time.monotonic() < deadline:
            done = await resources.pool.fetchval(
                """SELECT count(*) FROM connections WHERE id = ANY($1)
                   AND last_refresh_at IS NOT NULL AND lease_holder IS NULL""",
                ids,
            )
            if done == len(ids):
                break
            await asyncio.sleep(0.5)
        assert done == len(ids)
    finally:
        await late_server.set_token_delay(0)
    after = await refresh_count(late_server)
    assert after.get("200", 0) - before.get("200", 0) == len(ids)
    assert after.get("400", 0) == before.get("400", 0)  # no old token sent again
    for cid in ids:
        found = await connections.get(resources.pool, cid)
        assert found is not None and found.status == "active" and found.problem is None
        access, refresh = await stored_tokens(resources, cid)
        assert refresh != old[cid]
        assert (await late_server.introspect(old[cid]))["active"] is False
        assert (await late_server.introspect(refresh))["active"] is True
        status, _ = await late_server.call_resource(access)
        assert status == 200


async def test_delete_revokes_at_the_provider(
    api, anonymous, short_server, worker, unique, events, resources
):
    app = unique("delete")
    await create_oauth_app(api, short_server, app)
    cid = f"{app}-1"
    await authorize(api, anonymous, short_server, app, cid)
    access, refresh = await stored_tokens(resources, cid)
    async with api.delete(f"/v1/connections/{cid}") as response:
        assert response.status == 202
    event = await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == cid
    )
    assert event["data"]["revoked_at_provider"] is True
    assert (await short_server.introspect(refresh))["active"] is False
    status, _ = await short_server.call_resource(access)
    assert status == 401
    row = await resources.pool.fetchrow(
        "SELECT status, access_token, refresh_token FROM connections WHERE id = $1", cid
    )
    assert row["status"] == "revoked"
    assert row["access_token"] is None and row["refresh_token"] is None
