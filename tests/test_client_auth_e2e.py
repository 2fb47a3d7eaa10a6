"""Client authentication end to end, through authbroker's real web server and worker, against a
real authorization server on loopback (authlib, tests/jwt_server) that verifies JWT client
assertions (RFC 7523 §2.2), takes JSON token requests, and accepts from each client only the
method it was registered with."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from authbroker import oauth
from authbroker.oauth import jwt
from authbroker.problems import Problem
from tests.helpers import follow_callback
from tests.jwt_server import JWTTestServer


@pytest.fixture(scope="module")
def jwt_server(workdir: Path) -> Iterator[JWTTestServer]:
    server = JWTTestServer(workdir / "jwt_server.log")
    server.start()
    yield server
    server.stop()


async def _json(response: aiohttp.ClientResponse, status: int) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def create_app(
    api: aiohttp.ClientSession, server: JWTTestServer, name: str, client_id: str, **settings: Any
) -> dict[str, Any]:
    body = {
        "name": name,
        "client_id": client_id,
        "authorization_url": server.authorization_url,
        "token_url": server.token_url,
        "revoke_url": server.revoke_url,
        "scopes": ["read"],
        **settings,
    }
    async with api.post("/v1/apps", json=body) as response:
        return await _json(response, 201)


async def connect(
    api: aiohttp.ClientSession, anonymous: aiohttp.ClientSession, server: JWTTestServer, app: str
) -> dict[str, Any]:
    """Authorize a new connection; the connection once the worker has exchanged the code."""
    async with api.post(f"/v1/apps/{app}/connections", json={}) as response:
        started = await _json(response, 201)
    status, _ = await follow_callback(anonymous, await server.approve(started["authorize_url"]))
    assert status == 200
    return await settled(api, started["connection_id"])


async def settled(api: aiohttp.ClientSession, connection_id: str) -> dict[str, Any]:
    """The connection once it is no longer pending (the exchange runs in the worker)."""
    deadline = time.monotonic() + 60
    while True:
        async with api.get(f"/v1/connections/{connection_id}") as response:
            found = await _json(response, 200)
        if found["status"] != "pending" or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def refresh(api: aiohttp.ClientSession, connection_id: str) -> dict[str, Any]:
    async with api.post(f"/v1/connections/{connection_id}/refresh") as response:
        return await _json(response, 200)


async def test_private_key_jwt_exchanges_refreshes_and_revokes(
    api, anonymous, web_server, worker, jwt_server, settings, unique
):
    name = unique("pkjwt")
    client_id = await jwt_server.register(
        method="private_key_jwt", redirect_uri=settings.redirect_url
    )
    app = await create_app(api, jwt_server, name, client_id, client_auth="private_key_jwt")
    assert len(app["key_ids"]) == 1  # made with the app
    async with api.get(f"/v1/apps/{name}/jwks") as response:
        jwks = await _json(response, 200)
    assert [key["kid"] for key in jwks["keys"]] == app["key_ids"]
    assert all(set(key) == {"kty", "kid", "alg", "use", "n", "e"} for key in jwks["keys"])
    await jwt_server.set_jwks(client_id, jwks)  # the operator registers the public key

    connection = await connect(api, anonymous, jwt_server, name)
    assert connection["status"] == "active", connection
    outcome = await refresh(api, connection["connection_id"])
    assert outcome["outcome"] == "refreshed", outcome

    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["status"], r["assertion"], r["basic"]) for r in seen] == [
        ("authorization_code", 200, True, False),
        ("refresh_token", 200, True, False),
    ]
    async with api.delete(f"/v1/connections/{connection['connection_id']}") as response:
        assert response.status == 202
    deadline = time.monotonic() + 60
    while not [r for r in await jwt_server.requests(client_id) if r["endpoint"] == "revocation"]:
        assert time.monotonic() < deadline, "no revocation reached the server"
        await asyncio.sleep(0.05)
    revocations = [r for r in await jwt_server.requests(client_id) if r["endpoint"] == "revocation"]
    assert all(r["status"] == 200 and r["assertion"] for r in revocations), revocations


async def test_client_secret_jwt_exchanges_and_refreshes(
    api, anonymous, web_server, worker, jwt_server, settings, unique
):
    name = unique("csjwt")
    secret = "s3cret-" + unique("x")
    client_id = await jwt_server.register(
        method="client_secret_jwt", redirect_uri=settings.redirect_url, client_secret=secret
    )
    await create_app(
        api, jwt_server, name, client_id, client_auth="client_secret_jwt", client_secret=secret
    )
    connection = await connect(api, anonymous, jwt_server, name)
    assert connection["status"] == "active", connection
    assert (await refresh(api, connection["connection_id"]))["outcome"] == "refreshed"
    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["status"], r["assertion"]) for r in seen] == [
        ("authorization_code", 200, True),
        ("refresh_token", 200, True),
    ]


async def test_an_assertion_signed_with_another_key_is_refused_as_invalid_settings(
    api, anonymous, web_server, worker, jwt_server, settings, unique
):
    name = unique("wrongkey")
    registered = jwt.generate_key("ES256")  # the provider knows this key, not the app's
    client_id = await jwt_server.register(
        method="private_key_jwt",
        redirect_uri=settings.redirect_url,
        jwks=jwt.jwks([registered]),
    )
    await create_app(api, jwt_server, name, client_id, client_auth="private_key_jwt")
    connection = await connect(api, anonymous, jwt_server, name)
    assert connection["status"] == "failed"
    assert connection["problem"] == "invalid_settings", connection
    (refused,) = await jwt_server.requests(client_id)
    assert (refused["error"], refused["assertion"]) == ("invalid_client", True)


async def test_a_new_key_not_yet_registered_falls_back_to_the_previous_one_then_fails(
    api, anonymous, web_server, worker, jwt_server, settings, unique
):
    name = unique("rotate")
    client_id = await jwt_server.register(
        method="private_key_jwt", redirect_uri=settings.redirect_url
    )
    await create_app(api, jwt_server, name, client_id, client_auth="private_key_jwt")
    async with api.get(f"/v1/apps/{name}/jwks") as response:
        await jwt_server.set_jwks(client_id, await _json(response, 200))
    connection = await connect(api, anonymous, jwt_server, name)
    cid = connection["connection_id"]
    assert connection["status"] == "active", connection

    # A new key the provider does not know yet: the previous one still signs successfully.
    async with api.post(f"/v1/apps/{name}/keys", json={"alg": "ES256"}) as response:
        added = await _json(response, 201)
    assert len(added["jwks"]["keys"]) == 2
    assert (await refresh(api, cid))["outcome"] == "refreshed"
    answers = [(r["status"] == 200, r["error"]) for r in await jwt_server.requests(client_id)]
    assert answers[-2:] == [(False, "invalid_client"), (True, None)]

    # Without the previous key, the provider refuses the app: its settings are wrong.
    async with api.post(f"/v1/apps/{name}/keys", json={"keep_previous": False}) as response:
        await _json(response, 201)
    outcome = await refresh(api, cid)
    assert outcome["outcome"] != "refreshed", outcome
    async with api.get(f"/v1/apps/{name}") as response:
        app = await _json(response, 200)
    assert app["paused"] is True and app["paused_problem"] == "invalid_settings", app


@pytest.mark.parametrize(
    ("client_auth", "method"), [("basic", "client_secret_basic"), ("body", "client_secret_post")]
)
async def test_json_token_requests_with_either_placement(
    api, anonymous, web_server, worker, jwt_server, settings, unique, client_auth, method
):
    name = unique("json")
    secret = "json-secret-" + unique("x")
    client_id = await jwt_server.register(
        method=method, redirect_uri=settings.redirect_url, client_secret=secret
    )
    await create_app(
        api,
        jwt_server,
        name,
        client_id,
        client_secret=secret,
        client_auth=client_auth,
        token_request_format="json",
    )
    connection = await connect(api, anonymous, jwt_server, name)
    assert connection["status"] == "active", connection
    assert (await refresh(api, connection["connection_id"]))["outcome"] == "refreshed"
    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["format"], r["status"], r["basic"]) for r in seen] == [
        ("authorization_code", "json", 200, client_auth == "basic"),
        ("refresh_token", "json", 200, client_auth == "basic"),
    ]


async def test_a_refused_placement_corrects_itself_and_says_so(jwt_server, settings, unique):
    """The protocol against the real server: a client set to the body at a server that wants
    Basic gets its tokens with Basic, and the answer says the body was refused."""
    secret = "placed-" + unique("x")
    client_id = await jwt_server.register(
        method="client_secret_basic", redirect_uri=settings.redirect_url, client_secret=secret
    )
    client = oauth.Client(
        client_id=client_id,
        client_secret=secret,
        authorization_url=jwt_server.authorization_url,
        token_url=jwt_server.token_url,
        client_auth="body",
    )
    verifier = oauth.new_code_verifier()
    url = oauth.build_authorize_url(
        client,
        redirect_uri=settings.redirect_url,
        scopes=["read"],
        state="s",
        code_challenge=oauth.code_challenge(verifier),
    )
    location = await jwt_server.approve(url)
    code = parse_qs(urlsplit(location).query)["code"][0]
    async with aiohttp.ClientSession() as session:
        tokens = await oauth.exchange_code(
            session,
            client,
            code=code,
            redirect_uri=settings.redirect_url,
            code_verifier=verifier,
        )
        assert (tokens.placement, tokens.refused_placement) == ("basic", "body")
        wrong = oauth.Client(**{**client.__dict__, "client_secret": "not-the-secret"})
        with pytest.raises(oauth.ProviderRejected) as caught:
            await oauth.refresh_token(session, wrong, refresh_token=tokens.refresh_token or "")
    assert caught.value.problem is Problem.INVALID_SETTINGS
    assert "refused in every placement tried (body: invalid_client" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)
    seen = await jwt_server.requests(client_id)
    assert [(r["basic"], r["error"]) for r in seen] == [
        (False, "invalid_client"),
        (True, None),
        (False, "invalid_client"),
        (True, "invalid_client"),
    ]


async def connected_at_basic_only(
    api: aiohttp.ClientSession,
    anonymous: aiohttp.ClientSession,
    server: JWTTestServer,
    settings: Any,
    name: str,
    *,
    client_auth: str,
) -> tuple[str, str, dict[str, Any]]:
    """An app set to `client_auth` for a client the server takes in a Basic header only, and a
    connection authorized through it: the client id, its secret and the connection."""
    secret = f"{name}-secret"
    client_id = await server.register(
        method="client_secret_basic", redirect_uri=settings.redirect_url, client_secret=secret
    )
    await create_app(api, server, name, client_id, client_secret=secret, client_auth=client_auth)
    return client_id, secret, await connect(api, anonymous, server, name)


async def _app(api: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    async with api.get(f"/v1/apps/{name}") as response:
        return await _json(response, 200)


async def _client_auth_check(api: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    async with api.get(path) as response:
        body = await _json(response, 200)
    return next(c for c in body["checks"] if c["name"] == "client_auth")


async def _mismatch_events(resources: Any, app: str) -> list[dict[str, Any]]:
    """The app's `app.client_auth_mismatch` events, as written with the change."""
    rows = await resources.pool.fetch(
        """SELECT event FROM outbox
           WHERE event->>'type' = 'app.client_auth_mismatch' AND event->>'app' = $1 ORDER BY id""",
        app,
    )
    return [row["event"] for row in rows]


@pytest.mark.parametrize("new_setting", ["basic", "auto"])
async def test_a_fixed_placement_refused_elsewhere_accepted_is_named_until_changed(
    api, anonymous, web_server, worker, events, resources, jwt_server, settings, unique, new_setting
):
    """An app set to the body at a provider that takes only Basic: the tokens are stored, the
    setting stays, and the app says once what to change; changing client_auth clears it."""
    name = unique("placed")
    client_id, secret, connection = await connected_at_basic_only(
        api, anonymous, jwt_server, settings, name, client_auth="body"
    )
    cid = connection["connection_id"]
    assert connection["status"] == "active" and connection["problem"] is None, connection

    app = await _app(api, name)
    assert (app["client_auth"], app["client_auth_works"]) == ("body", "basic")
    seen_at = app["client_auth_works_at"]
    assert seen_at is not None
    event = await events.wait_for(
        lambda e: e["type"] == "app.client_auth_mismatch" and e["app"] == name
    )
    assert event["data"] == {"configured": "body", "worked": "basic"}
    assert event["problem"] == "client_auth_method" and event["connection_id"] == cid
    assert f'PATCH /v1/apps/{name} {{"client_auth": "basic"}}' in event["detail"]
    assert f"authbroker apps update {name} --client-auth basic" in event["detail"]
    assert secret not in json.dumps(event)

    # Refreshes go on the same way (body first, then Basic), and say nothing new.
    assert (await refresh(api, cid))["outcome"] == "refreshed"
    assert (await _app(api, name))["client_auth_works_at"] == seen_at
    assert len(await _mismatch_events(resources, name)) == 1
    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["basic"], r["status"]) for r in seen] == [
        ("authorization_code", False, 401),
        ("authorization_code", True, 200),
        ("refresh_token", False, 401),
        ("refresh_token", True, 200),
    ]

    for path in (f"/v1/apps/{name}/diagnosis", f"/v1/connections/{cid}/diagnosis"):
        check = await _client_auth_check(api, path)
        assert check["status"] == "failing", check
        assert check["evidence"]["client_auth"] == "body"
        assert check["evidence"]["client_auth_works"] == "basic"
        assert check["evidence"]["client_auth_works_seen_at"] is not None
        assert "accepted them in a Basic header" in check["summary"]
        assert f'PATCH /v1/apps/{name} {{"client_auth": "basic"}}' in check["remedy"]

    async with api.patch(f"/v1/apps/{name}", json={"client_auth": new_setting}) as response:
        changed = await _json(response, 200)
    assert (changed["client_auth_works"], changed["client_auth_works_at"]) == (None, None)
    assert (await _client_auth_check(api, f"/v1/apps/{name}/diagnosis"))["status"] == "ok"
    assert (await refresh(api, cid))["outcome"] == "refreshed"
    # Basic now (auto tries it first): one request, nothing refused, nothing new said.
    after = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["basic"], r["status"]) for r in after[4:]] == [
        ("refresh_token", True, 200)
    ]
    assert len(await _mismatch_events(resources, name)) == 1


async def test_every_placement_refused_pauses_the_app_with_each_answer(
    api, anonymous, web_server, worker, events, jwt_server, settings, unique
):
    """A wrong secret is refused in the body and in the Basic header: the app pauses with
    invalid_settings, and its diagnosis and event say where the credentials were refused."""
    name = unique("refused")
    client_id, secret, connection = await connected_at_basic_only(
        api, anonymous, jwt_server, settings, name, client_auth="basic"
    )
    async with api.patch(f"/v1/apps/{name}", json={"client_secret": "not-the-secret"}) as response:
        await _json(response, 200)
    async with api.post(f"/v1/connections/{connection['connection_id']}/refresh") as response:
        assert response.status in (200, 503), await response.text()

    app = await _app(api, name)
    assert (app["paused"], app["paused_problem"]) == (True, "invalid_settings")
    event = await events.wait_for(
        lambda e: e["type"] == "app.settings_invalid" and e["app"] == name
    )
    assert event["data"]["placements_refused"] == ["basic", "body"]
    assert (
        "refused in every placement tried (basic: invalid_client"
        in (event["data"]["provider_description"])
    )
    async with api.get(f"/v1/apps/{name}/diagnosis") as response:
        body = await _json(response, 200)
    check = next(c for c in body["checks"] if c["name"] == "settings")
    assert check["status"] == "failing"
    assert "in every placement tried (basic, body)" in check["summary"]
    assert check["evidence"]["paused_error"]["placements_refused"] == ["basic", "body"]
    assert "not-the-secret" not in json.dumps(body) and secret not in json.dumps(body)
    seen = await jwt_server.requests(client_id)
    assert [(r["grant_type"], r["basic"], r["error"]) for r in seen[-2:]] == [
        ("refresh_token", True, "invalid_client"),
        ("refresh_token", False, "invalid_client"),
    ]
