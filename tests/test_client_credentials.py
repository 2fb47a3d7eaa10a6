"""Service connections (the client credentials grant, RFC 6749 §4.4) end to end, through
authbroker's real web server and worker: against django-oauth-toolkit (tests/oauth_server) and
the authlib server that verifies JWT client assertions (tests/jwt_server); a loopback server
shapes what neither can be made to answer (a 503, and what a JSON request looks like)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from storage import leases
from tests.chaos_helpers import FakeProvider
from tests.helpers import create_oauth_app, stored_tokens
from tests.jwt_server import JWTTestServer
from tests.oauth_server import OAuthTestServer

WAIT = 120  # seconds: the worker's first claim, however busy the machine


@pytest.fixture(scope="module")
def jwt_server(workdir: Path) -> Iterator[JWTTestServer]:
    server = JWTTestServer(workdir / "jwt_server_cc.log")
    server.start()
    yield server
    server.stop()


async def call(
    api: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with api.request(method, path, **kwargs) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def service_app(
    api: aiohttp.ClientSession, server: OAuthTestServer, name: str, **settings: Any
) -> str:
    """An app for a DOT client-credentials application, with no authorization URL."""
    client_id, secret = server.create_application(
        "https://unused.example/cb", name=name, grant="client-credentials"
    )
    body = {
        "name": name,
        "client_id": client_id,
        "client_secret": secret,
        "token_url": server.token_url,
        "revoke_url": server.revoke_url,
        "scopes": ["read"],
        **settings,
    }
    status, app = await call(api, "POST", "/v1/apps", json=body)
    assert status == 201, app
    assert app["authorization_url"] is None
    return client_id


async def start(api: aiohttp.ClientSession, app: str, **body: Any) -> dict[str, Any]:
    status, started = await call(
        api, "POST", f"/v1/apps/{app}/connections", json={"grant": "client_credentials", **body}
    )
    assert status == 202, started
    return started


async def of(events: Any, connection_id: str) -> list[dict[str, Any]]:
    return [e for e in await events.all() if e.get("connection_id") == connection_id]


async def test_a_service_connection_gets_its_token_at_once_and_the_next_before_expiry(
    api, web_server, worker, oauth_server, events, resources, unique
):
    name = unique("m2m")
    client_id = await service_app(api, oauth_server, name, scopes=["read", "write"])
    cid = f"{name}-svc"
    started = await start(
        api,
        name,
        connection_id=cid,
        audience="https://api.example.com",
        # DOT restricts the token to these (RFC 8707): its /api/me accepts it under the first.
        resource=[f"{oauth_server.base_url}/api/", "https://files.example.com/"],
    )
    assert started["status"] == "pending" and started["reauthorization"] is False
    assert started["connection_url"].endswith(f"/v1/connections/{cid}")

    authorized = await events.wait_for(
        lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid, WAIT
    )
    assert authorized["status"] == "active"
    assert authorized["data"]["has_refresh_token"] is False
    assert sorted(authorized["data"]["granted_scopes"]) == ["read", "write"]
    # What reached the provider: the grant, the scopes, the audience, both resources.
    sent = (await oauth_server.stats())["last_params"]["client_credentials"]
    assert sent["scope"] == ["read write"]
    assert sent["audience"] == ["https://api.example.com"]
    assert sent["resource"] == [f"{oauth_server.base_url}/api/", "https://files.example.com/"]

    status, credentials = await call(api, "GET", f"/v1/connections/{cid}/credentials")
    assert status == 200, credentials
    first = credentials["access_token"]
    status, me = await oauth_server.call_resource(first)
    assert status == 200 and me["user"] is None and me["client_id"] == client_id
    status, view = await call(api, "GET", f"/v1/connections/{cid}")
    assert view["grant"] == "client_credentials" and view["has_refresh_token"] is False
    assert view["token_params"] == {
        "audience": "https://api.example.com",
        "resource": [f"{oauth_server.base_url}/api/", "https://files.example.com/"],
    }
    assert view["authorization_pending"] is False and view["problem"] is None

    # Due again (as it will be before expiry): the engine asks for the next token the same way.
    await resources.pool.execute("UPDATE connections SET refresh_at = now() WHERE id = $1", cid)
    await leases.wake_workers(resources.pool)
    refreshed = await events.wait_for(
        lambda e: e["type"] == "connection.refreshed" and e["connection_id"] == cid, WAIT
    )
    assert refreshed["data"]["refresh_token_rotated"] is False
    second, _ = await stored_tokens(resources, cid)
    assert second != first
    assert (await oauth_server.call_resource(second))[0] == 200
    assert [e["type"] for e in await of(events, cid)] == [
        "connection.authorization_started",
        "connection.authorized",
        "connection.refreshed",
    ]

    # A runtime's 401 report gets a new token too (there is no refresh token to miss).
    status, reported = await call(
        api, "POST", f"/v1/connections/{cid}/report", json={"status": 401}
    )
    assert status == 200 and reported["action"] == "refreshed", reported
    third, _ = await stored_tokens(resources, cid)
    assert third not in (first, second)

    # Deleting it revokes the token at the provider.
    status, _ = await call(api, "DELETE", f"/v1/connections/{cid}")
    assert status == 202
    await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == cid, WAIT
    )
    assert (await oauth_server.introspect(third))["active"] is False


async def test_starting_it_again_asks_a_token_with_the_new_scopes(
    api, web_server, worker, oauth_server, events, resources, unique
):
    name = unique("m2m-again")
    await service_app(api, oauth_server, name)
    cid = f"{name}-svc"
    await start(api, name, connection_id=cid)
    await events.wait_for(
        lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid, WAIT
    )
    again = await start(api, name, connection_id=cid, scopes=["read", "profile"])
    assert again["status"] == "active" and again["reauthorization"] is True  # token kept
    second = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorized"
            and e["connection_id"] == cid
            and e["data"]["reauthorization"]
        ),
        WAIT,
    )
    assert sorted(second["data"]["granted_scopes"]) == ["profile", "read"]
    token, _ = await stored_tokens(resources, cid)
    assert (await oauth_server.introspect(token))["scope"] == "read profile"


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("wrong secret", "invalid_settings"),
        ("unknown scope", "scope_mismatch"),
        ("grant not enabled", "grant_not_allowed"),
    ],
)
async def test_a_refused_start_fails_with_its_problem_and_leaves_the_app_alone(
    api, web_server, worker, oauth_server, events, unique, case, problem
):
    name = unique("m2m-refused")
    settings: dict[str, Any] = {}
    if case == "grant not enabled":
        # DOT's authorization-code application: it may not use the client credentials grant.
        settings = {
            "client_id": oauth_server.client_id,
            "client_secret": oauth_server.client_secret,
        }
    elif case == "wrong secret":
        settings = {"client_secret": "not-the-secret"}
    await service_app(api, oauth_server, name, **settings)
    cid = f"{name}-svc"
    await start(api, name, connection_id=cid, **({"scopes": ["admin"]} if "scope" in case else {}))
    failed = await events.wait_for(
        lambda e: e["type"] == "connection.authorization_failed" and e["connection_id"] == cid,
        WAIT,
    )
    assert failed["problem"] == problem and failed["status"] == "failed", failed
    status, view = await call(api, "GET", f"/v1/connections/{cid}")
    assert view["status"] == "failed" and view["problem"] == problem
    assert view["authorization_pending"] is False and view["refresh_at"] is None
    assert view["last_error"]["stage"] == "client_credentials"
    status, refused = await call(api, "GET", f"/v1/connections/{cid}/credentials")
    assert status == 409 and refused["problem"] == problem
    # A refused start is the connection's: the app (its user connections) goes on.
    status, app = await call(api, "GET", f"/v1/apps/{name}")
    assert app["paused"] is False, app


async def test_a_transient_failure_is_retried_until_the_token_comes(
    api, web_server, worker, events, unique
):
    """A 503 is not a verdict: the start waits and the engine asks again after its backoff."""
    provider = await FakeProvider().start()
    answers = iter([web.json_response({"error": "temporarily_unavailable"}, status=503)])

    async def token(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        assert form["grant_type"] == "client_credentials"
        return next(answers, None) or web.json_response(
            {"access_token": "service-token", "token_type": "Bearer", "expires_in": 3600}
        )

    provider.handlers["/token"] = token
    name = unique("m2m-503")
    try:
        body = {
            "name": name,
            "client_id": "svc",
            "client_secret": "s",
            "token_url": provider.url("/token"),
        }
        assert (await call(api, "POST", "/v1/apps", json=body))[0] == 201
        cid = f"{name}-svc"
        await start(api, name, connection_id=cid)
        failed = await events.wait_for(
            lambda e: e["type"] == "connection.refresh_failed" and e["connection_id"] == cid, WAIT
        )
        assert failed["status"] == "pending"
        await events.wait_for(
            lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid, WAIT
        )
        assert provider.hits["/token"] == 2
        status, credentials = await call(api, "GET", f"/v1/connections/{cid}/credentials")
        assert status == 200 and credentials["access_token"] == "service-token"
    finally:
        await provider.stop()


async def test_json_requests_repeat_nothing_and_basic_credentials_stay_in_the_header(
    api, web_server, worker, events, unique
):
    """`token_request_format: json` sends the grant as JSON, resources as an array; with
    `client_auth: basic` the secret is in the header and nowhere in the body."""
    provider = await FakeProvider().start()
    seen: list[tuple[str, dict[str, Any], str]] = []

    async def token(request: web.Request) -> web.StreamResponse:
        seen.append(
            (
                request.content_type,
                await request.json(),
                request.headers.get("Authorization", ""),
            )
        )
        return web.json_response({"access_token": "json-token", "token_type": "Bearer"})

    provider.handlers["/token"] = token
    name = unique("m2m-json")
    try:
        body = {
            "name": name,
            "client_id": "svc",
            "client_secret": "s3cret",
            "token_url": provider.url("/token"),
            "client_auth": "basic",
            "token_request_format": "json",
            "scopes": ["a", "b"],
        }
        assert (await call(api, "POST", "/v1/apps", json=body))[0] == 201
        cid = f"{name}-svc"
        await start(
            api,
            name,
            connection_id=cid,
            resource=["https://api.example.com/"],
            token_params={"tenant": "acme"},
        )
        await events.wait_for(
            lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid, WAIT
        )
    finally:
        await provider.stop()
    content_type, sent, authorization = seen[0]
    assert content_type == "application/json"
    assert sent == {
        "grant_type": "client_credentials",
        "scope": "a b",
        "resource": ["https://api.example.com/"],
        "tenant": "acme",
    }
    assert authorization.startswith("Basic ")


async def test_private_key_jwt_authenticates_a_service_connection(
    api, web_server, worker, jwt_server, settings, events, unique
):
    name = unique("m2m-jwt")
    client_id = await jwt_server.register(
        method="private_key_jwt", redirect_uri=settings.redirect_url
    )
    body = {
        "name": name,
        "client_id": client_id,
        "token_url": jwt_server.token_url,
        "client_auth": "private_key_jwt",
        "scopes": ["read"],
    }
    assert (await call(api, "POST", "/v1/apps", json=body))[0] == 201
    _, jwks = await call(api, "GET", f"/v1/apps/{name}/jwks")
    await jwt_server.set_jwks(client_id, jwks)
    cid = f"{name}-svc"
    await start(api, name, connection_id=cid, audience="https://api.example.com")
    await events.wait_for(
        lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid, WAIT
    )
    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["status"], r["assertion"], r["basic"]) for r in seen] == [
        ("client_credentials", 200, True, False)
    ]
    assert seen[0]["audience"] == "https://api.example.com"


async def test_what_a_service_connection_start_refuses(api, web_server, oauth_server, unique):
    name = unique("m2m-bad")
    await service_app(api, oauth_server, name)
    path = f"/v1/apps/{name}/connections"
    for body, field in [
        ({"audience": "https://api.example.com"}, "audience"),
        ({"grant": "client_credentials", "resource": ["/relative"]}, "resource"),
        ({"grant": "client_credentials", "resource": ["https://a.example/#frag"]}, "resource"),
        (
            {"grant": "client_credentials", "token_params": {"grant_type": "password"}},
            "token_params",
        ),
        ({"grant": "implicit"}, "grant"),
    ]:
        status, answer = await call(api, "POST", path, json=body)
        assert status == 400, (body, answer)
        assert field in json.dumps(answer), (body, answer)
    # A user cannot sign in with an app that has no authorization URL.
    status, answer = await call(api, "POST", path, json={})
    assert status == 409 and answer["error"] == "authorization_url_missing", answer
    # One id, one grant.
    cid = f"{name}-svc"
    await start(api, name, connection_id=cid)
    user = unique("m2m-user")
    await create_oauth_app(api, oauth_server, user)
    status, answer = await call(
        api, "POST", f"/v1/apps/{name}/connections", json={"connection_id": cid}
    )
    assert status == 409  # no authorization URL, whatever the id
    status, answer = await call(
        api, "POST", f"/v1/apps/{user}/connections", json={"connection_id": "taken-by-user"}
    )
    assert status == 201
    status, answer = await call(
        api,
        "POST",
        f"/v1/apps/{user}/connections",
        json={"grant": "client_credentials", "connection_id": "taken-by-user"},
    )
    assert status == 409 and answer["error"] == "connection_exists"
    assert "authorization code" in answer["message"]
    status, answer = await call(
        api, "POST", f"/v1/apps/{user}/connect-links", json={"connection_id": cid}
    )
    assert status == 409  # another app's
    # A public client has nothing to authenticate with.
    public = unique("m2m-public")
    body = {"name": public, "client_id": "pub", "token_url": oauth_server.token_url}
    assert (await call(api, "POST", "/v1/apps", json=body))[0] == 201
    status, answer = await call(
        api, "POST", f"/v1/apps/{public}/connections", json={"grant": "client_credentials"}
    )
    assert status == 409 and answer["error"] == "client_credentials_unavailable", answer
