"""`/v1/basic/export` and `/v1/basic/import`: Basic credentials move between environments like
apps do. Names and logins travel, passwords never; imported credentials wait for their password
(409 `awaiting_password`) until it is set; a bad document changes nothing."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp


async def put(api: aiohttp.ClientSession, name: str, login: str, password: str) -> None:
    async with api.put(f"/v1/basic/{name}", json={"login": login, "password": password}) as r:
        assert r.status in (200, 201), await r.text()


async def export(api: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
    async with api.get("/v1/basic/export") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        return await response.text(), await response.json()


async def import_(
    api: aiohttp.ClientSession, document: Any, *, replace: bool = False
) -> tuple[int, Any]:
    params = {"replace": "true"} if replace else None
    async with api.post("/v1/basic/import", json=document, params=params) as response:
        return response.status, await response.json()


async def credentials(api: aiohttp.ClientSession, name: str) -> tuple[int, Any]:
    async with api.get(f"/v1/basic/{name}/credentials") as response:
        return response.status, await response.json()


async def listed(api: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
    async with api.get("/v1/basic") as response:
        return {c["name"]: c for c in (await response.json())["items"]}


async def count(resources, names: list[str]) -> int:
    return await resources.pool.fetchval(
        "SELECT count(*) FROM basic_credentials WHERE name = ANY($1)", names
    )


async def test_the_export_never_holds_a_password(api, unique):
    one, two = unique("exp"), unique("exp")
    passwords = [f"pw-{one}-secret", f"pw-{two}-secret"]
    await put(api, one, "alice", passwords[0])
    await put(api, two, "bob", passwords[1])
    text, document = await export(api)
    assert document["version"] == 1 and document["exported_at"].endswith("Z")
    entries = {c["name"]: c for c in document["credentials"]}
    assert entries[one] == {"name": one, "login": "alice"}
    assert entries[two] == {"name": two, "login": "bob"}
    for password in passwords:
        assert password not in text
        assert base64.b64encode(password.encode()).decode() not in text
    assert "password" not in text


async def test_an_import_waits_for_each_password(api, unique, resources):
    source, target = unique("src"), unique("dst")
    await put(api, source, "carol", "the-real-password")
    _, document = await export(api)
    (entry,) = [c for c in document["credentials"] if c["name"] == source]
    status, result = await import_(api, {"version": 1, "credentials": [{**entry, "name": target}]})
    assert status == 200, result
    assert result == {"created": [target], "updated": [], "unchanged": [], "skipped": []}

    shown = (await listed(api))[target]
    assert shown["login"] == "carol" and shown["awaiting_password"] is True
    assert (await listed(api))[source]["awaiting_password"] is False
    status, answer = await credentials(api, target)
    assert status == 409 and answer["error"] == "awaiting_password"
    assert f"PUT /v1/basic/{target}" in answer["message"]
    assert f"authbroker basic set {target}" in answer["message"]

    await put(api, target, "carol", "set-in-this-environment")
    status, answer = await credentials(api, target)
    assert status == 200 and answer["password"] == "set-in-this-environment"
    assert (await listed(api))[target]["awaiting_password"] is False

    # Again: skipped; with replace, a new login is taken and the password kept.
    again = {"version": 1, "credentials": [{"name": target, "login": "carol"}]}
    status, result = await import_(api, again)
    assert status == 200 and result["skipped"] == [target]
    status, result = await import_(api, again, replace=True)
    assert status == 200 and result["unchanged"] == [target]
    renamed = {"version": 1, "credentials": [{"name": target, "login": "dave"}]}
    status, result = await import_(api, renamed, replace=True)
    assert status == 200 and result["updated"] == [target]
    status, answer = await credentials(api, target)
    assert answer["login"] == "dave" and answer["password"] == "set-in-this-environment"


async def test_one_bad_entry_refuses_the_import_and_changes_nothing(api, unique, resources):
    good, other = unique("good"), unique("other")
    cases = [
        ({"name": other, "login": "a:b"}, "credentials.1.login"),
        ({"name": other, "login": "x", "password": "p"}, "credentials.1.password"),
        ({"name": "bad name", "login": "x"}, "credentials.1.name"),
        ({"name": good, "login": "again"}, "credentials.1.name"),
        ({"name": other}, "credentials.1.login"),
        ({"name": other, "login": "x", "extra": 1}, "credentials.1.extra"),
    ]
    for bad, field in cases:
        document = {"version": 1, "credentials": [{"name": good, "login": "x"}, bad]}
        status, answer = await import_(api, document)
        assert status == 400, (bad, answer)
        assert "nothing was imported" in answer["message"]
        assert [f["field"] for f in answer["fields"]] == [field], answer
        assert await count(resources, [good, other]) == 0
    password_refused = next(
        f for f in (await import_(api, {"version": 1, "credentials": [cases[1][0]]}))[1]["fields"]
    )
    assert "never imported" in password_refused["message"]
    for document in ({"version": 2, "credentials": []}, {"version": 1}, [1]):
        status, answer = await import_(api, document)
        assert status == 400, answer
