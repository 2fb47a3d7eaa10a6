"""Mix-up defence (RFC 9207), against the real django-oauth-toolkit server: a callback whose
`iss` is not the app's issuer, or that lacks `iss` where the provider promises it, fails the
authorization with `issuer_mismatch` and its event; its code is never exchanged. A callback that
names the right issuer, or names none where none is promised, goes on as before."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from storage import authorizations, connections
from tests.helpers import create_oauth_app, follow_callback, start_connection

ISSUER = "https://issuer.example"


@pytest.fixture
async def app(api, oauth_server, worker, unique) -> str:
    name = unique("mixup")
    await create_oauth_app(api, oauth_server, name, issuer=ISSUER)
    return name


async def sign_in(api, oauth_server, resources, app: str) -> tuple[dict[str, Any], str]:
    """Start an authorization and approve it at the provider: (started, redirect location).
    `started` keeps the PKCE verifier (wiped once the authorization ends)."""
    started = await start_connection(api, app, connection_id=f"{app}-{uuid.uuid4().hex[:6]}")
    found = await authorizations.get(resources.pool, uuid.UUID(started["authorization_id"]))
    assert found is not None
    started["verifier"] = found.open_verifier(resources.ring)
    started["redirect_uri"] = found.redirect_uri
    return started, await oauth_server.approve(started["authorize_url"])


async def code_still_works(oauth_server, started: dict[str, Any], location: str) -> bool:
    """Whether the provider still takes the callback's code: it was never exchanged."""
    status, _ = await oauth_server.token_request(
        {
            "grant_type": "authorization_code",
            "code": parse_qs(urlsplit(location).query)["code"][0],
            "redirect_uri": started["redirect_uri"],
            "code_verifier": started["verifier"],
        }
    )
    return status == 200


async def test_a_callback_naming_another_issuer_fails_with_its_problem_and_event(
    api, anonymous, oauth_server, resources, events, app
):
    started, location = await sign_in(api, oauth_server, resources, app)
    mixed_up = f"{location}&{urlencode({'iss': 'https://attacker.example'})}"
    status, outcome = await follow_callback(anonymous, mixed_up)
    assert status == 200
    assert outcome["status"] == "failed" and outcome["problem"] == "issuer_mismatch", outcome
    assert "mix-up" in outcome["detail"]

    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorization_failed"
            and e["connection_id"] == started["connection_id"]
        )
    )
    assert event["problem"] == "issuer_mismatch"
    assert event["status"] == "failed"
    assert event["data"] == {
        "provider_error": None,
        "provider_status": None,
        "provider_description": None,
        "reconnect_url": None,  # the app hands out no reconnect links
    }
    found = await connections.get(resources.pool, started["connection_id"])
    assert found is not None and found.status == "failed" and found.access_token is None
    assert found.problem == "issuer_mismatch"
    assert "https://attacker.example" in (found.last_error or {})["description"]
    assert await code_still_works(oauth_server, started, location)


async def test_an_error_callback_naming_another_issuer_is_a_mixup_too(
    api, anonymous, oauth_server, app
):
    started = await start_connection(api, app)
    state = started["authorize_url"].split("state=", 1)[1].split("&", 1)[0]
    query = urlencode({"error": "access_denied", "iss": "https://attacker.example"})
    status, outcome = await follow_callback(anonymous, f"/oauth/callback?state={state}&{query}")
    assert status == 200
    assert outcome["problem"] == "issuer_mismatch", outcome


async def test_the_right_issuer_or_none_goes_on(api, anonymous, oauth_server, resources, app):
    _, location = await sign_in(api, oauth_server, resources, app)
    status, outcome = await follow_callback(anonymous, f"{location}&iss={ISSUER}")
    assert status == 200 and outcome["status"] == "succeeded", outcome
    # Without require_iss, a provider that does not send iss is not refused.
    _, location = await sign_in(api, oauth_server, resources, app)
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded", outcome


@pytest.mark.parametrize("spelling", [ISSUER + "/", "HTTPS://issuer.example", "issuer.example"])
async def test_the_issuer_is_compared_as_written(
    api, anonymous, oauth_server, resources, app, spelling
):
    """RFC 9207 §2.4: simple string comparison; another spelling is another issuer."""
    _, location = await sign_in(api, oauth_server, resources, app)
    status, outcome = await follow_callback(anonymous, f"{location}&{urlencode({'iss': spelling})}")
    assert status == 200 and outcome["problem"] == "issuer_mismatch", outcome


async def test_a_missing_iss_fails_when_the_provider_promises_it(
    api, anonymous, oauth_server, resources, events, app
):
    async with api.patch(f"/v1/apps/{app}", json={"require_iss": True}) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["require_iss"] is True
    started, location = await sign_in(api, oauth_server, resources, app)
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200
    assert outcome["status"] == "failed" and outcome["problem"] == "issuer_mismatch", outcome
    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorization_failed"
            and e["connection_id"] == started["connection_id"]
        )
    )
    assert event["problem"] == "issuer_mismatch"
    assert await code_still_works(oauth_server, started, location)
    # Naming the issuer, it goes through.
    _, location = await sign_in(api, oauth_server, resources, app)
    status, outcome = await follow_callback(anonymous, f"{location}&iss={ISSUER}")
    assert outcome["status"] == "succeeded", outcome


@pytest.mark.parametrize(
    "issuer",
    ["https://issuer.example/?tenant=a", "ftp://issuer.example", "https://issuer.example/#x"],
)
async def test_an_issuer_must_be_an_https_url_without_query(api, unique, oauth_server, issuer):
    async with api.post(
        "/v1/apps",
        json={
            "name": unique("mixup-bad"),
            "client_id": "c",
            "authorization_url": oauth_server.authorization_url,
            "token_url": oauth_server.token_url,
            "issuer": issuer,
        },
    ) as response:
        body = await response.json()
    assert response.status == 400, body
    assert [f["field"] for f in body["fields"]] == ["issuer"]
