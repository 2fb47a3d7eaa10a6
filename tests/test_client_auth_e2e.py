"""Client authentication end to end, through authbroker's real web server and worker, against a
real authorization server on loopback (authlib, tests/jwt_server) that verifies JWT client
assertions (RFC 7523 §2.2), takes JSON token requests, and accepts from each client only the
method it was registered with."""

from __future__ import annotations

import asyncio
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
