"""`/v1/basic`: Basic credentials stored sealed and handed to runtimes as a ready header."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from storage.sealing import aad


async def put(
    api: aiohttp.ClientSession, name: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str]:
    async with api.put(f"/v1/basic/{name}", json=body) as response:
        text = await response.text()
        return response.status, await response.json(), text


async def credentials(api: aiohttp.ClientSession, name: str) -> aiohttp.ClientResponse:
    async with api.get(f"/v1/basic/{name}/credentials") as response:
        await response.read()
        return response


def decoded(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(token, validate=True).decode("utf-8")


async def test_put_creates_then_replaces(api, unique):
    name, password = unique("basic"), unique("pw")
    status, body, text = await put(api, name, {"login": "alice", "password": password})
    assert status == 201
    assert body["name"] == name and body["login"] == "alice"
    assert password not in text

    new_password = unique("pw")
    status, body, text = await put(api, name, {"login": "bob", "password": new_password})
    assert status == 200
    assert body["login"] == "bob"
    assert new_password not in text and password not in text

    response = await credentials(api, name)
    got = await response.json()
    assert got["login"] == "bob"
    assert got["password"] == new_password


async def test_list_shows_login_but_never_the_password(api, unique):
    name, password = unique("basic"), unique("pw")
    await put(api, name, {"login": "carol", "password": password})
    async with api.get("/v1/basic") as response:
        assert response.status == 200
        text = await response.text()
        listed = await response.json()
    assert password not in text
    mine = [item for item in listed["items"] if item["name"] == name]
    assert len(mine) == 1
    assert mine[0]["login"] == "carol"
    assert "password" not in mine[0]


@pytest.mark.parametrize(
    ("login", "password"),
    [("svc-user", "plain-password"), ("dörte", "pässwörd-✓"), ("user", "with:colon and space")],
)
async def test_credentials_give_a_ready_basic_header(api, unique, login, password):
    name = unique("basic")
    status, _, _ = await put(api, name, {"login": login, "password": password})
    assert status == 201
    response = await credentials(api, name)
    assert response.status == 200
    got = await response.json()
    assert got == {
        "type": "basic",
        "login": login,
        "password": password,
        "authorization": got["authorization"],
    }
    # RFC 7617: base64 of the UTF-8 encoding of "login:password".
    assert decoded(got["authorization"]) == f"{login}:{password}"


async def test_credentials_are_not_cached(api, unique):
    name = unique("basic")
    await put(api, name, {"login": "dave", "password": unique("pw")})
    response = await credentials(api, name)
    assert response.status == 200
    assert response.headers.get("Cache-Control") == "no-store"


async def test_password_is_sealed_in_the_database(api, unique, resources):
    name, password = unique("basic"), unique("pw")
    await put(api, name, {"login": "erin", "password": password})
    sealed = await resources.pool.fetchval(
        "SELECT password FROM basic_credentials WHERE name = $1", name
    )
    assert isinstance(sealed, bytes)
    assert password.encode() not in sealed
    assert sealed[0] == 0x01
    assert resources.ring.open(sealed, aad=aad("basic_credentials", name, "password")) == password


async def test_login_with_a_colon_is_refused(api, unique):
    name = unique("basic")
    status, body, _ = await put(api, name, {"login": "a:b", "password": "pw"})
    assert status == 400
    assert body["error"] == "invalid_request"
    assert [f["field"] for f in body["fields"]] == ["login"]
    assert ":" in body["fields"][0]["message"]
    response = await credentials(api, name)
    assert response.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"login": "frank"}, "password"),
        ({"password": "pw"}, "login"),
        ({"login": "frank", "password": ""}, "password"),
        ({"login": "frank", "password": "pw", "pasword": "pw"}, "pasword"),
        ({"login": "frank", "password": 42}, "password"),
    ],
)
async def test_invalid_bodies_are_refused_naming_the_field(api, unique, body, field):
    name = unique("basic")
    status, answer, _ = await put(api, name, body)
    assert status == 400
    assert answer["error"] == "invalid_request"
    assert field in [f["field"] for f in answer["fields"]]
    response = await credentials(api, name)
    assert response.status == 404


async def test_refused_update_keeps_the_stored_credential(api, unique):
    name, password = unique("basic"), unique("pw")
    await put(api, name, {"login": "gina", "password": password})
    status, _, _ = await put(api, name, {"login": "x:y", "password": "other"})
    assert status == 400
    got = await (await credentials(api, name)).json()
    assert (got["login"], got["password"]) == ("gina", password)


async def test_delete_then_credentials_are_gone(api, unique):
    name = unique("basic")
    await put(api, name, {"login": "hank", "password": unique("pw")})
    async with api.delete(f"/v1/basic/{name}") as response:
        assert response.status == 204
    response = await credentials(api, name)
    assert response.status == 404
    assert (await response.json())["error"] == "basic_not_found"
    async with api.get("/v1/basic") as response:
        assert name not in [item["name"] for item in (await response.json())["items"]]


async def test_delete_unknown_is_404(api, unique):
    async with api.delete(f"/v1/basic/{unique('missing')}") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "basic_not_found"


async def test_credentials_of_unknown_is_404(api, unique):
    response = await credentials(api, unique("missing"))
    assert response.status == 404
    assert (await response.json())["error"] == "basic_not_found"


async def test_basic_credentials_need_an_api_key(anonymous, unique, api):
    name = unique("basic")
    await put(api, name, {"login": "ivy", "password": unique("pw")})
    async with anonymous.get(f"/v1/basic/{name}/credentials") as response:
        assert response.status == 401
        assert "password" not in await response.text()
