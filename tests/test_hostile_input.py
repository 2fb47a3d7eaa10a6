"""Hostile input: callbacks with forged, expired, used, cancelled and other apps' states;
replayed codes; oversized, repeated and contradictory parameters; random query strings and
random API bodies (hypothesis); API keys; app URLs aimed at metadata services; token endpoints
that redirect; token responses that are huge, mislabelled or absurd.

What must hold: never a 5xx, nothing enqueued and nothing changed for a bad request, and every
refusal named; a provider's strange answer ends as a named problem or a retry, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from authbroker import oauth
from authbroker.schemas import AppCreate, AppUpdate
from services import queue
from services.refresh import refresh_one
from storage import api_keys, apps, authorizations, connections
from storage.resources import Resources
from tests.chaos_helpers import FakeProvider, open_stack, private_database, stack_settings
from tests.helpers import create_oauth_app, follow_callback, resolve_as, start_connection
from worker import jobs as sweep
from worker.context import CTX_KEY, WorkerContext, provider_session

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def state_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["state"][0]


def code_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["code"][0]


class EnqueueSpy:
    """Counts the exchange jobs the callback enqueues (and still enqueues them)."""

    def __init__(self, real: Any):
        self.real = real
        self.calls: list[uuid.UUID] = []

    async def __call__(self, res: Resources, authorization_id: uuid.UUID) -> Any:
        self.calls.append(authorization_id)
        return await self.real(res, authorization_id)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> EnqueueSpy:
    enqueue = EnqueueSpy(queue.enqueue_exchange)
    monkeypatch.setattr(queue, "enqueue_exchange", enqueue)
    return enqueue


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw_callback(
    browser: aiohttp.ClientSession, base: str, query: str, *, json_answer: bool = True
) -> tuple[int, Any]:
    """GET /oauth/callback with exactly this (already encoded) query string."""
    headers = {"Accept": "application/json" if json_answer else "text/html"}
    url = URL(f"{base}/oauth/callback?{query}", encoded=True)
    async with browser.get(url, headers=headers, allow_redirects=False) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def app_rows(res: Resources, app: str) -> dict[str, list[dict[str, Any]]]:
    """Everything the callback could change for an app: its authorizations and connections."""
    out = {}
    for table in ("authorizations", "connections"):
        rows = await res.pool.fetch(
            f"""SELECT t.* FROM {table} t JOIN apps a ON a.id = t.app_id
                WHERE a.name = $1 ORDER BY t.id""",
            app,
        )
        out[table] = [dict(r) for r in rows]
    return out


async def authorization(res: Resources, authorization_id: str) -> dict[str, Any]:
    row = await res.pool.fetchrow(
        "SELECT * FROM authorizations WHERE id = $1", uuid.UUID(authorization_id)
    )
    assert row is not None
    return dict(row)


# --------------------------------------------------------------------------------------------
# Callback: states
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        secrets.token_urlsafe(32),
        "' OR 1=1 --",
        "%00",
        "é" * 100,
        "A" * 4096,
        oauth.state_digest("x").hex(),
    ],
    ids=["random", "sql", "nul", "unicode", "max-length", "a-digest"],
)
async def test_forged_state_is_refused_and_changes_nothing(
    api, anonymous, oauth_server, worker, resources, settings, unique, spy, browser, forged
):
    app = unique("forged")
    await create_oauth_app(api, oauth_server, app)
    started = await start_connection(api, app)
    location = await oauth_server.approve(started["authorize_url"])
    before = await app_rows(resources, app)
    query = urlencode({"code": code_of(location), "state": forged})
    status, body = await raw_callback(browser, settings.public_url, query)
    assert status == 400, body
    assert body["error"] == "invalid_state"
    assert spy.calls == []
    assert await app_rows(resources, app) == before
    # The real sign-in is untouched by the attempt.
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded", outcome


async def test_expired_state_is_refused_and_stores_no_code(
    api, oauth_server, worker, resources, settings, unique, spy, browser
):
    app = unique("expired")
    await create_oauth_app(api, oauth_server, app)
    started = await start_connection(api, app)
    location = await oauth_server.approve(started["authorize_url"])
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(started["authorization_id"]),
    )
    for _ in range(2):  # before and after the worker's sweep has ended it
        status, body = await raw_callback(browser, settings.public_url, urlsplit(location).query)
        assert status == 400 and body["error"] == "state_expired", body
        row = await authorization(resources, started["authorization_id"])
        assert row["code"] is None and row["outcome"] in (None, "expired")
        await sweep.expire_authorizations(worker.ctx)
    assert spy.calls == []


async def test_replayed_callback_after_success_changes_nothing(
    api, anonymous, oauth_server, worker, resources, settings, unique, spy, browser
):
    app = unique("replay")
    await create_oauth_app(api, oauth_server, app)
    started = await start_connection(api, app)
    location = await oauth_server.approve(started["authorize_url"])
    status, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"
    assert len(spy.calls) == 1
    before = await app_rows(resources, app)
    for json_answer in (True, False):
        status, body = await raw_callback(
            browser, settings.public_url, urlsplit(location).query, json_answer=json_answer
        )
        assert status == 400
        if json_answer:
            assert body["error"] == "state_used"
        else:
            assert "already used" in body
    assert len(spy.calls) == 1
    assert await app_rows(resources, app) == before


async def test_code_replayed_with_a_fresh_state_is_refused_by_the_provider(
    api, anonymous, oauth_server, worker, resources, unique
):
    """A used code smuggled into another sign-in: authbroker cannot tell, the provider can.
    The second connection fails with `code_rejected`; the first keeps its tokens."""
    app = unique("code-replay")
    await create_oauth_app(api, oauth_server, app)
    first = await start_connection(api, app, connection_id=f"{app}-1")
    location = await oauth_server.approve(first["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"
    kept = await connections.get(resources.pool, f"{app}-1")
    assert kept is not None
    second = await start_connection(api, app, connection_id=f"{app}-2")
    query = urlencode({"code": code_of(location), "state": state_of(second["authorize_url"])})
    status, outcome = await follow_callback(anonymous, f"/oauth/callback?{query}")
    assert status == 200
    assert outcome["status"] == "failed" and outcome["problem"] == "code_rejected", outcome
    after = await connections.get(resources.pool, f"{app}-1")
    assert after is not None and after.version == kept.version
    assert after.refresh_token == kept.refresh_token
    smuggled = await connections.get(resources.pool, f"{app}-2")
    assert smuggled is not None
    assert smuggled.status == "failed" and smuggled.access_token is None


async def test_a_state_binds_the_code_to_its_own_app(
    api, anonymous, oauth_server, worker, resources, unique
):
    """A code issued for app A sent back with a state of app B is exchanged as B's: at B's
    token endpoint, with B's client id and B's PKCE verifier, never at A's. B's sign-in fails;
    A's code is not spent, so A's real sign-in still succeeds."""
    provider = await FakeProvider().start()
    seen: list[dict[str, str]] = []

    async def token_b(request: web.Request) -> web.Response:
        seen.append(dict(await request.post()))
        return web.json_response({"error": "invalid_grant"}, status=400)

    provider.handlers["/b/token"] = token_b
    try:
        app_a, app_b = unique("app-a"), unique("app-b")
        await create_oauth_app(api, oauth_server, app_a)
        async with api.post(
            "/v1/apps",
            json={
                "name": app_b,
                "client_id": "client-of-b",
                "client_secret": "secret-of-b",
                "authorization_url": provider.url("/b/authorize"),
                "token_url": provider.url("/b/token"),
            },
        ) as response:
            assert response.status == 201, await response.text()
        started_a = await start_connection(api, app_a)
        location_a = await oauth_server.approve(started_a["authorize_url"])
        started_b = await start_connection(api, app_b)
        verifier_b = await authorizations_verifier(resources, started_b["authorization_id"])
        codes_before = (await oauth_server.stats())["token_requests"].get("authorization_code", {})

        query = urlencode(
            {"code": code_of(location_a), "state": state_of(started_b["authorize_url"])}
        )
        _, outcome = await follow_callback(anonymous, f"/oauth/callback?{query}")
        assert outcome["status"] == "failed" and outcome["problem"] == "code_rejected", outcome
        assert outcome["app"] == app_b
        assert len(seen) == 1
        assert seen[0]["client_id"] == "client-of-b"
        assert seen[0]["code"] == code_of(location_a)
        assert seen[0]["code_verifier"] == verifier_b
        codes_after = (await oauth_server.stats())["token_requests"].get("authorization_code", {})
        assert codes_after == codes_before  # A's token endpoint never saw it

        _, outcome = await follow_callback(anonymous, location_a)
        assert outcome["status"] == "succeeded" and outcome["app"] == app_a, outcome
    finally:
        await provider.stop()


async def authorizations_verifier(res: Resources, authorization_id: str) -> str | None:
    found = await authorizations.get(res.pool, uuid.UUID(authorization_id))
    assert found is not None
    return found.open_verifier(res.ring)


# --------------------------------------------------------------------------------------------
# Callback: parameters
# --------------------------------------------------------------------------------------------


async def test_oversized_repeated_and_contradictory_parameters_are_refused(
    api, anonymous, oauth_server, worker, resources, settings, unique, spy, browser
):
    """Each bad variant of a real callback is refused without spending its state; the real
    callback still works afterwards."""
    app = unique("params")
    await create_oauth_app(api, oauth_server, app)
    started = await start_connection(api, app)
    location = await oauth_server.approve(started["authorize_url"])
    code, state = code_of(location), state_of(started["authorize_url"])
    before = await app_rows(resources, app)
    variants = {
        "huge code": urlencode({"code": "c" * 5000, "state": state}),
        "huge state": urlencode({"code": code, "state": state + "s" * 5000}),
        "huge extra": urlencode({"code": code, "state": state, "junk": "j" * 5000}),
        "huge query": urlencode({"code": code, "state": state, "junk": "j" * 20_000}),
        "many params": urlencode(
            [("code", code), ("state", state)] + [(f"p{i}", "v") for i in range(3000)]
        ),
        "state twice": urlencode([("code", code), ("state", state), ("state", state)]),
        "code twice": urlencode([("code", code), ("code", code), ("state", state)]),
        "other code twice": urlencode([("code", "forged"), ("code", code), ("state", state)]),
        "code and error": urlencode({"code": code, "error": "access_denied", "state": state}),
        "empty code": urlencode({"code": "", "state": state}),
        "neither": urlencode({"state": state}),
        "no state": urlencode({"code": code}),
        "empty state": urlencode({"code": code, "state": ""}),
        "bad percent": f"code={code}&state={state}%zz",
        "invalid utf-8 state": f"code={code}&state=%ff%fe{state}",
    }
    for name, query in variants.items():
        status, body = await raw_callback(browser, settings.public_url, query)
        assert 400 <= status < 500, (name, status, body)
        assert await app_rows(resources, app) == before, name
    assert spy.calls == []
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded", outcome


# --------------------------------------------------------------------------------------------
# Callback: property test over the query string
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def spent_states(api, anonymous, oauth_server, worker, resources) -> dict[str, Any]:
    """An app whose every state is spent: one used, one expired, one cancelled (deleted)."""
    app = f"spent-{uuid.uuid4().hex[:10]}"
    await create_oauth_app(api, oauth_server, app)
    used = await start_connection(api, app, connection_id=f"{app}-used")
    location = await oauth_server.approve(used["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"
    expired = await start_connection(api, app, connection_id=f"{app}-expired")
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(expired["authorization_id"]),
    )
    await sweep.expire_authorizations(worker.ctx)
    cancelled = await start_connection(api, app, connection_id=f"{app}-cancelled")
    async with api.delete(f"/v1/connections/{app}-cancelled") as response:
        assert response.status == 202
    for _ in range(200):
        found = await connections.get(resources.pool, f"{app}-cancelled")
        if found is not None and found.status == "revoked":
            break
        await asyncio.sleep(0.05)
    return {
        "app": app,
        "states": [
            state_of(used["authorize_url"]),
            state_of(expired["authorize_url"]),
            state_of(cancelled["authorize_url"]),
        ],
        "code": code_of(location),
    }


KEYS = st.sampled_from(
    ["state", "code", "error", "error_description", "error_uri", "iss", "scope", "x", ""]
) | st.text(max_size=8)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
RAW = st.text(
    st.sampled_from("abcXYZ019-._~%&=+;/?:@!$'()*,[]"), max_size=120
)  # an unencoded query: stray %, &, = and all


@PROPERTY
@given(
    pairs=st.lists(
        st.tuples(KEYS, TEXT | st.sampled_from(["STATE0", "STATE1", "STATE2", "CODE"])), max_size=8
    ),
    raw=st.none() | RAW,
    json_answer=st.booleans(),
)
async def test_random_callback_queries_never_5xx_enqueue_or_change_anything(
    spent_states, resources, settings, spy, pairs, raw, json_answer
):
    if raw is not None:
        query = raw
    else:
        values = {f"STATE{i}": s for i, s in enumerate(spent_states["states"])}
        values["CODE"] = spent_states["code"]
        query = urlencode([(k, values.get(v, v)) for k, v in pairs])
    before = await app_rows(resources, spent_states["app"])
    async with aiohttp.ClientSession() as browser:
        status, body = await raw_callback(
            browser, settings.public_url, query, json_answer=json_answer
        )
    assert status < 500, (query, status, body)
    assert 400 <= status < 500, (query, status, body)
    assert spy.calls == []
    assert await app_rows(resources, spent_states["app"]) == before


# --------------------------------------------------------------------------------------------
# The API: property tests over app bodies, and API keys
# --------------------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.sampled_from(
        ["https://ok.example/x", "http://127.0.0.1:9/t", "https://169.254.169.254/", " ", "auto"]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CREATE_FIELDS = st.sampled_from(sorted(AppCreate.model_fields)) | st.text(max_size=10)
UPDATE_FIELDS = st.sampled_from(sorted(AppUpdate.model_fields)) | st.text(max_size=10)


def valid_app_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "client_id": "client",
        "client_secret": "secret",
        "authorization_url": "https://auth.example.com/authorize",
        "token_url": "https://auth.example.com/token",
    }


async def send_json_or_raw(
    api: aiohttp.ClientSession, method: str, path: str, body: Any
) -> tuple[int, Any]:
    if isinstance(body, bytes):
        kwargs: dict[str, Any] = {"data": body, "headers": {"Content-Type": "application/json"}}
    else:
        kwargs = {"json": body}
    async with api.request(method, path, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def all_apps(res: Resources) -> list[dict[str, Any]]:
    return [dict(r) for r in await res.pool.fetch("SELECT * FROM apps ORDER BY id")]


@PROPERTY
@given(
    body=st.dictionaries(CREATE_FIELDS, JSON_VALUES, max_size=8)
    | JSON_VALUES
    | st.binary(max_size=40)
    | st.builds(
        lambda extra, suffix: {**valid_app_body(f"hyp-{suffix}"), **extra},
        st.dictionaries(CREATE_FIELDS, JSON_VALUES, max_size=2),
        st.uuids().map(lambda u: u.hex[:12]),
    )
)
async def test_random_app_bodies_never_5xx_and_refusals_change_nothing(api, resources, body):
    before = await all_apps(resources)
    status, answer = await send_json_or_raw(api, "POST", "/v1/apps", body)
    assert status < 500, (body, status, answer)
    if status == 201:
        async with api.delete(f"/v1/apps/{answer['name']}") as response:
            assert response.status == 204
        return
    assert status in (400, 409, 413), (status, answer)
    assert isinstance(answer, dict) and answer["error"] and answer["message"], answer
    assert await all_apps(resources) == before


@pytest.fixture(scope="module")
async def patch_target(api) -> str:
    name = f"patch-{uuid.uuid4().hex[:10]}"
    async with api.post("/v1/apps", json=valid_app_body(name)) as response:
        assert response.status == 201
    return name


@PROPERTY
@given(
    body=st.dictionaries(UPDATE_FIELDS, JSON_VALUES, max_size=6)
    | JSON_VALUES
    | st.binary(max_size=40)
)
async def test_random_patch_bodies_never_5xx_and_refusals_change_nothing(
    api, resources, patch_target, body
):
    before = await all_apps(resources)
    status, answer = await send_json_or_raw(api, "PATCH", f"/v1/apps/{patch_target}", body)
    assert status < 500, (body, status, answer)
    if status == 200:
        assert answer["name"] == patch_target
        return
    assert status in (400, 413), (status, answer)
    assert isinstance(answer, dict) and answer["error"] and answer["message"], answer
    assert await all_apps(resources) == before


async def test_api_keys_missing_wrong_malformed_or_revoked_get_401(web_server, resources, unique):
    key_row, key = await api_keys.create(resources.pool, "hostile-test")
    other_row, other_key = await api_keys.create(resources.pool, "hostile-test-2")
    key_id, secret = key.split("_")[1], key.split("_")[2]
    name = unique("keyed")

    async def status_with(headers: dict[str, str], method: str = "GET") -> int:
        async with aiohttp.ClientSession(base_url=web_server) as session:
            if method == "GET":
                request = session.get("/v1/apps", headers=headers)
            else:
                request = session.post("/v1/apps", headers=headers, json=valid_app_body(name))
            async with request as response:
                if response.status == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    assert (await response.json())["error"] == "unauthorized"
                return response.status

    assert await status_with({"Authorization": f"Bearer {key}"}) == 200
    refused = {
        "none": {},
        "empty": {"Authorization": ""},
        "bearer only": {"Authorization": "Bearer "},
        "basic scheme": {"Authorization": f"Basic {key}"},
        "wrong secret": {"Authorization": f"Bearer ab_{key_id}_{secret[:-2]}xx"},
        "other key's secret": {"Authorization": f"Bearer ab_{key_id}_{other_key.split('_')[2]}"},
        "unknown id": {"Authorization": f"Bearer ab_000000000000_{secret}"},
        "no prefix": {"Authorization": f"Bearer {secret}"},
        "too long": {"Authorization": f"Bearer {key}{'x' * 300}"},
        "non-ascii": {"Authorization": f"Bearer {key}é"},
        "sql": {"Authorization": "Bearer ab_' OR 1=1 --_x"},
    }
    for label, headers in refused.items():
        assert await status_with(headers) == 401, label
        assert await status_with(headers, "POST") == 401, label
    await api_keys.revoke(resources.pool, key_row.id)
    assert await status_with({"Authorization": f"Bearer {key}"}) == 401
    assert await status_with({"Authorization": f"Bearer {key}"}, "POST") == 401
    assert await apps.get(resources.pool, name) is None  # no refused write went through
    assert await status_with({"Authorization": f"Bearer {other_key}"}) == 200
    await api_keys.revoke(resources.pool, other_row.id)


# --------------------------------------------------------------------------------------------
# App URLs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://provider.example/token",
        "ftp://provider.example/token",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https://user:pass@provider.example/token",
        "https://user@provider.example/token",
        "https://:pass@provider.example/token",
        "https://169.254.169.254/latest/meta-data",
        "https://169.254.169.254:443/token",
        "https://2852039166/token",
        "https://0xa9fea9fe/token",
        "https://0xa9.0xfe.0xa9.0xfe/token",
        "https://0251.0376.0251.0376/token",
        "https://169.254.43518/token",
        "https://[::ffff:169.254.169.254]/token",
        "https://[::ffff:a9fe:a9fe]/token",
        "https://[fe80::1]/token",
        "https://0.0.0.0/token",
    ],
)
@pytest.mark.parametrize("field", ["token_url", "authorization_url", "revoke_url"])
async def test_dangerous_app_urls_are_refused(api, resources, unique, field, url):
    name = unique("url")
    status, body = await send_json_or_raw(
        api, "POST", "/v1/apps", {**valid_app_body(name), field: url}
    )
    assert status == 400, body
    assert any(f["field"] == field for f in body["fields"]), body
    assert await apps.get(resources.pool, name) is None
    # Nor can an existing app be moved there.
    good = unique("url-ok")
    async with api.post("/v1/apps", json=valid_app_body(good)) as response:
        assert response.status == 201
    status, body = await send_json_or_raw(api, "PATCH", f"/v1/apps/{good}", {field: url})
    assert status == 400, body
    found = await apps.get(resources.pool, good)
    assert found is not None and url not in (found.token_url, found.authorization_url)
    assert found.revoke_url != url
    async with api.delete(f"/v1/apps/{good}") as response:
        assert response.status == 204


@pytest.mark.parametrize(
    "host",
    [
        "169\u3002254\u3002169\u3002254",  # ideographic full stops
        "\u2460\u2465\u2468.\u2461\u2464\u2463.\u2460\u2465\u2468.\u2461\u2464\u2463",  # circled
        "\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14",  # fullwidth
    ],
    ids=["ideographic-dots", "circled-digits", "fullwidth-digits"],
)
async def test_unicode_spellings_of_the_metadata_address_are_refused(api, resources, unique, host):
    url = f"https://{host}/token"
    assert URL(url).host == "169.254.169.254"  # what the HTTP client would connect to
    name = unique("url-unicode")
    status, body = await send_json_or_raw(
        api, "POST", "/v1/apps", {**valid_app_body(name), "token_url": url}
    )
    if status == 201:
        await api.delete(f"/v1/apps/{name}")
    assert status == 400, body


async def test_a_host_resolving_to_the_metadata_address_is_refused(
    api, resources, unique, monkeypatch
):
    resolve_as(monkeypatch, "metadata.hostile.test", "169.254.169.254")
    name = unique("url-dns")
    status, body = await send_json_or_raw(
        api,
        "POST",
        "/v1/apps",
        {**valid_app_body(name), "token_url": "https://metadata.hostile.test/token"},
    )
    if status == 201:
        await api.delete(f"/v1/apps/{name}")
    assert status == 400, body


# --------------------------------------------------------------------------------------------
# Token endpoints: redirects, and answers that are not what they should be
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def broker(admin_dsn, settings, ring) -> AsyncIterator[dict[str, Any]]:
    """A database of this module's own with no worker on it: refresh jobs run only when a
    test calls them."""
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(
            settings, prefix=f"hostile-{uuid.uuid4().hex[:8]}", database_url=database_url
        )
        async with open_stack(s, ring, web_app=False, worker=False) as stack:
            http = provider_session()
            try:
                yield {
                    "res": stack.resources,
                    "ctx": {CTX_KEY: WorkerContext(resources=stack.resources, http=http)},
                }
            finally:
                await http.close()


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = await FakeProvider().start()
    yield fake
    await fake.stop()


async def connection_at(res: Resources, token_url: str, *, scopes: list[str] | None = None) -> str:
    """An active connection of a new app whose token endpoint is `token_url`."""
    name = f"hostile-{uuid.uuid4().hex[:10]}"
    async with res.pool.acquire() as conn:
        app = await apps.create(
            conn,
            res.ring,
            AppCreate(
                name=name,
                client_id="client",
                client_secret="secret",
                authorization_url="https://auth.example.com/authorize",
                token_url=token_url,
                scopes=scopes or ["read"],
            ).model_dump(),
        )
        cid = f"{name}-1"
        await connections.start(
            conn, connection_id=cid, app_id=app.id, requested_scopes=app.scopes, metadata=None
        )
        await connections.store_tokens(
            conn,
            res.ring,
            cid,
            oauth.TokenResponse(
                access_token="at-0",
                token_type="Bearer",
                expires_in=3600,
                refresh_token="rt-0",
                refresh_token_expires_in=None,
                scopes=app.scopes,
                extra={},
                placement="body",
            ),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            refresh_at=datetime.now(UTC) + timedelta(hours=1),
            refresh_token_expires_at=None,
            requested_scopes=app.scopes,
            granted_scopes=app.scopes,
            problem=None,
            authorized=True,
        )
    return cid


def redirecting(status: int, target: str) -> Any:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": target})

    return handler


async def stolen(_request: web.Request) -> web.Response:
    return web.json_response(
        {"access_token": "attacker-at", "refresh_token": "attacker-rt", "expires_in": 3600}
    )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_token_endpoint_redirects_are_not_followed_on_refresh(broker, provider, status):
    provider.handlers["/token"] = redirecting(status, provider.url("/stolen"))
    provider.handlers["/stolen"] = stolen
    res = broker["res"]
    cid = await connection_at(res, provider.url("/token"))
    outcome = await refresh_one(broker["ctx"][CTX_KEY], cid, force=True)
    assert outcome == "retrying"
    assert provider.hits["/token"] == 1
    assert provider.hits["/stolen"] == 0
    found = await connections.get(res.pool, cid)
    assert found is not None and found.status == "active"
    assert found.problem == "provider_error"
    assert found.last_error and found.last_error["error"] == "unexpected_redirect"
    assert found.open_refresh_token(res.ring) == "rt-0"


async def test_token_endpoint_redirects_are_not_followed_on_exchange(
    api, anonymous, worker, resources, unique, provider
):
    provider.handlers["/token"] = redirecting(307, provider.url("/stolen"))
    provider.handlers["/stolen"] = stolen
    app = unique("redirect")
    async with api.post(
        "/v1/apps",
        json={**valid_app_body(app), "token_url": provider.url("/token")},
    ) as response:
        assert response.status == 201
    started = await start_connection(api, app)
    query = urlencode({"code": "a-code", "state": state_of(started["authorize_url"])})
    _, outcome = await follow_callback(anonymous, f"/oauth/callback?{query}")
    assert outcome["status"] == "failed" and outcome["problem"] == "provider_error", outcome
    assert provider.hits["/token"] == 1 and provider.hits["/stolen"] == 0
    found = await connections.get(resources.pool, started["connection_id"])
    assert found is not None and found.access_token is None


def answer(
    body: bytes | str,
    content_type: str = "application/json",
    *,
    chunked: bool = False,
    status: int = 200,
) -> Any:
    data = body.encode() if isinstance(body, str) else body

    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=data, status=status, headers={"Content-Type": content_type})
        response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 64 * 1024):
            await response.write(data[start : start + 64 * 1024])
        await response.write_eof()
        return response

    return handler


def token_json(**fields: Any) -> str:
    return json.dumps({"access_token": "at-new", "refresh_token": "rt-new", **fields})


HUGE = token_json(expires_in=3600, padding="x" * 2_000_000)


@pytest.mark.parametrize(
    "handler, error",
    [
        (answer(HUGE), "response_too_large"),
        (answer(HUGE, chunked=True), "response_too_large"),
        (answer("<html><body>Sign in</body></html>", "text/html"), "not_a_token_response"),
        (
            answer("<token><access_token>x</access_token></token>", "application/xml"),
            "not_a_token_response",
        ),
        (answer('{"access_token": "at-new", "refresh_tok'), "not_a_token_response"),
        (answer(b"\xff\xfe\x00{", "application/json"), "not_a_token_response"),
        (answer("[" * 100_000 + "]" * 100_000), "not_a_token_response"),
        (answer('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"), "not_a_token_response"),
        (answer(json.dumps({"refresh_token": "rt-new"})), "invalid_token_response"),
        (answer(json.dumps({"access_token": 123})), "invalid_token_response"),
        (answer(token_json(refresh_token=["a"])), "invalid_token_response"),
        (answer("", "application/json"), "not_a_token_response"),
        (answer("", "application/json", status=204), "not_a_token_response"),
    ],
    ids=[
        "huge",
        "huge-chunked",
        "html",
        "xml",
        "truncated-json",
        "binary",
        "deep-array",
        "deep-object",
        "no-access-token",
        "numeric-access-token",
        "list-refresh-token",
        "empty",
        "204",
    ],
)
async def test_unusable_token_responses_are_named_and_retried(broker, provider, handler, error):
    provider.handlers["/token"] = handler
    res = broker["res"]
    cid = await connection_at(res, provider.url("/token"))
    outcome = await refresh_one(broker["ctx"][CTX_KEY], cid, force=True)
    assert outcome == "retrying"
    found = await connections.get(res.pool, cid)
    assert found is not None and found.status == "active"
    assert found.problem == "provider_error"
    assert found.last_error and found.last_error["error"] == error, found.last_error
    assert found.failed_attempts == 1 and found.next_attempt_at is not None
    assert found.open_refresh_token(res.ring) == "rt-0"  # the grant is kept


@pytest.mark.parametrize(
    "body, content_type, check",
    [
        (token_json(expires_in=3600), "text/html", "expires_in_1h"),
        (token_json(expires_in=3600), "text/javascript", "expires_in_1h"),
        (token_json(expires_in=3600), "text/plain", "expires_in_1h"),
        ("access_token=at-new&refresh_token=rt-new&expires_in=3600", "text/plain", "expires_in_1h"),
        (token_json(expires_in=-60), "application/json", "expired_on_arrival"),
        (token_json(expires_in="-1"), "application/json", "expired_on_arrival"),
        (token_json(expires_in=10**12), "application/json", "never_expires"),
        (
            '{"access_token": "at-new", "refresh_token": "rt-new", "expires_in": 1e400}',
            "application/json",
            "never_expires",
        ),
        (
            '{"access_token": "at-new", "refresh_token": "rt-new", "expires_in": NaN}',
            "application/json",
            "refreshed",
        ),
        (token_json(expires_in="soon"), "application/json", "refreshed"),
        (token_json(expires_in=True), "application/json", "refreshed"),
        (token_json(expires_in=3600, scope="read,write"), "application/json", "scopes_read_write"),
        (
            token_json(expires_in=3600, scope="read  write\t"),
            "application/json",
            "scopes_read_write",
        ),
        (
            token_json(expires_in=3600, scope=["read", "write"]),
            "application/json",
            "scopes_read_write",
        ),
        (token_json(expires_in=3600, scope="read+write"), "application/json", "scopes_as_given"),
        (token_json(expires_in=3600, scope="read;write"), "application/json", "scopes_as_given"),
        (token_json(expires_in=3600, scope=42), "application/json", "refreshed"),
        (token_json(expires_in=3600, token_type=7), "application/json", "refreshed"),
    ],
)
async def test_odd_but_usable_token_responses_keep_the_tokens(
    broker, provider, body, content_type, check
):
    """A provider has already rotated the grant when it answers, so an answer with usable
    tokens is stored even when a secondary field is odd; the odd field is read the safe way."""
    provider.handlers["/token"] = answer(body, content_type)
    res = broker["res"]
    cid = await connection_at(res, provider.url("/token"), scopes=["read", "write"])
    before = datetime.now(UTC)
    outcome = await refresh_one(broker["ctx"][CTX_KEY], cid, force=True)
    assert outcome == "refreshed"
    found = await connections.get(res.pool, cid)
    assert found is not None and found.status == "active"
    assert found.open_refresh_token(res.ring) == "rt-new"
    assert found.open_access_token(res.ring) == "at-new"
    assert found.granted_scopes is not None
    assert all(isinstance(s, str) and s for s in found.granted_scopes)
    if check == "expires_in_1h":
        assert found.expires_at is not None
        assert abs((found.expires_at - before).total_seconds() - 3600) < 5
    elif check == "expired_on_arrival":
        assert found.expires_at is not None and found.expires_at <= datetime.now(UTC)
        # Refreshed again soon, but not in a loop with the provider.
        assert found.refresh_at is not None
        assert 5 <= (found.refresh_at - before).total_seconds() <= 60
    elif check == "never_expires":
        assert found.expires_at is None
    elif check == "scopes_read_write":
        assert found.granted_scopes == ["read", "write"]
    elif check == "scopes_as_given":
        assert len(found.granted_scopes) == 1


async def test_huge_or_absurd_exchange_answers_end_the_sign_in_clearly(
    api, anonymous, worker, resources, unique, provider
):
    """At the exchange: a body over the cap fails the sign-in with `provider_error`; a usable
    answer with a negative lifetime still connects (the code is spent either way)."""
    app = unique("exchange-odd")
    async with api.post(
        "/v1/apps", json={**valid_app_body(app), "token_url": provider.url("/token")}
    ) as response:
        assert response.status == 201
    provider.handlers["/token"] = answer(HUGE, chunked=True)
    started = await start_connection(api, app)
    query = urlencode({"code": "code-1", "state": state_of(started["authorize_url"])})
    _, outcome = await follow_callback(anonymous, f"/oauth/callback?{query}")
    assert outcome["status"] == "failed" and outcome["problem"] == "provider_error", outcome

    provider.handlers["/token"] = answer(token_json(expires_in=-5, scope="read,,write"))
    started = await start_connection(api, app)
    query = urlencode({"code": "code-2", "state": state_of(started["authorize_url"])})
    _, outcome = await follow_callback(anonymous, f"/oauth/callback?{query}")
    assert outcome["status"] == "succeeded", outcome
    found = await connections.get(resources.pool, started["connection_id"])
    assert found is not None and found.status == "active"
    assert found.granted_scopes == ["read", "write"]
    # Off the schedule: the fake provider is gone once this test ends.
    await resources.pool.execute(
        "UPDATE connections SET refresh_at = NULL WHERE id = $1", started["connection_id"]
    )
