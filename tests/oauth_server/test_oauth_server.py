"""Tests of the test-only OAuth authorization server and its helper.

They drive a real django-oauth-toolkit server over HTTP, the way authbroker will.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from . import ApprovalError, OAuthTestServer, OAuthTestServerError, basic_auth_header, pkce_pair

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
OTHER_REDIRECT_URI = "http://127.0.0.1:9/other/callback"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = OAuthTestServer(tmp_path_factory.mktemp("oauth_server"))
    srv.start(REDIRECT_URI)
    try:
        yield srv
    finally:
        srv.stop()


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(
    srv: OAuthTestServer, *, scope: str = "read write", **kwargs
) -> tuple[str, str, str]:
    """Run consent; return (code, code_verifier, state)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(12)
    location = await srv.approve(
        srv.build_authorize_url(state=state, code_challenge=challenge, scope=scope), **kwargs
    )
    params = query(location)
    assert params["state"] == state
    return params["code"], verifier, state


async def tokens_for(srv: OAuthTestServer, scope: str = "read write") -> dict:
    code, verifier, _ = await authorize(srv, scope=scope)
    status, body = await srv.token_request(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert status == 200, body
    return body


# --------------------------------------------------------------------------- main flow


@pytest.mark.asyncio
async def test_full_authorization_code_flow(server: OAuthTestServer):
    await server.reset_stats()
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.token_url == server.base_url + "/o/token/"

    # Authorization request built by hand, as authbroker would.
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    authorize_url = (
        server.authorization_url
        + "?"
        + "&".join(
            f"{k}={v}"
            for k, v in {
                "response_type": "code",
                "client_id": server.client_id,
                "redirect_uri": "http%3A%2F%2F127.0.0.1%3A9%2Foauth%2Fcallback",
                "scope": "read%20write",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }.items()
        )
    )
    location = await server.approve(authorize_url)
    assert location.startswith(REDIRECT_URI + "?")
    params = query(location)
    assert params["state"] == state
    assert params["code"]
    assert "error" not in params

    async with aiohttp.ClientSession() as http:
        basic = {"Authorization": basic_auth_header(server.client_id, server.client_secret)}
        exchange = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
        async with http.post(server.token_url, data=exchange, headers=basic) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            assert "no-store" in resp.headers.get("Cache-Control", "")
            first = await resp.json()
        assert first["token_type"] == "Bearer"
        assert first["expires_in"] == 3600
        assert first["scope"] == "read write"
        assert first["access_token"] and first["refresh_token"]

        # The code is single use.
        async with http.post(server.token_url, data=exchange, headers=basic) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_grant"

        status, me = await server.call_resource(first["access_token"])
        assert status == 200
        assert me == {"user": "alice", "scope": "read write", "client_id": server.client_id}

        # Refresh: rotation gives a new pair.
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        async with http.post(server.token_url, data=refresh, headers=basic) as resp:
            assert resp.status == 200
            second = await resp.json()
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        assert second["scope"] == "read write"

        assert await server.introspect(first["refresh_token"]) == {
            "active": False,
            "type": "refresh",
            "revoked": True,
            "client_id": server.client_id,
            "username": "alice",
        }
        new_rt = await server.introspect(second["refresh_token"])
        assert new_rt["active"] is True and new_rt["type"] == "refresh"
        # The old access token is deleted by DOT on rotation.
        assert await server.introspect(first["access_token"]) == {"active": False, "type": None}
        new_at = await server.introspect(second["access_token"])
        assert (
            new_at["active"] is True
            and new_at["type"] == "access"
            and new_at["scope"] == "read write"
        )

        # The rotated-out refresh token is refused.
        async with http.post(server.token_url, data=refresh, headers=basic) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_grant"
        # ... which (DOT default, no reuse protection) does not kill the new pair.
        assert (await server.introspect(second["refresh_token"]))["active"] is True

        assert (await server.call_resource(first["access_token"]))[0] == 401
        assert (await server.call_resource(second["access_token"]))[0] == 200

        # Revocation (RFC 7009) of the refresh token also revokes its access token.
        async with http.post(
            server.revoke_url,
            data={"token": second["refresh_token"], "token_type_hint": "refresh_token"},
            headers=basic,
        ) as resp:
            assert resp.status == 200
        assert (await server.introspect(second["refresh_token"]))["active"] is False
        assert (await server.call_resource(second["access_token"]))[0] == 401
        async with http.post(
            server.token_url,
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
            headers=basic,
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_grant"

    assert await server.stats() == {
        "token_requests": {
            "authorization_code": {"200": 1, "400": 1},
            "refresh_token": {"200": 1, "400": 2},
        },
        "revocations": {"200": 1},
        "resource_requests": {"200": 2, "401": 2},
        # No scope, audience or resource in the last code and refresh requests.
        "last_params": {"authorization_code": {}, "refresh_token": {}},
    }
    await server.reset_stats()
    assert await server.stats() == {
        "token_requests": {},
        "revocations": {},
        "resource_requests": {},
        "last_params": {},
    }


# --------------------------------------------------------------------------- consent variants


@pytest.mark.asyncio
async def test_deny_returns_access_denied(server: OAuthTestServer):
    _, challenge = pkce_pair()
    location = await server.approve(
        server.build_authorize_url(state="deny-me", code_challenge=challenge), allow=False
    )
    assert location.startswith(REDIRECT_URI + "?")
    params = query(location)
    assert params == {"error": "access_denied", "state": "deny-me"}


@pytest.mark.asyncio
async def test_user_can_grant_fewer_scopes(server: OAuthTestServer):
    code, verifier, _ = await authorize(server, scope="read write profile", scopes=["read"])
    status, body = await server.token_request(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert status == 200
    assert body["scope"] == "read"
    assert (await server.call_resource(body["access_token"])) == (
        200,
        {"user": "alice", "scope": "read", "client_id": server.client_id},
    )


@pytest.mark.asyncio
async def test_default_scope_and_invalid_scope(server: OAuthTestServer):
    verifier, challenge = pkce_pair()
    location = await server.approve(
        server.build_authorize_url(state="s1", code_challenge=challenge, scope=None)
    )
    status, body = await server.token_request(
        {
            "grant_type": "authorization_code",
            "code": query(location)["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert status == 200 and body["scope"] == "read"

    location = await server.approve(
        server.build_authorize_url(state="s2", code_challenge=challenge, scope="admin")
    )
    assert query(location) == {"error": "invalid_scope", "state": "s2"}


@pytest.mark.asyncio
async def test_unregistered_redirect_uri_is_not_redirected_to(server: OAuthTestServer):
    _, challenge = pkce_pair()
    url = server.build_authorize_url(
        state="s", code_challenge=challenge, redirect_uri="http://127.0.0.1:9/evil"
    )
    with pytest.raises(ApprovalError) as info:
        await server.approve(url)
    assert info.value.status == 400
    assert "Mismatching redirect URI" in info.value.body


@pytest.mark.asyncio
async def test_wrong_password_raises(server: OAuthTestServer):
    _, challenge = pkce_pair()
    with pytest.raises(ApprovalError, match="login failed"):
        await server.approve(
            server.build_authorize_url(state="s", code_challenge=challenge), password="nope"
        )


@pytest.mark.asyncio
async def test_shared_session_stays_logged_in(server: OAuthTestServer):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        for state in ("one", "two"):
            _, challenge = pkce_pair()
            location = await server.approve(
                server.build_authorize_url(state=state, code_challenge=challenge), session=browser
            )
            assert query(location)["state"] == state
        # Logged in: the authorize page now shows the consent form directly.
        _, challenge = pkce_pair()
        async with browser.get(
            server.build_authorize_url(state="x", code_challenge=challenge), allow_redirects=False
        ) as resp:
            assert resp.status == 200
            html = await resp.text()
        assert 'id="authorizationForm"' in html and 'name="allow"' in html


# --------------------------------------------------------------------------- PKCE / client auth


@pytest.mark.asyncio
async def test_pkce_is_required_and_s256_only(server: OAuthTestServer):
    url = (
        server.authorization_url
        + "?"
        + "&".join(
            [
                "response_type=code",
                f"client_id={server.client_id}",
                f"redirect_uri={REDIRECT_URI}",
                "state=nopkce",
            ]
        )
    )
    params = query(await server.approve(url))
    assert params["error"] == "invalid_request" and params["state"] == "nopkce"

    verifier, _ = pkce_pair()
    params = query(
        await server.approve(
            server.build_authorize_url(
                state="plain", code_challenge=verifier, code_challenge_method="plain"
            )
        )
    )
    assert params["error"] == "invalid_request"

    code, verifier, _ = await authorize(server)
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    assert await server.token_request(base) == (
        400,
        {"error": "invalid_request", "error_description": "Code verifier required."},
    )
    status, body = await server.token_request({**base, "code_verifier": pkce_pair()[0]})
    assert (status, body["error"]) == (400, "invalid_grant")


@pytest.mark.asyncio
async def test_client_authentication_methods(server: OAuthTestServer):
    # client_secret_post is accepted as well as client_secret_basic.
    code, verifier, _ = await authorize(server)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    status, body = await server.token_request(data, client_secret="wrong-secret")
    assert status == 401 and body["error"] == "invalid_client"
    status, body = await server.token_request(data, client_secret="wrong-secret", auth="post")
    assert status == 401 and body["error"] == "invalid_client"
    status, body = await server.token_request(data, auth="none")
    assert status == 401 and body["error"] == "invalid_client"
    status, body = await server.token_request(data, auth="post")
    assert status == 200, body

    status, body = await server.token_request(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, auth="post"
    )
    assert status == 200 and body["refresh_token"]


@pytest.mark.asyncio
async def test_other_applications_code_is_refused(server: OAuthTestServer):
    other_id, other_secret = server.create_application(OTHER_REDIRECT_URI, name="other app")
    assert other_id != server.client_id and other_secret

    verifier, challenge = pkce_pair()
    url = server.build_authorize_url(
        state="o", code_challenge=challenge, client_id=other_id, redirect_uri=OTHER_REDIRECT_URI
    )
    location = await server.approve(url)
    assert location.startswith(OTHER_REDIRECT_URI + "?")
    code = query(location)["code"]

    # authbroker's credentials + another app's code -> invalid_grant
    status, body = await server.token_request(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    # The owner can still redeem it.
    status, body = await server.token_request(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": OTHER_REDIRECT_URI,
            "code_verifier": verifier,
        },
        client_id=other_id,
        client_secret=other_secret,
    )
    assert status == 200
    assert (await server.introspect(body["access_token"]))["client_id"] == other_id

    # ... and its refresh token cannot be used by authbroker's client.
    status, err = await server.token_request(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert (status, err["error"]) == (400, "invalid_grant")

    _, public_secret = server.create_application(
        OTHER_REDIRECT_URI, name="public", confidential=False
    )
    assert public_secret == ""


# --------------------------------------------------------------------------- resource / concurrency


@pytest.mark.asyncio
async def test_resource_rejects_bad_tokens_with_401(server: OAuthTestServer):
    status, body, headers = await server.call_resource_raw("not-a-token")
    assert status == 401
    assert body["error"] == "invalid_token"
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]

    status, _, headers = await server.call_resource_raw(None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.asyncio
async def test_server_handles_concurrent_requests(server: OAuthTestServer):
    pairs = await asyncio.gather(*(tokens_for(server) for _ in range(8)))
    await server.reset_stats()
    # (Refreshing deletes the old access token, so use different pairs for the two kinds.)
    results = await asyncio.gather(
        *(
            server.token_request(
                {"grant_type": "refresh_token", "refresh_token": p["refresh_token"]}
            )
            for p in pairs[:4]
        ),
        *(server.call_resource(p["access_token"]) for p in pairs[4:]),
    )
    assert [status for status, _ in results] == [200] * 8
    stats = await server.stats()
    assert stats["token_requests"] == {"refresh_token": {"200": 4}}
    assert stats["resource_requests"] == {"200": 4}


# --------------------------------------------------------------------------- other configurations


@pytest.mark.asyncio
async def test_short_access_token_lifetime_and_reuse_protection(tmp_path):
    srv = OAuthTestServer(tmp_path, access_token_lifetime=1, refresh_reuse_protection=True)
    srv.start(REDIRECT_URI)
    try:
        first = await tokens_for(srv)
        assert first["expires_in"] == 1
        await asyncio.sleep(1.2)
        assert (await srv.call_resource(first["access_token"]))[0] == 401
        status, second = await srv.token_request(
            {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
        assert status == 200
        assert (await srv.call_resource(second["access_token"]))[0] == 200
        # Replaying the rotated-out token revokes the whole family when reuse protection is on.
        status, err = await srv.token_request(
            {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
        assert (status, err["error"]) == (400, "invalid_grant")
        assert (await srv.introspect(second["refresh_token"]))["active"] is False
        assert (await srv.call_resource(second["access_token"]))[0] == 401
    finally:
        srv.stop()
    assert not srv.running


@pytest.mark.asyncio
async def test_refresh_grace_period(tmp_path):
    srv = OAuthTestServer(tmp_path, refresh_grace_seconds=30)
    srv.start(REDIRECT_URI)
    try:
        first = await tokens_for(srv)
        status, second = await srv.token_request(
            {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
        assert status == 200
        # Within the grace period the old refresh token answers with the same new pair.
        status, again = await srv.token_request(
            {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
        assert status == 200
        assert (again["access_token"], again["refresh_token"]) == (
            second["access_token"],
            second["refresh_token"],
        )
    finally:
        srv.stop()


def test_start_failure_is_reported(tmp_path):
    srv = OAuthTestServer(tmp_path, python="/bin/false")
    t0 = time.monotonic()
    with pytest.raises(OAuthTestServerError, match="exited with code 1"):
        srv.start(REDIRECT_URI)
    assert time.monotonic() - t0 < 10
    assert not srv.running


def test_start_is_fast_and_stop_is_idempotent(tmp_path):
    srv = OAuthTestServer(tmp_path)
    srv.start(REDIRECT_URI)
    try:
        assert srv.running
        assert srv.startup_seconds is not None and srv.startup_seconds < 10
        with pytest.raises(OAuthTestServerError):
            srv.start(REDIRECT_URI)
    finally:
        srv.stop()
    srv.stop()
    assert not srv.running
