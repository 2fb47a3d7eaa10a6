"""`/v1/apps/export` and `/v1/apps/import`: definitions move between environments, secrets
never do, imported apps wait for their secret, and a bad document changes nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers import app_body, sealed_secret
from tests.operator_app import OperatorServer, operator_server  # noqa: F401


@pytest.fixture(scope="session")
async def ops(operator_server: OperatorServer, admin_key: str) -> AsyncIterator[Any]:  # noqa: F811
    async with aiohttp.ClientSession(
        base_url=operator_server.url, headers={"Authorization": f"Bearer {admin_key}"}
    ) as session:
        yield session


async def create(ops: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with ops.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def export(ops: aiohttp.ClientSession, *names: str) -> dict[str, Any]:
    async with ops.get("/v1/apps/export", params=[("name", n) for n in names]) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def import_(
    ops: aiohttp.ClientSession, document: Any, *, replace: bool = False, confirm: bool = False
) -> tuple[int, Any]:
    params = {"replace": "true"} if replace else {}
    if confirm:
        params["confirm_secret_destination"] = "true"
    async with ops.post("/v1/apps/import", json=document, params=params) as response:
        return response.status, await response.json()


async def show(ops: aiohttp.ClientSession, name: str) -> tuple[int, Any]:
    async with ops.get(f"/v1/apps/{name}") as response:
        return response.status, await response.json()


def renamed(document: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(document)
    for app in out["apps"]:
        app["name"] = mapping[app["name"]]
    return out


async def test_export_is_not_taken_for_an_app_name_and_holds_no_secret(ops, unique):
    name = unique("exp")
    secret = f"secret-{name}"
    await create(
        ops,
        app_body(
            name,
            secret,
            client_secrets_previous=["old-secret-1"],
            authorize_params={"prompt": "consent"},
            token_params={"audience": "api"},
            client_auth="basic",
            pkce=False,
            refresh_margin=120,
        ),
    )
    document = await export(ops, name)
    assert document["version"] == 1
    assert [a["name"] for a in document["apps"]] == [name]
    (app,) = document["apps"]
    assert "client_secret" not in app and "client_secrets_previous" not in app
    assert secret not in str(document) and "old-secret-1" not in str(document)
    assert app["authorize_params"] == {"prompt": "consent"}
    assert app["token_params"] == {"audience": "api"}
    assert app["client_auth"] == "basic" and app["pkce"] is False
    assert app["refresh_margin"] == 120
    # Every exported key is a field POST /v1/apps accepts (it would refuse unknown ones).
    from authbroker.schemas import AppCreate

    assert set(app) <= set(AppCreate.model_fields)

    everything = await export(ops)
    assert name in [a["name"] for a in everything["apps"]]


async def test_export_of_an_unknown_name_is_404(ops, unique):
    async with ops.get("/v1/apps/export", params={"name": unique("nope")}) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "app_not_found"


async def test_import_creates_apps_awaiting_their_secret(ops, unique, resources):
    source_a, source_b = unique("src"), unique("src")
    await create(ops, app_body(source_a, "secret-a", scopes=["read"]))
    await create(ops, app_body(source_b, "secret-b", client_auth="query"))
    document = await export(ops, source_a, source_b)
    target_a, target_b = unique("dst"), unique("dst")
    status, result = await import_(ops, renamed(document, {source_a: target_a, source_b: target_b}))
    assert status == 200, result
    assert sorted(result["created"]) == sorted([target_a, target_b])
    assert result["updated"] == [] and result["skipped"] == []

    status, app = await show(ops, target_a)
    assert status == 200
    assert app["awaiting_secret"] is True
    assert app["client_secret_set"] is False
    assert app["scopes"] == ["read"]
    _, other = await show(ops, target_b)
    assert other["client_auth"] == "query"

    # No connection starts before the secret is set …
    async with ops.post(f"/v1/apps/{target_a}/connections", json={}) as response:
        assert response.status == 409
        assert (await response.json())["error"] == "app_awaiting_secret"
    # … and setting it ends the wait.
    async with ops.patch(f"/v1/apps/{target_a}", json={"client_secret": "new-secret"}) as response:
        assert response.status == 200, await response.text()
        patched = await response.json()
    assert patched["awaiting_secret"] is False and patched["client_secret_set"] is True
    async with ops.post(f"/v1/apps/{target_a}/connections", json={}) as response:
        assert response.status == 201, await response.text()


async def test_existing_apps_are_skipped_unless_replaced_and_keep_their_secret(
    ops, unique, resources
):
    name = unique("rep")
    await create(ops, app_body(name, "keep-me", scopes=["read"]))
    _, sealed_before = await sealed_secret(resources, name)
    document = await export(ops, name)
    document["apps"][0]["scopes"] = ["read", "write", "admin"]
    document["apps"][0]["token_url"] = "https://auth.example.com/oauth/token2"

    status, result = await import_(ops, document)
    assert status == 200
    assert result["skipped"] == [name] and result["created"] == []
    _, app = await show(ops, name)
    assert app["scopes"] == ["read"]

    # The new token URL would receive the stored secret: refused unless an admin confirms it.
    status, result = await import_(ops, document, replace=True)
    assert status == 409 and result["error"] == "secret_destination", result
    assert result["fields"][0]["field"] == "token_url" and name in result["message"]
    _, app = await show(ops, name)
    assert app["scopes"] == ["read"]

    status, result = await import_(ops, document, replace=True, confirm=True)
    assert status == 200
    assert result["updated"] == [name]
    _, app = await show(ops, name)
    assert app["scopes"] == ["read", "write", "admin"]
    assert app["token_url"].endswith("/token2")
    assert app["client_secret_set"] is True and app["awaiting_secret"] is False
    _, sealed_after = await sealed_secret(resources, name)
    assert sealed_after == sealed_before

    status, result = await import_(ops, document, replace=True)
    assert status == 200
    assert result["unchanged"] == [name] and result["updated"] == []


async def test_reports_to_invalidate_moves_with_the_app(ops, unique):
    source, target = unique("src"), unique("dst")
    await create(ops, app_body(source, "s", reports_to_invalidate=7))
    document = await export(ops, source)
    assert document["apps"][0]["reports_to_invalidate"] == 7
    status, result = await import_(ops, renamed(document, {source: target}))
    assert status == 200 and result["created"] == [target], result
    assert (await show(ops, target))[1]["reports_to_invalidate"] == 7


async def test_one_invalid_app_refuses_the_whole_import(ops, unique):
    good, bad = unique("good"), unique("bad")
    document = {
        "version": 1,
        "apps": [
            {k: v for k, v in app_body(good, "x").items() if k != "client_secret"},
            {
                **{k: v for k, v in app_body(bad, "x").items() if k != "client_secret"},
                "token_url": "http://auth.example.com/token",
                "client_auht": "basic",
            },
        ],
    }
    status, body = await import_(ops, document)
    assert status == 400, body
    assert bad in body["message"] and "nothing was imported" in body["message"]
    fields = {f["field"]: f["message"] for f in body["fields"]}
    assert "apps.1.token_url" in fields and bad in fields["apps.1.token_url"]
    assert "https" in fields["apps.1.token_url"]
    assert fields["apps.1.client_auht"].endswith("unknown field")
    assert (await show(ops, good))[0] == 404
    assert (await show(ops, bad))[0] == 404


async def test_duplicate_names_and_wrong_versions_are_refused(ops, unique):
    name = unique("dup")
    app = {k: v for k, v in app_body(name, "x").items() if k != "client_secret"}
    status, body = await import_(ops, {"version": 1, "apps": [app, app]})
    assert status == 400
    assert any(f["field"] == "apps.1.name" and "twice" in f["message"] for f in body["fields"])
    status, body = await import_(ops, {"version": 2, "apps": [app]})
    assert status == 400
    assert [f["field"] for f in body["fields"]] == ["version"]
    status, body = await import_(ops, [app])
    assert status == 400 and body["error"] == "invalid_json"
    assert (await show(ops, name))[0] == 404


async def test_a_secret_written_into_the_document_is_used(ops, unique):
    name = unique("withsecret")
    status, result = await import_(ops, {"version": 1, "apps": [app_body(name, "hand-written")]})
    assert status == 200 and result["created"] == [name]
    _, app = await show(ops, name)
    assert app["awaiting_secret"] is False and app["client_secret_set"] is True


async def test_transfer_needs_an_api_key(operator_server):  # noqa: F811
    async with aiohttp.ClientSession(base_url=operator_server.url) as anonymous:
        async with anonymous.get("/v1/apps/export") as response:
            assert response.status == 401
        async with anonymous.post("/v1/apps/import", json={"version": 1, "apps": []}) as response:
            assert response.status == 401
