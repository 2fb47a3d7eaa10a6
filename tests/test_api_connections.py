"""Connections as a runtime and a browser meet them: starting an authorization, the authorize
URL it hands out, what is kept of it, listing, credentials, deletion with revocation at the
real provider, and the callback refusing what it must refuse."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from authbroker import oauth
from storage.resources import Resources
from storage.sealing import aad
from tests.helpers import (
    authorize_for_real,
    create_oauth_app,
    follow_callback,
    start_connection,
)
from worker import jobs as sweep
from worker.context import CTX_KEY

JSON = {"Accept": "application/json"}


# ------------------------------------------------------------------------------ helpers


async def plain_app(api: aiohttp.ClientSession, name: str, **overrides: Any) -> dict[str, Any]:
    """An app whose provider is a closed loopback port: for tests that never reach a provider."""
    body = {
        "name": name,
        "client_id": f"client-{name}",
        "client_secret": f"secret-{name}",
        "authorization_url": "http://127.0.0.1:9/authorize",
        "token_url": "http://127.0.0.1:9/token",
        "scopes": ["read", "write"],
        **overrides,
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def state_of(started: dict[str, Any]) -> str:
    return query_of(started["authorize_url"])["state"][0]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def show(api: aiohttp.ClientSession, connection_id: str) -> tuple[int, dict[str, Any]]:
    async with api.get(f"/v1/connections/{connection_id}") as response:
        return response.status, await response.json()


async def callback(anonymous: aiohttp.ClientSession, query: str) -> tuple[int, dict[str, Any]]:
    async with anonymous.get(f"/oauth/callback?{query}", headers=JSON) as response:
        return response.status, await response.json()


async def authorization_row(resources: Resources, started: dict[str, Any]) -> Any:
    row = await resources.pool.fetchrow(
        "SELECT * FROM authorizations WHERE id = $1", uuid.UUID(started["authorization_id"])
    )
    assert row is not None
    return row


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


async def wait_for_status(
    api: aiohttp.ClientSession, connection_id: str, status: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal seen
        _, seen = await show(api, connection_id)
        return seen.get("status") == status

    assert await eventually(reached), f"connection never became {status}: {seen}"
    return seen


# ------------------------------------------------------------------------------ starting


async def test_start_hands_out_the_authorize_url(api, oauth_server, unique, settings):
    name = unique("app")
    await create_oauth_app(
        api, oauth_server, name, authorize_params={"access_type": "offline", "prompt": "consent"}
    )
    before = datetime.now(UTC)
    async with api.post(f"/v1/apps/{name}/connections", json={}) as response:
        assert response.status == 201
        started = await response.json()
    assert {"connection_id", "authorize_url", "expires_at"} <= set(started)
    assert started["connection_id"]

    url = urlsplit(started["authorize_url"])
    base = urlsplit(oauth_server.authorization_url)
    assert (url.scheme, url.netloc, url.path) == (base.scheme, base.netloc, base.path)
    query = query_of(started["authorize_url"])
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [oauth_server.client_id]
    assert query["redirect_uri"] == [settings.redirect_url]
    assert query["scope"] == ["read write"]
    assert len(query["state"]) == 1 and len(query["state"][0]) >= 43  # 256 bits, base64url
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"]) == 1 and query["code_challenge"][0]
    assert query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"]
    assert "client_secret" not in query

    expires_at = parse_time(started["expires_at"])
    assert before + timedelta(minutes=9) < expires_at < before + timedelta(minutes=11)


async def test_each_start_gets_its_own_state(api, unique):
    name = unique("app")
    await plain_app(api, name)
    first = await start_connection(api, name)
    second = await start_connection(api, name)
    assert state_of(first) != state_of(second)
    assert first["connection_id"] != second["connection_id"]


async def test_scopes_are_joined_with_the_apps_separator(api, oauth_server, unique):
    name = unique("app")
    await create_oauth_app(
        api, oauth_server, name, scopes=["read", "write", "admin"], scope_separator=","
    )
    started = await start_connection(api, name)
    assert query_of(started["authorize_url"])["scope"] == ["read,write,admin"]


async def test_no_pkce_when_the_app_disables_it(api, oauth_server, unique, resources):
    name = unique("app")
    await create_oauth_app(api, oauth_server, name, pkce=False)
    started = await start_connection(api, name)
    query = query_of(started["authorize_url"])
    assert "code_challenge" not in query
    assert "code_challenge_method" not in query
    assert (await authorization_row(resources, started))["code_verifier"] is None


async def test_state_is_stored_only_hashed_and_the_verifier_sealed(api, unique, resources):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    state = state_of(started)
    row = await authorization_row(resources, started)

    assert bytes(row["state_hash"]) == hashlib.sha256(state.encode()).digest()
    assert bytes(row["state_hash"]) == oauth.state_digest(state)
    for column, value in dict(row).items():
        if isinstance(value, bytes):
            assert state.encode() not in value, column
        elif isinstance(value, str):
            assert state not in value, column
    # Nowhere in the table, in any rendering.
    leaked = await resources.pool.fetchval(
        "SELECT count(*) FROM authorizations z "
        "WHERE strpos(z::text, $1) > 0 OR strpos(z::text, $2) > 0",
        state,
        state.encode().hex(),
    )
    assert leaked == 0

    verifier = row["code_verifier"]
    assert isinstance(verifier, bytes) and verifier[0] == 0x01
    opened = resources.ring.open(verifier, aad=aad("authorizations", row["id"], "code_verifier"))
    assert opened.encode() not in verifier
    challenge = query_of(started["authorize_url"])["code_challenge"][0]
    assert oauth.code_challenge(opened) == challenge


async def test_explicit_connection_id_scopes_and_metadata(api, unique):
    name = unique("app")
    await plain_app(api, name)
    connection_id = unique("conn")
    metadata = {"tenant": "acme", "user": {"id": 42}}
    started = await start_connection(
        api, name, connection_id=connection_id, scopes=["email"], metadata=metadata
    )
    assert started["connection_id"] == connection_id
    assert query_of(started["authorize_url"])["scope"] == ["email"]

    status, shown = await show(api, connection_id)
    assert status == 200
    assert shown["connection_id"] == connection_id
    assert shown["app"] == name
    assert shown["status"] == "pending"
    assert shown["requested_scopes"] == ["email"]
    assert shown["metadata"] == metadata
    assert shown["has_access_token"] is False
    assert shown["has_refresh_token"] is False
    assert "access_token" not in shown and "refresh_token" not in shown


async def test_starting_again_reauthorizes_the_same_connection(api, unique):
    name = unique("app")
    await plain_app(api, name)
    connection_id = unique("conn")
    first = await start_connection(api, name, connection_id=connection_id, metadata={"a": 1})
    second = await start_connection(api, name, connection_id=connection_id)
    assert second["connection_id"] == connection_id
    assert state_of(first) != state_of(second)
    _, shown = await show(api, connection_id)
    assert shown["metadata"] == {"a": 1}
    async with api.get("/v1/connections", params={"app": name}) as response:
        assert [c["connection_id"] for c in (await response.json())["items"]] == [connection_id]


async def test_connection_id_of_another_app_is_refused(api, unique):
    first, second = unique("app"), unique("app")
    await plain_app(api, first)
    await plain_app(api, second)
    connection_id = unique("conn")
    await start_connection(api, first, connection_id=connection_id)
    async with api.post(
        f"/v1/apps/{second}/connections", json={"connection_id": connection_id}
    ) as response:
        assert response.status == 409
        body = await response.json()
    assert body["error"] == "connection_exists"
    _, shown = await show(api, connection_id)
    assert shown["app"] == first


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"connection_id": "a b"}, "connection_id"),
        ({"connection_id": "../etc"}, "connection_id"),
        ({"scopes": "read"}, "scopes"),
        ({"scopes": ["has space"]}, "scopes.0"),
        ({"conection_id": "x"}, "conection_id"),
    ],
)
async def test_bad_start_requests_are_refused(api, unique, resources, body, field):
    name = unique("app")
    await plain_app(api, name)
    async with api.post(f"/v1/apps/{name}/connections", json=body) as response:
        assert response.status == 400
        answer = await response.json()
    assert answer["error"] == "invalid_request"
    assert field in [f["field"] for f in answer["fields"]]
    count = await resources.pool.fetchval(
        "SELECT count(*) FROM connections c JOIN apps a ON a.id = c.app_id WHERE a.name = $1",
        name,
    )
    assert count == 0


async def test_start_for_unknown_app_is_404(api, unique):
    async with api.post(f"/v1/apps/{unique('missing')}/connections", json={}) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "app_not_found"


# ------------------------------------------------------------------------------ listing


async def test_list_filters_by_app_and_status_and_pages(api, anonymous, unique):
    name, other = unique("app"), unique("app")
    await plain_app(api, name)
    await plain_app(api, other)
    mine = [(await start_connection(api, name))["connection_id"] for _ in range(4)]
    declined = await start_connection(api, name)
    mine.append(declined["connection_id"])
    foreign = (await start_connection(api, other))["connection_id"]

    status, outcome = await callback(
        anonymous, urlencode({"error": "access_denied", "state": state_of(declined)})
    )
    assert status == 200 and outcome["status"] == "failed"

    async with api.get("/v1/connections", params={"app": name}) as response:
        assert response.status == 200
        listed = await response.json()
    assert sorted(c["connection_id"] for c in listed["items"]) == sorted(mine)
    assert foreign not in [c["connection_id"] for c in listed["items"]]
    assert listed["next"] is None

    async with api.get("/v1/connections", params={"app": name, "status": "pending"}) as response:
        pending = [c["connection_id"] for c in (await response.json())["items"]]
    assert sorted(pending) == sorted(mine[:4])

    async with api.get("/v1/connections", params={"app": name, "status": "failed"}) as response:
        failed = (await response.json())["items"]
    assert [c["connection_id"] for c in failed] == [declined["connection_id"]]
    assert failed[0]["problem"] == "access_denied"

    walked: list[str] = []
    pages = 0
    params: dict[str, str] = {"app": name, "limit": "2"}
    while True:
        async with api.get("/v1/connections", params=params) as response:
            assert response.status == 200
            page = await response.json()
        pages += 1
        assert len(page["items"]) <= 2
        walked += [c["connection_id"] for c in page["items"]]
        if page["next"] is None:
            break
        params["after"] = page["next"]
        assert pages < 10, "paging does not end"
    assert sorted(walked) == sorted(mine)
    assert len(walked) == len(set(walked)) == 5
    assert pages == 3


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"status": "bogus"}, "invalid_status"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
    ],
)
async def test_list_refuses_bad_parameters(api, params, error):
    async with api.get("/v1/connections", params=params) as response:
        assert response.status == 400
        assert (await response.json())["error"] == error


async def test_unknown_connection_is_404(api, unique):
    connection_id = unique("missing")
    status, body = await show(api, connection_id)
    assert status == 404 and body["error"] == "connection_not_found"
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "connection_not_found"
    async with api.delete(f"/v1/connections/{connection_id}") as response:
        assert response.status == 404


# ------------------------------------------------------------------------------ credentials


@pytest.mark.parametrize("revoked", [False, True], ids=["pending", "revoked"])
async def test_credentials_of_a_connection_that_is_not_active_are_409(
    api, unique, resources, revoked
):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    if revoked:
        await resources.pool.execute(
            "UPDATE connections SET status = 'revoked' WHERE id = $1", started["connection_id"]
        )
    async with api.get(f"/v1/connections/{started['connection_id']}/credentials") as response:
        body = await response.json()
        assert response.status == 409, body
    assert body["error"] == "connection_not_active"
    assert body["status"] == ("revoked" if revoked else "pending")


async def test_credentials_of_an_expired_token_without_refresh_token_are_409(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    started = await authorize_for_real(api, anonymous, oauth_server, events, unique("app"))
    connection_id = started["connection_id"]
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        assert response.status == 200
        access_token = (await response.json())["access_token"]

    await resources.pool.execute(
        "UPDATE connections SET expires_at = now() - interval '1 minute', refresh_token = NULL "
        "WHERE id = $1",
        connection_id,
    )
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        text = await response.text()
        assert response.status == 409, text
        body = await response.json()
    assert body["error"] == "token_expired"
    assert body["problem"] == "token_expired"
    assert access_token not in text


async def test_credentials_while_the_provider_is_down_are_503_with_retry_after(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    """An expired token whose refresh fails for now: 503 token_expired and when to retry."""
    from authbroker.embedded import free_port

    started = await authorize_for_real(api, anonymous, oauth_server, events, unique("app"))
    connection_id = started["connection_id"]
    await resources.pool.execute(
        """UPDATE apps SET token_url = $2 WHERE id =
               (SELECT app_id FROM connections WHERE id = $1)""",
        connection_id,
        f"http://127.0.0.1:{free_port()}/token",
    )
    await resources.pool.execute(
        "UPDATE connections SET expires_at = now() - interval '1 minute' WHERE id = $1",
        connection_id,
    )
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        text = await response.text()
        assert response.status == 503, text
        body = await response.json()
        retry_after = response.headers.get("Retry-After")
    assert body["problem"] == "token_expired"
    assert retry_after is not None and int(retry_after) > 0
    async with api.get(f"/v1/connections/{connection_id}") as response:
        shown = await response.json()
    assert shown["status"] == "active"  # a provider outage never kills a connection
    assert shown["failed_attempts"] >= 1


# ------------------------------------------------------------------------------ deleting


async def test_delete_revokes_at_the_provider_and_wipes_the_tokens(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    started = await authorize_for_real(api, anonymous, oauth_server, events, unique("app"))
    connection_id = started["connection_id"]
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        access_token = (await response.json())["access_token"]
    sealed_refresh = await resources.pool.fetchval(
        "SELECT refresh_token FROM connections WHERE id = $1", connection_id
    )
    refresh_token = resources.ring.open(
        sealed_refresh, aad=aad("connections", connection_id, "refresh_token")
    )
    assert (await oauth_server.call_resource(access_token))[0] == 200
    assert (await oauth_server.introspect(refresh_token))["active"] is True

    async with api.delete(f"/v1/connections/{connection_id}") as response:
        assert response.status == 202
        body = await response.json()
    assert body == {"connection_id": connection_id, "status": "revoking"}

    shown = await wait_for_status(api, connection_id, "revoked")
    assert shown["has_access_token"] is False
    assert shown["has_refresh_token"] is False

    event = await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == connection_id
    )
    assert event["status"] == "revoked"
    assert event["data"]["revoked_at_provider"] is True

    row = await resources.pool.fetchrow(
        "SELECT access_token, refresh_token FROM connections WHERE id = $1", connection_id
    )
    assert row["access_token"] is None and row["refresh_token"] is None

    status, _ = await oauth_server.call_resource(access_token)
    assert status == 401
    assert (await oauth_server.introspect(refresh_token))["active"] is False

    async with api.delete(f"/v1/connections/{connection_id}") as response:
        assert response.status == 204


async def test_a_deleted_pending_connection_stays_deleted(
    api, anonymous, oauth_server, worker, unique
):
    name = unique("app")
    await create_oauth_app(api, oauth_server, name)
    started = await start_connection(api, name)
    connection_id = started["connection_id"]
    async with api.delete(f"/v1/connections/{connection_id}") as response:
        assert response.status == 202
    await wait_for_status(api, connection_id, "revoked")

    # The user, unaware, finishes the consent the deleted connection had started.
    location = await oauth_server.approve(started["authorize_url"])
    status, outcome = await follow_callback(anonymous, location)
    if status == 200:
        assert outcome["status"] != "succeeded", outcome
    else:
        assert status == 400
    _, shown = await show(api, connection_id)
    assert shown["status"] == "revoked"
    assert shown["has_access_token"] is False


# ------------------------------------------------------------------------------ the callback


async def assert_untouched(api, resources: Resources, started: dict[str, Any]) -> None:
    """A refused callback stored no code, ended nothing and changed no connection."""
    row = await authorization_row(resources, started)
    assert row["code"] is None
    assert row["done"] is False
    assert row["enqueued_at"] is None
    _, shown = await show(api, started["connection_id"])
    assert shown["status"] == "pending"
    assert shown["problem"] is None


@pytest.mark.parametrize(
    "make_query",
    [
        pytest.param(
            lambda state: urlencode({"code": "abc", "error": "access_denied", "state": state}),
            id="code-and-error",
        ),
        pytest.param(
            lambda state: urlencode([("code", "abc"), ("state", state), ("state", state)]),
            id="repeated-state",
        ),
        pytest.param(
            lambda state: urlencode([("code", "abc"), ("code", "def"), ("state", state)]),
            id="repeated-code",
        ),
        pytest.param(
            lambda state: urlencode({"code": "c" * 5000, "state": state}), id="over-long-code"
        ),
        pytest.param(lambda state: urlencode({"code": "", "state": state}), id="empty-code"),
        pytest.param(lambda state: urlencode({"state": state}), id="neither-code-nor-error"),
        pytest.param(lambda state: urlencode({"code": "abc"}), id="no-state"),
        pytest.param(
            lambda state: urlencode({"code": "abc", "state": state + "x"}), id="altered-state"
        ),
    ],
)
async def test_hostile_callbacks_are_refused_and_change_nothing(
    api, anonymous, unique, resources, make_query
):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    status, body = await callback(anonymous, make_query(state_of(started)))
    assert status == 400, body
    assert body["error"] in {"invalid_request", "invalid_state"}
    assert body["message"]
    await assert_untouched(api, resources, started)


async def test_hostile_callback_gets_a_readable_page_in_a_browser(api, anonymous, unique):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    query = urlencode([("code", "abc"), ("state", state_of(started)), ("state", "x")])
    async with anonymous.get(
        f"/oauth/callback?{query}", headers={"Accept": "text/html"}
    ) as response:
        assert response.status == 400
        assert response.content_type == "text/html"
        assert "more than once" in await response.text()


async def test_expired_state_is_refused(api, anonymous, unique, resources):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(started["authorization_id"]),
    )
    status, body = await callback(anonymous, urlencode({"code": "abc", "state": state_of(started)}))
    assert status == 400
    assert body["error"] == "state_expired"
    assert "expired" in body["message"]
    assert (await authorization_row(resources, started))["code"] is None


async def test_expired_state_is_called_expired_after_the_sweep(
    api, anonymous, unique, resources, worker
):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(started["authorization_id"]),
    )

    async def worker_started() -> bool:
        return CTX_KEY in worker.ctx

    assert await eventually(worker_started)
    await sweep.expire_authorizations(worker.ctx)
    assert (await authorization_row(resources, started))["done"] is True

    status, body = await callback(anonymous, urlencode({"code": "abc", "state": state_of(started)}))
    assert (await authorization_row(resources, started))["code"] is None
    assert status == 400
    assert body["error"] == "state_expired"


async def test_provider_error_ends_the_authorization_with_its_problem(
    api, anonymous, unique, worker, events
):
    name = unique("app")
    await plain_app(api, name)
    started = await start_connection(api, name)
    connection_id = started["connection_id"]
    query = urlencode(
        {"error": "invalid_scope", "error_description": "scope admin", "state": state_of(started)}
    )
    status, outcome = await callback(anonymous, query)
    assert status == 200
    assert outcome["status"] == "failed"
    assert outcome["problem"] == "scope_mismatch"
    assert outcome["connection_id"] == connection_id
    assert outcome["detail"]

    _, shown = await show(api, connection_id)
    assert shown["status"] == "failed"
    assert shown["problem"] == "scope_mismatch"

    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorization_failed" and e["connection_id"] == connection_id
        )
    )
    assert event["problem"] == "scope_mismatch"
    assert event["app"] == name
    assert event["status"] == "failed"

    # The state was single use: the same redirect again is refused.
    status, body = await callback(anonymous, query)
    assert status == 400 and body["error"] == "state_used"


async def test_credentials_of_a_paused_app_say_why_without_refreshing(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    """The app's settings were refused: an expired token is not refreshed (that would hammer
    the provider) and the answer names the app's problem."""
    started = await authorize_for_real(api, anonymous, oauth_server, events, unique("app"))
    connection_id = started["connection_id"]
    await resources.pool.execute(
        """UPDATE apps SET paused_at = now(), paused_problem = 'invalid_settings'
           WHERE id = (SELECT app_id FROM connections WHERE id = $1)""",
        connection_id,
    )
    await resources.pool.execute(
        "UPDATE connections SET expires_at = now() - interval '1 minute' WHERE id = $1",
        connection_id,
    )
    before = (await oauth_server.stats()).get("token_requests", {}).get("refresh_token", {})
    async with api.get(f"/v1/connections/{connection_id}/credentials") as response:
        assert response.status == 503
        body = await response.json()
    assert body["problem"] == "invalid_settings"
    after = (await oauth_server.stats()).get("token_requests", {}).get("refresh_token", {})
    assert after == before
