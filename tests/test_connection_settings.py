"""Per-connection settings end to end: an app from a preset whose host carries `{tenant}`, its
connections each giving their own tenant, against the real django-oauth-toolkit server reached
under a name of its own per tenant (`TENANT.provider.localhost`, resolved to loopback here).

The server counts what each host name received, so every request a connection causes (the
user's authorize page, the code exchange, a refresh, a revocation) is seen at that
connection's host and nowhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from authbroker import connection_settings, presets
from tests.helpers import follow_callback, resolve_as, revoke_at_provider, stored_tokens
from tests.oauth_server import OAuthTestServer
from worker.jobs import probe_connection

PRESET = "loopback_tenant"
DOMAIN = "provider.localhost"


@pytest.fixture
def tenant_preset(monkeypatch: pytest.MonkeyPatch, oauth_server: OAuthTestServer) -> Iterator[str]:
    """A preset of this test's own, registered through the presets loader beside the real ones:
    the real server under `{tenant}.provider.localhost`, the tenant given per connection."""
    base = f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}"
    entry = {
        "title": "Loopback provider (a host per tenant)",
        "authorization_url": f"{base}/o/authorize/",
        "token_url": f"{base}/o/token/",
        "revoke_url": f"{base}/o/revoke_token/",
        "client_auth": "body",
        "scopes": ["read", "write"],
        "pkce": True,
        "placeholders": ["tenant"],
        "per_connection": ["tenant"],
        "notes": ["Test only."],
    }
    real = presets._load()
    monkeypatch.setattr(presets, "_load", lambda: presets.checked({**real, PRESET: entry}))
    presets._domains.cache_clear()
    yield PRESET
    monkeypatch.undo()
    presets._domains.cache_clear()


@pytest.fixture
def tenants(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two tenants whose hosts resolve to the server (labels unique to this test)."""
    labels = [f"acme-{uuid.uuid4().hex[:8]}", f"globex-{uuid.uuid4().hex[:8]}"]
    for label in labels:
        resolve_as(monkeypatch, f"{label}.{DOMAIN}", "127.0.0.1")
    return labels


@pytest.fixture
async def tenant_app(
    api: aiohttp.ClientSession, oauth_server: OAuthTestServer, tenant_preset: str, unique: Any
) -> dict[str, Any]:
    async with api.post(
        "/v1/apps",
        json={
            "name": unique("tenant"),
            "preset": tenant_preset,
            "client_id": oauth_server.client_id,
            "client_secret": oauth_server.client_secret,
            # Given with the preset: a URL of the app's own may hold the setting too.
            "probe_url": f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}/api/me",
        },
    ) as response:
        assert response.status == 201, await response.text()
        return await response.json()


def host_of(tenant: str) -> str:
    return f"{tenant}.{DOMAIN}"


async def start(api: aiohttp.ClientSession, app: str, **body: Any) -> tuple[int, dict[str, Any]]:
    async with api.post(f"/v1/apps/{app}/connections", json=body) as response:
        return response.status, await response.json()


async def ids_of(events: Any, kind: str) -> set[str]:
    return {e["id"] for e in await events.all() if e["type"] == kind}


async def next_event(events: Any, kind: str, connection_id: str, earlier: set[str]) -> Any:
    """The connection's first event of `kind` not among `earlier`, however long it takes."""
    return await events.wait_for(
        lambda e: (
            e["type"] == kind and e["connection_id"] == connection_id and e["id"] not in earlier
        ),
        timeout=60,
    )


async def authorize(
    api, anonymous, oauth_server, events, app: str, connection_id: str, **body: Any
) -> dict[str, Any]:
    """Start, approve like a browser, come back; returns once the grant is stored."""
    earlier = await ids_of(events, "connection.authorized")
    status, started = await start(api, app, connection_id=connection_id, **body)
    assert status == 201, started
    location = await oauth_server.approve(started["authorize_url"])
    callback_status, _ = await follow_callback(anonymous, location)
    assert callback_status == 200
    await next_event(events, "connection.authorized", connection_id, earlier)
    return started


async def connection(api: aiohttp.ClientSession, connection_id: str) -> dict[str, Any]:
    async with api.get(f"/v1/connections/{connection_id}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def refresh(api: aiohttp.ClientSession, events: Any, connection_id: str) -> None:
    """Ask for a refresh now and wait for it (however long the worker takes)."""
    earlier = await ids_of(events, "connection.refreshed")
    async with api.post(f"/v1/connections/{connection_id}/refresh") as response:
        assert response.status in (200, 503), await response.text()
    await next_event(events, "connection.refreshed", connection_id, earlier)


async def delete(api: aiohttp.ClientSession, events: Any, connection_id: str) -> dict[str, Any]:
    async with api.delete(f"/v1/connections/{connection_id}") as response:
        assert response.status == 202, await response.text()
    return await next_event(events, "connection.revoked", connection_id, set())


# ------------------------------------------------------------------------------ the app


async def test_an_app_from_the_preset_keeps_the_placeholder_and_says_it_needs_it(
    api, tenant_app, oauth_server
):
    assert tenant_app["connection_settings"] == ["tenant"]
    assert urlsplit(tenant_app["token_url"]).hostname == "{tenant}." + DOMAIN
    async with api.get(f"/v1/apps/export?name={tenant_app['name']}") as response:
        exported = (await response.json())["apps"][0]
    assert exported["connection_settings"] == ["tenant"]
    assert exported["authorization_url"] == tenant_app["authorization_url"]


async def test_given_at_creation_the_placeholder_is_filled_for_the_whole_app(
    api, oauth_server, tenant_preset, unique
):
    async with api.post(
        "/v1/apps",
        json={
            "name": unique("tenant-fixed"),
            "preset": tenant_preset,
            "client_id": oauth_server.client_id,
            "placeholders": {"tenant": "one"},
        },
    ) as response:
        assert response.status == 201, await response.text()
        app = await response.json()
    assert app["connection_settings"] == []
    assert urlsplit(app["token_url"]).hostname == f"one.{DOMAIN}"
    status, body = await start(api, app["name"], settings={"tenant": "two"})
    assert status == 400
    assert body["fields"] == [
        {"field": "settings.tenant", "message": "unknown setting: the app takes none"}
    ]


# ------------------------------------------------------------------------------ the flow


async def test_each_connection_reaches_its_own_host_for_every_request(
    api, anonymous, oauth_server, worker, events, tenant_app, tenants
):
    """Two connections of one app, each with its own tenant: the authorize page, the code
    exchange, a probe, a refresh and the revocation of each reach that tenant's host only, and
    its diagnosis speaks of that host."""
    app = tenant_app["name"]
    before = await oauth_server.host_stats()
    for tenant in tenants:
        started = await authorize(
            api,
            anonymous,
            oauth_server,
            events,
            app,
            f"{app}-{tenant}",
            settings={"tenant": tenant},
        )
        assert urlsplit(started["authorize_url"]).hostname == host_of(tenant)
        shown = await connection(api, f"{app}-{tenant}")
        assert shown["status"] == "active" and shown["settings"] == {"tenant": tenant}
    for tenant in tenants:
        assert await probe_connection(worker.ctx, f"{app}-{tenant}") == "ok (200)"
        await refresh(api, events, f"{app}-{tenant}")
        async with api.get(f"/v1/connections/{app}-{tenant}/diagnosis") as response:
            assert response.status == 200
            diagnosis = await response.text()
        assert f"http://{host_of(tenant)}:{oauth_server.port}/o/token/" in diagnosis
        assert "{tenant}" not in diagnosis
    for tenant in tenants:
        revoked = await delete(api, events, f"{app}-{tenant}")
        assert revoked["data"]["revoked_at_provider"] is True

    after = await oauth_server.host_stats()
    for tenant in tenants:
        assert before.get(host_of(tenant)) is None
        assert after[host_of(tenant)] == {
            "authorize": 2,  # the browser's first visit, and its return after signing in
            "token:authorization_code": 1,
            "token:refresh_token": 1,
            "resource": 1,
            # The refresh token, then the access token (already gone with it at DOT).
            "revoke": 2,
        }


async def test_a_reauthorization_keeps_the_settings_or_moves_to_new_ones(
    api, anonymous, oauth_server, worker, events, tenant_app, tenants
):
    app, (first, second) = tenant_app["name"], tenants
    connection_id = f"{app}-moving"
    await authorize(
        api, anonymous, oauth_server, events, app, connection_id, settings={"tenant": first}
    )

    # Without settings: the connection's own.
    again = await authorize(api, anonymous, oauth_server, events, app, connection_id)
    assert urlsplit(again["authorize_url"]).hostname == host_of(first)
    assert (await connection(api, connection_id))["settings"] == {"tenant": first}

    # With other settings: it keeps working at the first host until the new grant arrives,
    # then moves to the second; the first grant is revoked at the first host.
    status, pending = await start(
        api, app, connection_id=connection_id, settings={"tenant": second}
    )
    assert status == 201 and urlsplit(pending["authorize_url"]).hostname == host_of(second)
    assert (await connection(api, connection_id))["settings"] == {"tenant": first}
    before = await oauth_server.host_stats()
    await authorize(
        api, anonymous, oauth_server, events, app, connection_id, settings={"tenant": second}
    )
    moved = await connection(api, connection_id)
    assert moved["settings"] == {"tenant": second}
    assert moved["status"] == "active" and moved["has_refresh_token"] is True
    await refresh(api, events, connection_id)
    after = await oauth_server.host_stats()
    assert after[host_of(first)].get("revoke", 0) == before[host_of(first)].get("revoke", 0) + 1
    assert after[host_of(first)].get("token:refresh_token") is None
    assert after[host_of(second)]["token:refresh_token"] == 1


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        (None, "settings.tenant", "required"),
        ({}, "settings.tenant", "required"),
        ({"tenant": "acme", "region": "eu"}, "settings.region", "unknown setting"),
        ({"tenant": "acme.evil.example"}, "settings.tenant", "one DNS label"),
        ({"tenant": "evil.example/x?"}, "settings.tenant", "one DNS label"),
        ({"tenant": "a@b"}, "settings.tenant", "one DNS label"),
        ({"tenant": "-acme"}, "settings.tenant", "one DNS label"),
        ({"tenant": ""}, "settings.tenant", "one DNS label"),
        ({"tenant": "a" * 64}, "settings.tenant", "one DNS label"),
    ],
)
async def test_bad_settings_are_refused_naming_the_field_and_store_nothing(
    api, resources, tenant_app, unique, given, field, words
):
    connection_id = unique("refused")
    body: dict[str, Any] = {"connection_id": connection_id}
    if given is not None:
        body["settings"] = given
    status, answer = await start(api, tenant_app["name"], **body)
    assert status == 400, answer
    assert answer["error"] == "invalid_request"
    assert [f["field"] for f in answer["fields"]] == [field]
    assert words in answer["fields"][0]["message"]
    async with api.get(f"/v1/connections/{connection_id}") as response:
        assert response.status == 404
    stored = await resources.pool.fetchval(
        "SELECT count(*) FROM authorizations WHERE connection_id = $1", connection_id
    )
    assert stored == 0


async def test_a_setting_whose_host_resolves_to_a_forbidden_address_is_refused(
    api, monkeypatch, resources, tenant_app, unique
):
    """The outbound rules hold for the filled URLs: a label whose name resolves to the cloud
    metadata service is refused when it arrives, naming the setting."""
    label = f"meta-{uuid.uuid4().hex[:8]}"
    resolve_as(monkeypatch, host_of(label), "169.254.169.254")
    connection_id = unique("metadata")
    status, answer = await start(
        api, tenant_app["name"], connection_id=connection_id, settings={"tenant": label}
    )
    assert status == 400, answer
    fields = {f["field"] for f in answer["fields"]}
    assert fields == {"settings.tenant"}
    assert "169.254.169.254" in answer["message"] and "link-local" in answer["message"]
    stored = await resources.pool.fetchval(
        "SELECT count(*) FROM connections WHERE id = $1", connection_id
    )
    assert stored == 0


async def test_an_app_without_a_preset_may_declare_a_setting_in_a_fixed_host(api, unique):
    base = "https://{region}.auth.example.com"
    body = {
        "name": unique("regional"),
        "client_id": "id",
        "client_secret": "secret",
        "authorization_url": f"{base}/authorize",
        "token_url": f"{base}/token",
        "connection_settings": ["region"],
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
    status, started = await start(api, body["name"], settings={"region": "eu-west"})
    assert status == 201, started
    assert urlsplit(started["authorize_url"]).hostname == "eu-west.auth.example.com"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"token_url": "https://auth.example.com/{region}/token"}, "token_url", "first label"),
        ({"token_url": "https://{region}.example/token"}, "token_url", "at least 2"),
        ({"token_url": "https://{region}.0.0.1/token"}, "token_url", "fixed names"),
        ({"token_url": "https://{region}.co.uk/token"}, "token_url", "public suffix"),
        ({"token_url": "https://{region}.herokuapp.com/token"}, "token_url", "public suffix"),
        ({"token_url": "https://{other}.auth.example.com/token"}, "token_url", "not one of"),
        ({"connection_settings": ["region", "zone"]}, "connection_settings", "used by none"),
    ],
)
async def test_a_setting_the_connection_could_move_elsewhere_is_refused(
    api, unique, changes, field, words
):
    """Whoever starts a connection must not choose where the secret goes: a setting only
    fills the first label of a host whose other labels (two at least) the app fixes."""
    base = "https://{region}.auth.example.com"
    body = {
        "name": unique("regional"),
        "client_id": "id",
        "authorization_url": f"{base}/authorize",
        "token_url": f"{base}/token",
        "connection_settings": ["region"],
        **changes,
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 400
        answer = await response.json()
    assert [f["field"] for f in answer["fields"]] == [field]
    assert words in answer["fields"][0]["message"]


async def test_an_app_cannot_newly_need_a_setting_its_live_connections_lack(
    api, anonymous, oauth_server, worker, events, unique
):
    """Its connections keep the settings they were authorized with, none here: the refreshes
    of such a connection would go nowhere, so the change is refused until they are gone."""
    from tests.helpers import create_oauth_app

    name = unique("fixed")
    await create_oauth_app(api, oauth_server, name)
    await authorize(api, anonymous, oauth_server, events, name, f"{name}-c")
    templated = {
        "token_url": f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}/o/token/",
        "authorization_url": f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}/o/authorize/",
        "connection_settings": ["tenant"],
        "client_secret": oauth_server.client_secret,
    }
    async with api.patch(f"/v1/apps/{name}", json=templated) as response:
        assert response.status == 409
        answer = await response.json()
    assert answer["error"] == "connection_settings" and answer["connections"] == 1
    async with api.get(f"/v1/apps/{name}") as response:
        assert (await response.json())["connection_settings"] == []

    # Once its connections are gone, it may.
    await delete(api, events, f"{name}-c")
    async with api.patch(f"/v1/apps/{name}", json=templated) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["connection_settings"] == ["tenant"]


async def test_a_change_keeps_the_settings_where_they_may_be(api, tenant_app, oauth_server):
    """A PATCH is checked against the whole app it makes: the setting cannot move out of the
    host, nor be dropped while a URL still holds it."""
    name = tenant_app["name"]
    secret = oauth_server.client_secret
    changes = [
        (
            {
                "token_url": f"http://x.{DOMAIN}:{oauth_server.port}/{{tenant}}/",
                "client_secret": secret,
            },
            "token_url",
            "first label",
        ),
        ({"connection_settings": []}, "authorization_url", "not one of"),
    ]
    for body, field, words in changes:
        async with api.patch(f"/v1/apps/{name}", json=body) as response:
            assert response.status == 400, await response.text()
            answer = await response.json()
        assert field in [f["field"] for f in answer["fields"]]
        assert any(words in f["message"] for f in answer["fields"] if f["field"] == field)
    async with api.get(f"/v1/apps/{name}") as response:
        unchanged = await response.json()
    assert unchanged["token_url"] == tenant_app["token_url"]
    assert unchanged["connection_settings"] == ["tenant"]


# ------------------------------------------------------------------------------ other starts


async def test_a_connect_link_carries_its_settings_to_the_tenant_host(
    api, anonymous, oauth_server, worker, events, resources, tenant_app, tenants
):
    """A link for a new connection of such an app must say its settings (checked when the link
    is made, not when the user opens it); opening it sends the user to that tenant's host, and
    the connection it makes keeps them."""
    app, tenant = tenant_app["name"], tenants[0]
    for body, words in [({}, "required"), ({"settings": {"tenant": "a.b"}}, "one DNS label")]:
        async with api.post(f"/v1/apps/{app}/connect-links", json=body) as response:
            assert response.status == 400, await response.text()
            answer = await response.json()
        assert [f["field"] for f in answer["fields"]] == ["settings.tenant"]
        assert words in answer["fields"][0]["message"]
    links = await resources.pool.fetchval(
        "SELECT count(*) FROM connect_links l JOIN apps a ON a.id = l.app_id WHERE a.name = $1",
        app,
    )
    assert links == 0

    async with api.post(
        f"/v1/apps/{app}/connect-links", json={"settings": {"tenant": tenant}}
    ) as response:
        assert response.status == 201, await response.text()
        link = await response.json()
    async with anonymous.get(link["url"], allow_redirects=False) as response:
        assert response.status == 302
        authorize_url = response.headers["Location"]
    assert urlsplit(authorize_url).hostname == host_of(tenant)
    earlier = await ids_of(events, "connection.authorized")
    location = await oauth_server.approve(authorize_url)
    status, page = await follow_callback(anonymous, location, json_answer=False)
    assert status == 200 and "Connected" in page
    await next_event(events, "connection.authorized", link["connection_id"], earlier)
    shown = await connection(api, link["connection_id"])
    assert shown["status"] == "active" and shown["settings"] == {"tenant": tenant}
    assert (await oauth_server.host_stats())[host_of(tenant)]["token:authorization_code"] == 1


async def test_a_service_connection_asks_its_tenant_host_for_its_tokens(
    api, oauth_server, worker, events, tenants, unique
):
    """The client credentials grant with a templated token URL: each service connection's
    token requests (the first and the next) go to its own tenant's host."""
    name = unique("tenant-m2m")
    client_id, secret = oauth_server.create_application(
        "https://unused.example/cb", name=name, grant="client-credentials"
    )
    base = f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}"
    async with api.post(
        "/v1/apps",
        json={
            "name": name,
            "client_id": client_id,
            "client_secret": secret,
            "token_url": f"{base}/o/token/",
            "connection_settings": ["tenant"],
            "scopes": ["read"],
        },
    ) as response:
        assert response.status == 201, await response.text()
    body = {"grant": "client_credentials", "connection_id": f"{name}-none"}
    async with api.post(f"/v1/apps/{name}/connections", json=body) as response:
        assert response.status == 400
        answer = await response.json()
    assert [f["field"] for f in answer["fields"]] == ["settings.tenant"]

    before = await oauth_server.host_stats()
    for tenant in tenants:
        cid = f"{name}-{tenant}"
        earlier = await ids_of(events, "connection.authorized")
        async with api.post(
            f"/v1/apps/{name}/connections",
            json={
                "grant": "client_credentials",
                "connection_id": cid,
                "settings": {"tenant": tenant},
            },
        ) as response:
            assert response.status == 202, await response.text()
        await next_event(events, "connection.authorized", cid, earlier)
        assert (await connection(api, cid))["settings"] == {"tenant": tenant}
        await refresh(api, events, cid)
    after = await oauth_server.host_stats()
    for tenant in tenants:
        assert before.get(host_of(tenant)) is None
        assert after[host_of(tenant)] == {"token:client_credentials": 2}


async def test_a_reported_401_is_checked_at_the_connections_own_probe_url(
    api, anonymous, oauth_server, worker, events, resources, tenant_app, tenants
):
    """A token without refresh token, reported with a bare 401: the probe that checks it goes
    to the connection's tenant, whose answer (the token revoked there) fails it."""
    app, tenant = tenant_app["name"], tenants[0]
    connection_id = f"{app}-long-lived"
    await authorize(
        api, anonymous, oauth_server, events, app, connection_id, settings={"tenant": tenant}
    )
    await resources.pool.execute(
        "UPDATE connections SET refresh_token = NULL, expires_at = NULL, refresh_at = NULL "
        "WHERE id = $1",
        connection_id,
    )
    access, _ = await stored_tokens(resources, connection_id)
    before = await oauth_server.host_stats()
    await revoke_at_provider(oauth_server, access, "access_token")
    async with api.post(f"/v1/connections/{connection_id}/report", json={"status": 401}) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["action"] == "invalidated" and answer["confirmed_by"] == "probe", answer
    after = await oauth_server.host_stats()
    probed = after[host_of(tenant)].get("resource", 0) - before[host_of(tenant)].get("resource", 0)
    assert probed == 1


async def test_a_setting_in_capitals_names_the_same_account(
    api, anonymous, oauth_server, worker, events, tenant_app, tenants
):
    """Host labels know no case: authorizing again with `ACME` where the connection has `acme`
    is not a move to another account, so the grant is not revoked."""
    app, tenant = tenant_app["name"], tenants[0]
    connection_id = f"{app}-cased"
    await authorize(
        api, anonymous, oauth_server, events, app, connection_id, settings={"tenant": tenant}
    )
    before = await oauth_server.host_stats()
    again = await authorize(
        api,
        anonymous,
        oauth_server,
        events,
        app,
        connection_id,
        settings={"tenant": tenant.upper()},
    )
    assert urlsplit(again["authorize_url"]).netloc.startswith(f"{tenant}.")
    assert (await connection(api, connection_id))["settings"] == {"tenant": tenant}
    after = await oauth_server.host_stats()
    assert after[host_of(tenant)].get("revoke", 0) == before[host_of(tenant)].get("revoke", 0)


async def test_a_link_whose_settings_no_longer_suit_says_not_now_and_stays_usable(
    api, anonymous, monkeypatch, tenant_app, tenants
):
    """Its tenant's host now resolves to the metadata service: the person holding the link is
    told it cannot be used now, and nothing of the app, its URLs or the address; once the host
    is fine again the same link works."""
    app, tenant = tenant_app["name"], tenants[0]
    async with api.post(
        f"/v1/apps/{app}/connect-links", json={"settings": {"tenant": tenant}}
    ) as response:
        assert response.status == 201, await response.text()
        link = await response.json()
    resolve_as(monkeypatch, host_of(tenant), "169.254.169.254")
    for accept in ("text/html", "application/json"):
        async with anonymous.get(
            link["url"], headers={"Accept": accept}, allow_redirects=False
        ) as response:
            assert response.status == 400
            text = await response.text()
        assert "not ready for sign-ins" in text
        for secret_of_the_operator in ("169.254", tenant, DOMAIN, app, "settings"):
            assert secret_of_the_operator not in text
    resolve_as(monkeypatch, host_of(tenant), "127.0.0.1")
    async with anonymous.get(link["url"], allow_redirects=False) as response:
        assert response.status == 302
        assert urlsplit(response.headers["Location"]).hostname == host_of(tenant)


async def test_a_service_connection_with_a_token_does_not_move_to_other_settings(
    api, oauth_server, worker, events, tenants, unique
):
    """Its token stays until the next arrives and was issued at its own tenant: a start with
    other settings is refused (delete it first), one with the same settings asks a new token."""
    name = unique("tenant-m2m")
    client_id, secret = oauth_server.create_application(
        "https://unused.example/cb", name=name, grant="client-credentials"
    )
    async with api.post(
        "/v1/apps",
        json={
            "name": name,
            "client_id": client_id,
            "client_secret": secret,
            "token_url": f"http://{{tenant}}.{DOMAIN}:{oauth_server.port}/o/token/",
            "connection_settings": ["tenant"],
        },
    ) as response:
        assert response.status == 201, await response.text()
    first, second = tenants
    cid = f"{name}-svc"
    body = {"grant": "client_credentials", "connection_id": cid, "settings": {"tenant": first}}
    earlier = await ids_of(events, "connection.authorized")
    async with api.post(f"/v1/apps/{name}/connections", json=body) as response:
        assert response.status == 202, await response.text()
    await next_event(events, "connection.authorized", cid, earlier)

    moved = {**body, "settings": {"tenant": second}}
    async with api.post(f"/v1/apps/{name}/connections", json=moved) as response:
        assert response.status == 409
        answer = await response.json()
    assert answer["error"] == "connection_settings" and "delete it first" in answer["message"]
    assert (await connection(api, cid))["settings"] == {"tenant": first}
    earlier = await ids_of(events, "connection.authorized")
    async with api.post(f"/v1/apps/{name}/connections", json=body) as response:
        assert response.status == 202, await response.text()
    await next_event(events, "connection.authorized", cid, earlier)
    assert (await oauth_server.host_stats()).get(host_of(second)) is None


@pytest.mark.parametrize(
    ("template", "given"),
    [
        ("https://{tenant}.example.com/token", {"tenant": "acme"}),
        ("https://{tenant}.example.com/token", {}),
        ("https://{tenant}.example.com/{tenant}", {"tenant": "acme", "region": "eu"}),
        ("https://auth.example.com/token", {"tenant": "acme"}),
        ("https://{a}.example.com/{b}", {"a": "x", "b": "y"}),
    ],
)
async def test_postgres_fills_a_token_url_as_the_connection_does(resources, template, given):
    """Endpoint health is looked up in SQL by the URL a connection's requests go to: both
    fillings must agree, or a tenant's outage would be recorded under one URL and looked up
    under another."""
    filled = await resources.pool.fetchval(
        "SELECT connection_token_url($1, $2::jsonb)", template, given
    )
    assert filled == connection_settings.fill(template, given)
