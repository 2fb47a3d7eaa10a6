"""Least privilege for API keys, tried as an attacker holding one runtime's key would: what each
role may do, runtime keys limited to some apps, the rule that guards where an app's secrets go,
the credential audit, revoked keys' event streams, and failed keys throttled per address."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from authbroker.embedded import free_port
from authbroker.events import EventType, make_event
from authbroker.roles import GRANTS, Permission, Role, roles_allowed
from handlers import sse
from handlers.app import create_app
from handlers.openapi import served_operations
from handlers.throttle import FailureLimiter
from services import audit
from storage import api_keys, apps
from tests.helpers import app_body, insert_app, insert_connection, publish, serving


async def new_key(
    api: aiohttp.ClientSession, name: str, role: str, apps: list[str] | None = None
) -> tuple[str, str]:
    """A key made through the API by the admin: (id, key)."""
    body: dict[str, Any] = {"name": name, "role": role}
    if apps is not None:
        body["apps"] = apps
    async with api.post("/v1/api-keys", json=body) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        made = await response.json()
    assert made["role"] == role and made["key"].startswith(f"ab_{made['id']}_")
    return made["id"], made["key"]


@asynccontextmanager
async def as_key(base_url: str, key: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}
    ) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, path, **kwargs) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


def forbidden(status: int, body: Any, *words: str) -> None:
    """A refusal as every one must look: 403 `forbidden`, naming the role and what it lacks."""
    assert status == 403, body
    assert body["error"] == "forbidden", body
    for word in words:
        assert word in body["message"], body


@pytest.fixture
async def two_apps(api, resources, unique) -> dict[str, Any]:
    """Two apps with an active connection each, and a Basic credential: what a runtime of one
    app must not reach of the other."""
    mine, theirs = unique("mine"), unique("theirs")
    found: dict[str, Any] = {"mine": mine, "theirs": theirs}
    for label, name in (("mine", mine), ("theirs", theirs)):
        app = await insert_app(resources, name, "https://provider.example/token")
        await insert_connection(resources, app, f"{name}-c", f"rt-{name}")
        found[f"{label}_connection"] = f"{name}-c"
    for name in (mine, theirs):
        async with api.put(f"/v1/basic/{name}", json={"login": "svc", "password": "pw"}) as r:
            assert r.status == 201
    return found


# ------------------------------------------------------------------------------ the roles


def test_one_table_decides_and_the_roles_differ_as_documented():
    assert GRANTS[Role.ADMIN] == frozenset(Permission)
    assert Permission.CREDENTIALS_READ not in GRANTS[Role.OPERATOR]
    assert Permission.API_KEYS not in GRANTS[Role.OPERATOR]
    assert Permission.APPS_WRITE not in GRANTS[Role.RUNTIME]
    assert Permission.APPS_READ not in GRANTS[Role.RUNTIME]
    assert roles_allowed(Permission.CREDENTIALS_READ) == [Role.ADMIN, Role.RUNTIME]
    assert roles_allowed(Permission.EVENTS) == [Role.ADMIN, Role.OPERATOR, Role.RUNTIME]


def test_every_api_route_names_the_permission_it_needs(resources):
    """Undeclared routes are for admin keys only, a safe default; but each route of the API is
    a decision, so none may be left to it."""
    api = [
        (f"{method} {path}", op)
        for path, method, op in served_operations(create_app(resources))
        if path.startswith("/v1/")
    ]
    assert len(api) > 30
    undeclared = [route for route, op in api if op.permission is None]
    assert not undeclared, f"declare a permission on: {undeclared}"


async def test_a_runtime_key_cannot_change_or_even_read_an_app(api, web_server, unique):
    name = unique("app")
    async with api.post("/v1/apps", json=app_body(name, "s3cret")) as response:
        assert response.status == 201
    _, key = await new_key(api, unique("rt"), "runtime")
    async with as_key(web_server, key) as runtime:
        moved = {"token_url": "https://attacker.example/token"}
        status, body = await call(runtime, "PATCH", f"/v1/apps/{name}", json=moved)
        forbidden(status, body, "runtime role", "apps.write", "roles allowed: admin, operator")
        status, body = await call(
            runtime, "PATCH", f"/v1/apps/{name}", json={**moved, "confirm_secret_destination": True}
        )
        forbidden(status, body, "runtime")
        status, body = await call(runtime, "POST", "/v1/apps", json=app_body(unique("x"), "s"))
        forbidden(status, body, "apps.write")
        for path in (
            "/v1/apps",
            f"/v1/apps/{name}",
            "/v1/apps/export",
            f"/v1/apps/{name}/diagnosis",
            "/v1/basic",
            "/v1/api-keys",
            "/v1/credential-reads",
            f"/v1/apps/{name}/jwks",
            "/v1/webhooks",
        ):
            status, body = await call(runtime, "GET", path)
            forbidden(status, body, "runtime role")
        status, body = await call(runtime, "POST", f"/v1/apps/{name}/keys", json={})
        forbidden(status, body, "apps.write")
        hook = {"url": "https://hooks.example.com/in"}
        status, body = await call(runtime, "POST", "/v1/webhooks", json=hook)
        forbidden(status, body, "webhooks", "roles allowed: admin, operator")
        status, body = await call(runtime, "DELETE", f"/v1/apps/{name}")
        forbidden(status, body, "apps.write")
        status, body = await call(runtime, "POST", "/v1/apps/import", json={"version": 1})
        forbidden(status, body, "apps.write")
        status, body = await call(runtime, "POST", f"/v1/apps/{name}/connections", json={})
        forbidden(status, body, "connections.write")
        # An unknown route is still a 404 (the refusal never hides or invents routes).
        status, body = await call(runtime, "GET", "/v1/no-such-thing")
        assert status == 404
    status, app = await call(api, "GET", f"/v1/apps/{name}")
    assert app["token_url"] == "https://auth.example.com/oauth/token"


async def test_a_limited_runtime_key_reaches_only_its_apps(api, web_server, two_apps, unique):
    mine, theirs = two_apps["mine"], two_apps["theirs"]
    own, other = two_apps["mine_connection"], two_apps["theirs_connection"]
    _, key = await new_key(api, unique("rt"), "runtime", apps=[mine])
    async with as_key(web_server, key) as runtime:
        status, credentials = await call(runtime, "GET", f"/v1/connections/{own}/credentials")
        assert status == 200 and credentials["authorization"].startswith("Bearer at-")
        status, body = await call(runtime, "GET", f"/v1/connections/{other}/credentials")
        forbidden(status, body, f"limited to {mine}", "not among them")
        assert theirs not in body["message"]
        for method, path in (
            ("GET", f"/v1/connections/{other}"),
            ("POST", f"/v1/connections/{other}/refresh"),
        ):
            status, body = await call(runtime, method, path)
            forbidden(status, body, "limited to")
        status, body = await call(
            runtime, "POST", f"/v1/connections/{other}/report", json={"status": 403}
        )
        forbidden(status, body, "limited to")
        status, shown = await call(runtime, "GET", f"/v1/connections/{own}")
        assert status == 200 and shown["app"] == mine

        status, page = await call(runtime, "GET", "/v1/connections", params={"limit": "1000"})
        assert status == 200 and {c["app"] for c in page["items"]} == {mine}
        status, body = await call(runtime, "GET", "/v1/connections", params={"app": theirs})
        forbidden(status, body, "limited to")

        status, basic = await call(runtime, "GET", f"/v1/basic/{mine}/credentials")
        assert status == 200 and basic["password"] == "pw"
        status, body = await call(runtime, "GET", f"/v1/basic/{theirs}/credentials")
        forbidden(status, body, "limited to")

    # A runtime key without apps reaches every app; the admin sees every connection.
    _, unlimited = await new_key(api, unique("rt-all"), "runtime")
    async with as_key(web_server, unlimited) as runtime:
        status, _ = await call(runtime, "GET", f"/v1/connections/{other}/credentials")
        assert status == 200


async def test_an_operator_key_runs_apps_but_never_reads_a_token_or_password(
    api, web_server, two_apps, unique
):
    _, key = await new_key(api, unique("ops"), "operator")
    mine, own = two_apps["mine"], two_apps["mine_connection"]
    async with as_key(web_server, key) as operator:
        for path in (f"/v1/connections/{own}/credentials", f"/v1/basic/{mine}/credentials"):
            status, body = await call(operator, "GET", path)
            forbidden(status, body, "operator role", "credentials.read", "admin, runtime")
        for path in (
            "/v1/apps",
            f"/v1/apps/{mine}",
            f"/v1/connections/{own}",
            f"/v1/connections/{own}/diagnosis",
            "/v1/basic",
            "/v1/credential-reads",
            "/v1/webhooks",
            f"/v1/apps/{mine}/jwks",
        ):
            status, body = await call(operator, "GET", path)
            assert status == 200, (path, body)
        status, body = await call(operator, "GET", "/v1/api-keys")
        forbidden(status, body, "api_keys", "roles allowed: admin")
        status, body = await call(operator, "PATCH", f"/v1/apps/{mine}", json={"scopes": ["a"]})
        assert status == 200 and body["scopes"] == ["a"]
        status, body = await call(
            operator, "POST", "/v1/api-keys", json={"name": "x", "role": "admin"}
        )
        forbidden(status, body, "operator")


async def test_apps_and_roles_of_new_keys_are_checked(api, unique):
    for body, field in (
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "x", "role": "operator", "apps": ["google"]}, "apps"),
        ({"name": "x", "role": "runtime", "apps": ["bad name!"]}, "apps.0"),
        ({"role": "runtime"}, "name"),
    ):
        status, answer = await call(api, "POST", "/v1/api-keys", json=body)
        assert status == 400 and answer["error"] == "invalid_request", answer
        assert field in {f["field"] for f in answer["fields"]}, answer


# ------------------------------------------------------------------------------ where secrets go


async def test_moving_where_secrets_go_needs_the_secret_or_an_admin_confirmation(
    api, web_server, resources, unique
):
    name = unique("dest")
    body = app_body(name, "first-secret", client_secrets_previous=["older-secret"])
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201
    _, key = await new_key(api, unique("ops"), "operator")
    async with as_key(web_server, key) as operator:
        for field in ("token_url", "revoke_url", "probe_url", "authorization_url"):
            moved = {field: f"https://attacker.example/{field}"}
            status, refused = await call(operator, "PATCH", f"/v1/apps/{name}", json=moved)
            assert status == 409 and refused["error"] == "secret_destination", refused
            assert refused["fields"][0]["field"] == field and "client_secret" in refused["message"]
        status, refused = await call(
            operator,
            "PATCH",
            f"/v1/apps/{name}",
            json={"token_url": "https://attacker.example/t", "confirm_secret_destination": True},
        )
        forbidden(status, refused, "operator role", "admin keys only")
        # Unchanged URLs and clearing one move nothing.
        same = {"token_url": body["token_url"], "revoke_url": None, "scopes": ["a"]}
        status, app = await call(operator, "PATCH", f"/v1/apps/{name}", json=same)
        assert status == 200 and app["revoke_url"] is None
        # With the secret in the same request: the caller knows what goes there. The previous
        # secrets, which it did not give, stay behind.
        status, app = await call(
            operator,
            "PATCH",
            f"/v1/apps/{name}",
            json={"token_url": "https://new.example/token", "client_secret": "second-secret"},
        )
        assert status == 200 and app["token_url"] == "https://new.example/token", app
        assert app["client_secrets_previous_set"] is False
    stored = await apps.get(resources.pool, name)
    assert stored is not None
    client = stored.client(resources.ring)
    assert client.client_secret == "second-secret"

    # An admin may confirm instead; the stored secrets then go to the new URL.
    status, app = await call(
        api,
        "PATCH",
        f"/v1/apps/{name}",
        json={"token_url": "https://other.example/token", "confirm_secret_destination": True},
    )
    assert status == 200 and app["token_url"] == "https://other.example/token"
    status, refused = await call(
        api, "PATCH", f"/v1/apps/{name}", json={"probe_url": "https://other.example/me"}
    )
    assert status == 409 and refused["error"] == "secret_destination"


# ------------------------------------------------------------------------------ the audit


async def wait_for_reads(
    api: aiohttp.ClientSession, key_id: str, subject: str, count: int
) -> dict[str, Any]:
    """The key's reads of `subject` once the audit holds `count` (stored every few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        status, shown = await call(api, "GET", f"/v1/api-keys/{key_id}")
        assert status == 200, shown
        found = [r for r in shown["reads"] if r["subject"] == subject]
        if found and found[0]["count"] >= count:
            return found[0]
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.2)


class FailingOnce:
    """A pool whose `fail_at`-th statement fails as if Postgres had gone away."""

    def __init__(self, pool: Any, fail_at: int) -> None:
        self.pool, self.fail_at, self.statements = pool, fail_at, 0

    async def execute(self, *args: Any) -> Any:
        self.statements += 1
        if self.statements == self.fail_at:
            raise ConnectionResetError("connection lost")
        return await self.pool.execute(*args)


async def test_a_flush_of_many_reads_interrupted_midway_loses_and_doubles_nothing(
    resources, unique
):
    """A busy process reads thousands of connections between two flushes; they are stored in
    chunks, and when Postgres fails midway, what was stored stays stored and the rest waits
    for the next flush: each read counted once."""
    key, _ = await api_keys.create(resources.pool, unique("audit"), role="runtime")
    subjects = [f"{unique('c')}-{i}" for i in range(audit.FLUSH_CHUNK * 2 + 50)]
    reads = audit.CredentialReads(resources.pool)
    for i, subject in enumerate(subjects):
        for _ in range(1 + i % 3):
            reads.count(key.id, "connection", subject)
    failing = FailingOnce(resources.pool, fail_at=2)
    reads.pool = failing
    await reads.flush()
    stored = await audit.find(resources.pool, key_id=key.id, limit=10_000)
    assert len(stored) == audit.FLUSH_CHUNK  # the first chunk, before the failure
    reads.count(key.id, "connection", subjects[-1])  # counted meanwhile
    await reads.flush()  # statement 3 on: Postgres is back
    stored = await audit.find(resources.pool, key_id=key.id, limit=10_000)
    counts = {r.subject: r.count for r in stored}
    expected = {s: 1 + i % 3 for i, s in enumerate(subjects)}
    expected[subjects[-1]] += 1
    assert counts == expected


async def test_every_read_of_credentials_is_counted_per_key_and_connection(
    api, web_server, two_apps, unique
):
    mine, own = two_apps["mine"], two_apps["mine_connection"]
    key_id, key = await new_key(api, unique("rt"), "runtime", apps=[mine])
    async with as_key(web_server, key) as runtime:
        for _ in range(3):
            status, _ = await call(runtime, "GET", f"/v1/connections/{own}/credentials")
            assert status == 200
        status, _ = await call(runtime, "GET", f"/v1/basic/{mine}/credentials")
        assert status == 200
        # Refused reads are not reads.
        status, _ = await call(
            runtime, "GET", f"/v1/connections/{two_apps['theirs_connection']}/credentials"
        )
        assert status == 403
    reads = await wait_for_reads(api, key_id, own, 3)
    assert reads["count"] == 3 and reads["kind"] == "connection" and reads["days"] == 1
    assert reads["first_at"] <= reads["last_at"]
    basic = await wait_for_reads(api, key_id, mine, 1)
    assert basic["kind"] == "basic" and basic["count"] == 1
    status, shown = await call(api, "GET", f"/v1/api-keys/{key_id}")
    assert {r["subject"] for r in shown["reads"]} == {own, mine}
    assert shown["last_used_at"] is not None

    # Who read this connection's token: the audit an operator can query.
    _, ops_key = await new_key(api, unique("ops"), "operator")
    async with as_key(web_server, ops_key) as operator:
        status, audit = await call(
            operator, "GET", "/v1/credential-reads", params={"connection": own}
        )
    assert status == 200
    assert [(r["key_id"], r["count"]) for r in audit["items"]] == [(key_id, 3)]
    assert audit["items"][0]["key_name"].startswith("rt-")
    status, audit = await call(api, "GET", "/v1/credential-reads", params={"key": key_id})
    assert {(r["kind"], r["subject"]) for r in audit["items"]} == {
        ("connection", own),
        ("basic", mine),
    }


# ------------------------------------------------------------------------------ events


def refreshed(app: str) -> dict[str, Any]:
    """An event as the relay appends them (other tests read the same stream)."""
    return make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")


async def open_stream(session: aiohttp.ClientSession, **params: str) -> aiohttp.ClientResponse:
    response = await session.get(
        "/v1/events",
        params=params,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=90),
    )
    assert response.status == 200, await response.text()
    return response


async def data_lines(response: aiohttp.ClientResponse, wanted: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < wanted:
        line = await asyncio.wait_for(response.content.readline(), 60)
        assert line, "the stream ended"
        if line.startswith(b"data: "):
            found.append(json.loads(line[6:]))
    return found


async def test_a_limited_key_follows_only_its_apps_events(api, web_server, redis, settings, unique):
    mine, theirs = unique("ev-mine"), unique("ev-theirs")
    _, key = await new_key(api, unique("rt"), "runtime", apps=[mine])
    async with as_key(web_server, key) as runtime:
        status, body = await call(runtime, "GET", "/v1/events", params={"app": theirs})
        forbidden(status, body, "limited to")
        response = await open_stream(runtime)
        try:
            for app in (theirs, mine, theirs, mine):
                await publish(redis, settings, refreshed(app))
            got = await data_lines(response, 2)
        finally:
            response.close()
    assert [e["app"] for e in got] == [mine, mine]


async def test_a_revoked_keys_event_stream_ends(
    api, web_server, redis, settings, unique, monkeypatch
):
    # Streams re-check their key every 60 s; here at every read, so the test need not wait.
    monkeypatch.setattr(sse, "RECHECK", 0.0)
    key_id, key = await new_key(api, unique("rt"), "runtime")
    async with as_key(web_server, key) as runtime:
        response = await open_stream(runtime)
        try:
            await publish(redis, settings, refreshed(unique("revoked")))
            assert await data_lines(response, 1)
            status, _ = await call(api, "DELETE", f"/v1/api-keys/{key_id}")
            assert status == 204
            # Wake the stream's read; at its next check the server ends the stream.
            await publish(redis, settings, refreshed(unique("revoked")))
            await asyncio.wait_for(response.content.read(), 60)
            assert response.content.at_eof()
        finally:
            response.close()
        status, _ = await call(runtime, "GET", "/v1/connections")
        assert status == 401


# ------------------------------------------------------------------------------ API keys


async def test_keys_are_created_listed_shown_and_revoked_by_admins_only(api, web_server, unique):
    name = unique("worker")
    key_id, key = await new_key(api, name, "runtime", apps=["b-app", "a-app", "a-app"])
    status, listed = await call(api, "GET", "/v1/api-keys")
    mine = next(k for k in listed["items"] if k["id"] == key_id)
    assert mine["role"] == "runtime" and mine["apps"] == ["a-app", "b-app"]
    assert "key" not in mine and "key_hash" not in mine and key not in json.dumps(listed)
    status, shown = await call(api, "GET", f"/v1/api-keys/{key_id}")
    assert status == 200 and shown["name"] == name and shown["revoked_at"] is None
    assert key not in json.dumps(shown)
    status, _ = await call(api, "DELETE", f"/v1/api-keys/{key_id}")
    assert status == 204
    status, _ = await call(api, "DELETE", f"/v1/api-keys/{key_id}")
    assert status == 204  # revoking again is fine
    status, shown = await call(api, "GET", f"/v1/api-keys/{key_id}")
    assert shown["revoked_at"] is not None
    async with as_key(web_server, key) as revoked:
        status, _ = await call(revoked, "GET", "/v1/connections")
    assert status == 401
    status, missing = await call(api, "GET", "/v1/api-keys/nope")
    assert status == 404 and missing["error"] == "api_key_not_found"


# ------------------------------------------------------------------------------ throttling


def test_failure_buckets_refill_and_trusted_keys_pass():
    now = [1000.0]
    limiter = FailureLimiter(burst=3, every=2.0, clock=lambda: now[0])
    assert limiter.retry_after("10.0.0.1") is None
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2
    assert limiter.retry_after("10.0.0.2") is None  # per address
    limiter.trust("ab_good_key")
    assert limiter.refused("10.0.0.1", "ab_good_key") is None
    assert limiter.refused("10.0.0.1", "ab_guess") == 2
    now[0] += 1.0
    assert limiter.retry_after("10.0.0.1") == 1
    now[0] += 1.0
    assert limiter.retry_after("10.0.0.1") is None  # one more failure may come
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2
    now[0] += 3600
    assert limiter.retry_after("10.0.0.1") is None
    assert not limiter.trusted("ab_good_key")  # trust lapses too


async def test_invalid_keys_are_throttled_per_address_and_valid_keys_still_pass(
    resources, admin_key
):
    # A server of its own: its buckets start full whatever other tests sent.
    app = create_app(resources)
    async with serving(app, free_port()) as base, aiohttp.ClientSession(base_url=base) as http:
        good = {"Authorization": f"Bearer {admin_key}"}
        async with http.get("/v1/apps", headers=good) as response:
            assert response.status == 200
        statuses = []
        for attempt in range(40):
            bad = {"Authorization": f"Bearer ab_guess{attempt}_x"}
            async with http.get("/v1/apps", headers=bad) as response:
                statuses.append(response.status)
                if response.status == 429:
                    body = await response.json()
                    retry_after = response.headers["Retry-After"]
                    break
        assert statuses[:-1] == [401] * (len(statuses) - 1) and statuses[-1] == 429, statuses
        assert len(statuses) == 31  # a burst of 30, then refused
        assert body["error"] == "too_many_failures" and int(retry_after) >= 1
        # A request without a key is no guess: it still gets its 401.
        async with http.get("/v1/apps") as response:
            assert response.status == 401
        # A key this process accepted before is not slowed down.
        async with http.get("/v1/apps", headers=good) as response:
            assert response.status == 200


async def test_hostile_ids_and_filters_are_refused_not_failed(api):
    for path in ("/v1/api-keys/" + "a" * 300, "/v1/api-keys/a%20b"):
        status, body = await call(api, "GET", path)
        assert status == 404 and body["error"] == "api_key_not_found", (path, body)
    # What storage could not keep is named, wherever it comes.
    status, body = await call(api, "GET", "/v1/api-keys/a%00b")
    assert status == 400 and body["fields"][0]["field"] == "key_id", body
    status, body = await call(api, "GET", "/v1/credential-reads", params={"connection": "a\x00b"})
    assert status == 400 and body["fields"][0]["field"] == "connection", body
    for params in ({"key": "k" * 300}, {"basic": "x\ny"}):
        status, body = await call(api, "GET", "/v1/credential-reads", params=params)
        assert status == 400 and body["error"] == "invalid_filter", (params, body)
    status, body = await call(
        api, "GET", "/v1/credential-reads", params={"connection": "a", "basic": "b"}
    )
    assert status == 400 and body["error"] == "invalid_request"
