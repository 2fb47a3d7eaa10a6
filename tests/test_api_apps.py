"""`/v1/apps` as an operator meets it: what goes in, what comes back (never a secret), what is
refused and why, and what deleting an app does to its connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from storage.sealing import aad
from tests.helpers import app_body, sealed_secret


async def create(api: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def get_app(api: aiohttp.ClientSession, name: str) -> tuple[int, Any]:
    async with api.get(f"/v1/apps/{name}") as response:
        return response.status, await response.json()


async def refused(
    api: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> dict[str, Any]:
    """Send a request that must be refused as invalid; the 400 body."""
    async with api.request(method, path, **kwargs) as response:
        body = await response.json()
        assert response.status == 400, body
        return body


def fields_of(body: dict[str, Any]) -> dict[str, str]:
    assert body["error"] == "invalid_request", body
    assert isinstance(body["fields"], list) and body["fields"], body
    for item in body["fields"]:
        assert set(item) == {"field", "message"}, item
        assert item["message"], item
    return {item["field"]: item["message"] for item in body["fields"]}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


# ------------------------------------------------------------------------------ create, show


async def test_create_shows_redirect_url_and_never_the_secret(api, unique, settings):
    name, secret = unique("app"), unique("secret-value")
    async with api.post("/v1/apps", json=app_body(name, secret)) as response:
        assert response.status == 201
        text = await response.text()
        created = await response.json()
    assert secret not in text
    assert created["name"] == name
    assert created["redirect_url"] == settings.redirect_url
    assert created["client_secret_set"] is True
    assert created["client_id"] == f"client-{name}"
    assert created["scopes"] == ["read", "write"]
    assert created["client_auth"] == "body"
    assert created["pkce"] is True
    assert created["paused"] is False

    async with api.get(f"/v1/apps/{name}") as response:
        assert response.status == 200
        text = await response.text()
        shown = await response.json()
    assert secret not in text
    assert shown["redirect_url"] == settings.redirect_url
    assert shown["client_secret_set"] is True

    async with api.get("/v1/apps") as response:
        assert response.status == 200
        text = await response.text()
        listed = await response.json()
    assert secret not in text
    mine = [a for a in listed["items"] if a["name"] == name]
    assert len(mine) == 1
    assert mine[0]["redirect_url"] == settings.redirect_url

    async with api.patch(f"/v1/apps/{name}", json={"scopes": ["read"]}) as response:
        assert response.status == 200
        text = await response.text()
    assert secret not in text


async def test_secrets_rotated_out_are_not_shown_either(api, unique):
    name, secret, previous = unique("app"), unique("secret-now"), unique("secret-before")
    body = app_body(name, secret, client_secrets_previous=[previous])
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201
        text = await response.text()
    assert secret not in text and previous not in text
    assert (await response.json())["client_secrets_previous_set"] is True


async def test_client_secret_is_sealed_in_the_database(api, unique, resources):
    name, secret = unique("app"), unique("secret-value")
    await create(api, app_body(name, secret))
    app_id, sealed = await sealed_secret(resources, name)
    assert isinstance(sealed, bytes)
    assert secret.encode() not in sealed
    assert sealed[0] == 0x01
    assert resources.ring.open(sealed, aad=aad("apps", app_id, "client_secret")) == secret


async def test_unknown_app_is_404(api, unique):
    status, body = await get_app(api, unique("missing"))
    assert status == 404
    assert body["error"] == "app_not_found"


# ------------------------------------------------------------------------------ validation


async def test_missing_required_fields_are_all_named(api):
    body = await refused(api, "POST", "/v1/apps", json={"client_secret": "x"})
    fields = fields_of(body)
    assert {"name", "client_id", "token_url"} <= set(fields)
    # Optional: an app without one makes service connections only (client credentials).
    assert "authorization_url" not in fields


async def test_unknown_field_is_named(api, unique):
    body = await refused(
        api, "POST", "/v1/apps", json=app_body(unique("app"), "s", client_auht="basic")
    )
    fields = fields_of(body)
    assert "client_auht" in fields
    assert "unknown" in fields["client_auht"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("scopes", "read write"), ("scopes", 5), ("refresh_margin", "soon"), ("pkce", "maybe")],
)
async def test_wrong_types_are_named(api, unique, field, value):
    body = await refused(
        api, "POST", "/v1/apps", json=app_body(unique("app"), "s", **{field: value})
    )
    assert set(fields_of(body)) == {field}


async def test_http_url_to_a_remote_host_is_refused_with_a_reason(api, unique):
    body = await refused(
        api,
        "POST",
        "/v1/apps",
        json=app_body(unique("app"), "s", token_url="http://auth.example.com/oauth/token"),
    )
    fields = fields_of(body)
    assert set(fields) == {"token_url"}
    assert "https" in fields["token_url"]


async def test_http_url_to_loopback_is_accepted(api, unique):
    created = await create(
        api,
        app_body(
            unique("app"),
            "s",
            authorization_url="http://127.0.0.1:8000/authorize",
            token_url="http://localhost:8000/token",
        ),
    )
    assert created["authorization_url"] == "http://127.0.0.1:8000/authorize"
    assert created["token_url"] == "http://localhost:8000/token"


@pytest.mark.parametrize(
    ("field", "url", "says"),
    [
        ("token_url", "https://u:p@auth.example.com/token", "credentials"),
        ("token_url", "https://169.254.169.254/token", "link-local"),
        ("revoke_url", "https://[fe80::1]/revoke", "link-local"),
        ("token_url", "https://[::ffff:169.254.169.254]/token", "169.254.169.254"),
        ("authorization_url", "auth.example.com/authorize", "absolute"),
        ("authorization_url", "ftp://auth.example.com/authorize", "https"),
    ],
)
async def test_dangerous_or_malformed_urls_are_refused(api, unique, field, url, says):
    body = await refused(api, "POST", "/v1/apps", json=app_body(unique("app"), "s", **{field: url}))
    fields = fields_of(body)
    assert set(fields) == {field}
    assert says in fields[field]


@pytest.mark.parametrize("host", ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376"])
async def test_link_local_address_in_numeric_form_is_refused(api, unique, host):
    body = await refused(
        api, "POST", "/v1/apps", json=app_body(unique("app"), "s", token_url=f"https://{host}/t")
    )
    assert set(fields_of(body)) == {"token_url"}


@pytest.mark.parametrize("param", ["state", "redirect_uri"])
async def test_authorize_params_cannot_set_protocol_parameters(api, unique, param):
    body = await refused(
        api,
        "POST",
        "/v1/apps",
        json=app_body(unique("app"), "s", authorize_params={param: "x", "prompt": "consent"}),
    )
    fields = fields_of(body)
    assert set(fields) == {"authorize_params"}
    assert param in fields["authorize_params"]


@pytest.mark.parametrize("bad_name", ["has space", "../x", "", "-leading-dash"])
async def test_bad_names_are_refused(api, bad_name):
    body = await refused(api, "POST", "/v1/apps", json=app_body(bad_name, "s"))
    assert set(fields_of(body)) == {"name"}


async def test_client_auth_must_be_one_of_the_placements(api, unique):
    body = await refused(
        api, "POST", "/v1/apps", json=app_body(unique("app"), "s", client_auth="header")
    )
    fields = fields_of(body)
    assert set(fields) == {"client_auth"}
    for allowed in ("body", "basic", "query", "auto"):
        assert allowed in fields["client_auth"]


async def test_invalid_json_is_refused(api):
    body = await refused(
        api,
        "POST",
        "/v1/apps",
        data=b'{"name": "x",',
        headers={"Content-Type": "application/json"},
    )
    assert body["error"] == "invalid_json"


async def test_json_array_is_refused(api, unique):
    body = await refused(api, "POST", "/v1/apps", json=[app_body(unique("app"), "s")])
    assert body["error"] == "invalid_json"


async def test_refused_create_leaves_no_app(api, unique):
    name = unique("app")
    await refused(api, "POST", "/v1/apps", json=app_body(name, "s", client_auth="header"))
    status, _ = await get_app(api, name)
    assert status == 404


# ------------------------------------------------------------------------------ duplicates


async def test_duplicate_name_is_409_and_the_first_app_is_untouched(api, unique, resources):
    name = unique("app")
    await create(api, app_body(name, unique("secret-first")))
    _, before = await get_app(api, name)
    _, sealed_before = await sealed_secret(resources, name)

    second = app_body(
        name,
        unique("secret-second"),
        client_id="someone-else",
        token_url="https://other.example.com/token",
        scopes=["admin"],
    )
    async with api.post("/v1/apps", json=second) as response:
        assert response.status == 409
        body = await response.json()
    assert body["error"] == "app_exists"
    assert name in body["message"]

    status, after = await get_app(api, name)
    assert status == 200
    assert after == before
    assert (await sealed_secret(resources, name))[1] == sealed_before


# ------------------------------------------------------------------------------ PATCH


async def test_patch_changes_given_fields_only(api, unique):
    name = unique("app")
    created = await create(api, app_body(name, "s"))
    patch = {"token_url": "https://auth.example.com/v2/token", "scopes": ["email", "profile"]}
    # A new token URL receives the secret: an admin key confirms it (test_api_key_roles.py).
    confirmed = {**patch, "confirm_secret_destination": True}
    async with api.patch(f"/v1/apps/{name}", json=confirmed) as response:
        assert response.status == 200
        updated = await response.json()
    assert updated["token_url"] == patch["token_url"]
    assert updated["scopes"] == patch["scopes"]
    assert updated["client_id"] == created["client_id"]
    assert updated["authorization_url"] == created["authorization_url"]
    _, shown = await get_app(api, name)
    assert shown["token_url"] == patch["token_url"]
    assert shown["scopes"] == patch["scopes"]


async def test_reports_to_invalidate_is_a_setting_like_the_others(api, unique):
    name = unique("app")
    assert (await create(api, app_body(name, "s")))["reports_to_invalidate"] == 3
    other = unique("app")
    assert (await create(api, app_body(other, "s", reports_to_invalidate=1)))[
        "reports_to_invalidate"
    ] == 1
    async with api.patch(f"/v1/apps/{name}", json={"reports_to_invalidate": 100}) as response:
        assert response.status == 200
        assert (await response.json())["reports_to_invalidate"] == 100
    for bad in (0, 101, None, "three"):
        body = await refused(api, "PATCH", f"/v1/apps/{name}", json={"reports_to_invalidate": bad})
        assert "reports_to_invalidate" in fields_of(body)
    assert (await get_app(api, name))[1]["reports_to_invalidate"] == 100


async def test_patch_cannot_null_a_required_field(api, unique):
    name = unique("app")
    await create(api, app_body(name, "s"))
    _, before = await get_app(api, name)
    body = await refused(api, "PATCH", f"/v1/apps/{name}", json={"client_id": None})
    assert body["error"] == "invalid_request"
    assert "client_id" in body["message"]
    _, after = await get_app(api, name)
    assert after == before


async def test_patch_null_required_field_is_named_in_fields(api, unique):
    name = unique("app")
    await create(api, app_body(name, "s"))
    body = await refused(api, "PATCH", f"/v1/apps/{name}", json={"client_id": None})
    assert "client_id" in fields_of(body)


async def test_patch_with_unknown_field_changes_nothing(api, unique):
    name = unique("app")
    await create(api, app_body(name, "s"))
    _, before = await get_app(api, name)
    body = await refused(
        api,
        "PATCH",
        f"/v1/apps/{name}",
        json={"scopes": ["admin"], "client_auht": "basic"},
    )
    assert "client_auht" in fields_of(body)
    _, after = await get_app(api, name)
    assert after == before


async def test_patch_of_unknown_app_is_404(api, unique):
    async with api.patch(f"/v1/apps/{unique('missing')}", json={"scopes": []}) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "app_not_found"


async def test_patch_client_secret_reseals_and_does_not_show_it(api, unique, resources):
    name, old, new = unique("app"), unique("secret-old"), unique("secret-new")
    await create(api, app_body(name, old))
    app_id, sealed_before = await sealed_secret(resources, name)
    async with api.patch(f"/v1/apps/{name}", json={"client_secret": new}) as response:
        assert response.status == 200
        text = await response.text()
    assert new not in text and old not in text
    _, sealed_after = await sealed_secret(resources, name)
    assert sealed_after != sealed_before
    assert new.encode() not in sealed_after
    assert resources.ring.open(sealed_after, aad=aad("apps", app_id, "client_secret")) == new


async def test_patch_resumes_a_paused_app(api, unique, resources):
    name = unique("app")
    await create(api, app_body(name, "s"))
    await resources.pool.execute(
        "UPDATE apps SET paused_at = now(), paused_problem = 'invalid_settings' WHERE name = $1",
        name,
    )
    _, paused = await get_app(api, name)
    assert paused["paused"] is True
    assert paused["paused_problem"] == "invalid_settings"

    async with api.patch(f"/v1/apps/{name}", json={"client_secret": unique("s")}) as response:
        assert response.status == 200
    _, resumed = await get_app(api, name)
    assert resumed["paused"] is False
    assert resumed["paused_problem"] is None


# ------------------------------------------------------------------------------ DELETE


async def test_delete_app_without_connections(api, unique):
    name = unique("app")
    await create(api, app_body(name, "s"))
    async with api.delete(f"/v1/apps/{name}") as response:
        assert response.status == 204
    status, body = await get_app(api, name)
    assert status == 404 and body["error"] == "app_not_found"
    async with api.delete(f"/v1/apps/{name}") as response:
        assert response.status == 404


async def test_delete_app_with_a_live_connection_is_refused(api, unique):
    name = unique("app")
    await create(api, app_body(name, "s"))
    async with api.post(f"/v1/apps/{name}/connections", json={}) as response:
        assert response.status == 201
    _, before = await get_app(api, name)

    async with api.delete(f"/v1/apps/{name}") as response:
        assert response.status == 409
        body = await response.json()
    assert body["error"] == "app_has_connections"
    assert body["connections"] == 1
    assert "1 live connection" in body["message"]
    assert "cascade" in body["message"]
    status, after = await get_app(api, name)
    assert status == 200 and after == before


async def test_cascade_delete_revokes_connections_then_removes_the_app(api, unique, worker, events):
    name = unique("app")
    await create(api, app_body(name, "s"))
    connection_id = unique("conn")
    async with api.post(
        f"/v1/apps/{name}/connections", json={"connection_id": connection_id}
    ) as response:
        assert response.status == 201

    async with api.delete(f"/v1/apps/{name}", params={"cascade": "true"}) as response:
        assert response.status == 202
        body = await response.json()
    assert body["status"] == "deleting"
    assert body["app"] == name

    async def app_gone() -> bool:
        status, _ = await get_app(api, name)
        return status == 404

    assert await eventually(app_gone), f"app {name} still there after the cascade delete"

    revoked = await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == connection_id
    )
    assert revoked["app"] == name
    assert revoked["status"] == "revoked"
    # A pending connection had no token, so nothing was (or could be) revoked at the provider.
    assert revoked["data"]["revoked_at_provider"] in (None, False)

    # The ended connection went with its app.
    async with api.get(f"/v1/connections/{connection_id}") as response:
        assert response.status == 404
    async with api.get("/v1/connections", params={"app": name}) as response:
        assert (await response.json())["items"] == []


async def test_create_from_a_preset(api, unique, settings):
    name = unique("google")
    async with api.post(
        "/v1/apps",
        json={"name": name, "preset": "google", "client_id": "cid", "client_secret": "sec"},
    ) as response:
        assert response.status == 201, await response.text()
        app = await response.json()
    assert app["preset"] == "google"
    assert app["token_url"] == "https://oauth2.googleapis.com/token"
    assert app["authorize_params"]["access_type"] == "offline"
    assert app["redirect_url"] == settings.redirect_url

    # What the operator gives explicitly wins; placeholders fill the preset's URL templates.
    name = unique("entra")
    async with api.post(
        "/v1/apps",
        json={
            "name": name,
            "preset": "microsoft",
            "placeholders": {"tenant": "contoso"},
            "client_id": "cid",
            "client_secret": "sec",
            "scopes": ["offline_access", "User.Read"],
        },
    ) as response:
        assert response.status == 201, await response.text()
        app = await response.json()
    assert "/contoso/" in app["token_url"]
    assert app["scopes"] == ["offline_access", "User.Read"]


async def test_unknown_preset_is_named(api, unique):
    async with api.post(
        "/v1/apps",
        json={"name": unique("x"), "preset": "nope", "client_id": "cid", "client_secret": "s"},
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "unknown_preset"
    assert "google" in body["message"]  # the known names are listed


async def test_scope_separator_can_be_set_back_to_a_space(api, unique):
    name = unique("sep")
    body = {
        "name": name,
        "client_id": "c",
        "client_secret": "s",
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
        "scope_separator": ",",
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201
    async with api.patch(f"/v1/apps/{name}", json={"scope_separator": " "}) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["scope_separator"] == " "
