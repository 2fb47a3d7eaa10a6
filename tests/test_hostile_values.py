"""Hostile values at every route: NUL characters, lone surrogates, NaN and Infinity, JSON nested
a thousand deep, lists and objects where text belongs. Each is sent in a place a route reads (a
path parameter, a query parameter, a field of its JSON body or of its console form), with and
without a key (an API key, a console session).

What must hold: never a 5xx, and nothing stored (every table's rows as they were). The routes are
read from the running application, so a new route is fuzzed without touching this file; a new
console route must say here which query parameters and form fields it reads.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from authbroker.schemas import APP_SETTINGS
from handlers.openapi import served_operations
from handlers.operations import Operation
from storage.resources import Resources
from tests.chaos_helpers import Stack, open_stack, private_database, stack_settings

SEEDED_APP = "seeded"
SEEDED_CONNECTION = "seeded-conn"
SEEDED_BASIC = "seeded-basic"
CSRF = re.compile(r'name="(?:csrf|login_csrf)" value="([^"]+)"')
DEPTH = 1000

# ------------------------------------------------------------------------------ the values


@dataclass(frozen=True)
class Raw:
    """JSON text sent as it is: what `json.dumps` would not write (`NaN`, nesting it cannot)."""

    text: str


def _spliced(marker: str) -> Callable[[str], str]:
    return lambda text: text[: len(text) // 2] + marker + text[len(text) // 2 :]


# Text that Postgres refuses (NUL) or that cannot be encoded as UTF-8 (a lone surrogate), with
# ordinary text around it.
ORDINARY = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
NUL_TEXT = ORDINARY.map(_spliced("\x00"))
SURROGATE_TEXT = st.tuples(ORDINARY, st.integers(0xD800, 0xDFFF)).map(
    lambda pair: _spliced(chr(pair[1]))(pair[0])
)
HOSTILE_TEXT = NUL_TEXT | SURROGATE_TEXT
NON_FINITE = st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400")])
DEEP = st.sampled_from([Raw("[" * DEPTH + "]" * DEPTH), Raw('{"a":' * DEPTH + "1" + "}" * DEPTH)])
HOSTILE_LEAF = HOSTILE_TEXT | NON_FINITE
# Where text belongs: a list, an object, or one holding something hostile.
HOSTILE_JSON = (
    HOSTILE_LEAF
    | DEEP
    | st.lists(HOSTILE_LEAF, min_size=1, max_size=3)
    | st.dictionaries(ORDINARY, HOSTILE_LEAF, min_size=1, max_size=2)
    | st.dictionaries(HOSTILE_TEXT, ORDINARY, min_size=1, max_size=2)
    | st.lists(ORDINARY, min_size=1, max_size=2)
    | st.dictionaries(ORDINARY, ORDINARY, min_size=1, max_size=2)
)
# Within a URL or a form only text travels; invalid UTF-8 arrives as replacement characters.
HOSTILE_URL_TEXT = NUL_TEXT


def dumps(value: Any) -> bytes:
    """JSON with `Raw` parts spliced in, lone surrogates as `\\uXXXX` escapes."""
    raws: list[str] = []

    def mark(found: Any) -> str:
        assert isinstance(found, Raw)
        raws.append(found.text)
        return f"@@raw{len(raws) - 1}@@"

    text = json.dumps(value, default=mark)
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@raw{index}@@"', raw)
    return text.encode()


# ------------------------------------------------------------------------------ the routes


@dataclass(frozen=True)
class Route:
    """One method of one route: where it reads input, and a valid input to lay a hostile
    value on (so the hostile value is what the route must refuse)."""

    method: str
    path: str
    path_params: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    body: str | None = None  # "json" or "form"
    fields: tuple[str, ...] = ()
    base: Callable[[], dict[str, Any]] = field(default=lambda: {})
    # Some routes end the session they are sent with (sign-out): only sent without one.
    needs_no_session: bool = False

    @property
    def api(self) -> bool:
        return self.path.startswith("/v1/")

    @property
    def console(self) -> bool:
        return self.path.startswith("/console")

    @property
    def places(self) -> list[tuple[str, str]]:
        found = [("path", p) for p in self.path_params]
        found += [("query", q) for q in self.query]
        found += [("body", f) for f in self.fields]
        # A route that reads nothing still gets something hostile: an unknown parameter.
        return found or [("query", "x")]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def identity() -> dict[str, Any]:
    return {"name": fresh("fuzz"), "client_id": "client", "client_secret": "secret"}


def app_body() -> dict[str, Any]:
    return {
        **identity(),
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
    }


def preset_body() -> dict[str, Any]:
    return {**identity(), "preset": "okta", "placeholders": {"domain": "example.okta.com"}}


# Valid JSON bodies by operation id; one without an entry is sent with only the hostile field.
API_BODIES: dict[str, list[Callable[[], dict[str, Any]]]] = {
    "createApp": [app_body, preset_body],
    "importApps": [lambda: {"version": 1, "apps": [app_body()]}],
    "putBasic": [lambda: {"login": "login", "password": "password"}],
    "startAuthorization": [lambda: {"connection_id": fresh("fuzz")}],
    "reportConnection": [lambda: {"status": 401}],
}
# Extra body fields a route reads besides its models' (the preset's placeholders).
API_EXTRA_FIELDS = {"createApp": ("preset", "placeholders")}

APP_FORM = tuple(
    name for name, (_, setting) in APP_SETTINGS.items() if setting.form not in {"secrets"}
)


def app_form() -> dict[str, Any]:
    """`app_body` as the console's form sends it: every field it shows."""
    return {
        **app_body(),
        "scope_separator": " ",
        "client_auth": "body",
        "refresh_margin": "300",
        "pkce": "on",
    }


# The console's routes: (method, route) -> what it reads. Checked against the router below.
CONSOLE: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/console"): {"query": ("events",)},
    ("GET", "/console/"): {},
    ("GET", "/console/login"): {"query": ("next", "signed_out")},
    ("POST", "/console/login"): {
        "fields": ("key", "next"),
        "base": lambda: {"key": "ab_unknown_key", "next": "/console"},
    },
    ("POST", "/console/logout"): {"needs_no_session": True},
    ("GET", "/console/apps/new"): {"query": ("preset",)},
    ("POST", "/console/apps/new"): {
        "fields": ("name", "preset", "ph_domain", *APP_FORM),
        "base": app_form,
    },
    ("GET", "/console/apps/{name}"): {"query": ("events",)},
    ("GET", "/console/apps/{name}/edit"): {},
    ("POST", "/console/apps/{name}/edit"): {"fields": APP_FORM},
    ("GET", "/console/apps/{name}/diagnosis"): {},
    ("GET", "/console/apps/{name}/delete"): {},
    ("POST", "/console/apps/{name}/delete"): {},
    ("POST", "/console/apps/{name}/connect"): {
        "fields": ("connection_id", "scopes"),
        "base": lambda: {"connection_id": fresh("fuzz")},
    },
    ("POST", "/console/apps/{name}/service-connection"): {
        "fields": ("connection_id", "scopes", "audience", "resource"),
        "base": lambda: {"connection_id": fresh("fuzz")},
    },
    ("POST", "/console/apps/{name}/connect-link"): {
        "fields": ("connection_id", "scopes"),
        "base": lambda: {"connection_id": fresh("fuzz")},
    },
    ("GET", "/console/connect/{authorization_id}"): {},
    ("POST", "/console/connections/{connection_id}/refresh"): {},
    ("GET", "/console/connections/{connection_id}/diagnosis"): {},
    ("GET", "/console/connections/{connection_id}/delete"): {},
    ("POST", "/console/connections/{connection_id}/delete"): {},
    ("GET", "/console/basic"): {"query": ("name", "events")},
    ("POST", "/console/basic"): {
        "fields": ("name", "login", "password"),
        "base": lambda: {"name": fresh("fuzz"), "login": "login", "password": "password"},
    },
    ("GET", "/console/basic/{name}/delete"): {},
    ("POST", "/console/basic/{name}/delete"): {},
    ("GET", "/console/events"): {"query": ("type", "app", "since")},
    ("GET", "/console/webhooks"): {},
    ("POST", "/console/webhooks"): {
        "fields": ("url", "types", "apps", "description"),
        "base": lambda: {"url": f"https://hooks.example.com/{fresh('fuzz')}"},
    },
    ("POST", "/console/webhooks/{webhook_id}/disable"): {},
    ("POST", "/console/webhooks/{webhook_id}/enable"): {},
    ("POST", "/console/webhooks/{webhook_id}/rotate"): {},
    ("POST", "/console/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"): {},
    ("GET", "/console/webhooks/{webhook_id}/delete"): {},
    ("POST", "/console/webhooks/{webhook_id}/delete"): {},
    ("POST", "/console/apps/{name}/keys"): {"fields": ("alg",)},
    ("GET", "/console/api-keys"): {},
    ("POST", "/console/api-keys"): {
        "fields": ("name", "role", "apps"),
        "base": lambda: {"name": fresh("fuzz"), "role": "runtime"},
    },
    ("GET", "/console/api-keys/{key_id}"): {},
    ("POST", "/console/api-keys/{key_id}/revoke"): {},
    ("GET", "/console/static/{filename}"): {},
}
# Browser pages outside the API and the console.
BROWSER: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/oauth/callback"): {
        "query": ("state", "code", "error", "error_description", "error_uri", "iss", "scope"),
    },
}

PATH_PARAM = re.compile(r"\{(\w+)\}")


def _route_key(route: web.AbstractRoute) -> tuple[str, str] | None:
    resource = route.resource
    if resource is None or route.method in ("HEAD", "*"):
        return None
    canonical = resource.canonical
    if isinstance(resource, web.StaticResource):
        canonical += "/{filename}"
    return route.method, canonical


def catalogue(app: web.Application) -> list[Route]:
    """Every route the application serves, with the places it reads."""
    described: dict[tuple[str, str], Operation] = {
        (method.upper(), path): op for path, method, op in served_operations(app)
    }
    routes: list[Route] = []
    unknown: list[str] = []
    for route in app.router.routes():
        key = _route_key(route)
        if key is None:
            continue
        method, path = key
        params = tuple(PATH_PARAM.findall(path))
        op = described.get(key)
        if op is not None:
            query = tuple(p["name"] for p in op.parameters if p["in"] == "query")
            fields = tuple(
                dict.fromkeys(
                    [n for model in op.body for n in model.model_fields]
                    + list(API_EXTRA_FIELDS.get(op.operation_id, ()))
                )
            )
            for base in API_BODIES.get(op.operation_id, [lambda: {}]):
                routes.append(
                    Route(
                        method,
                        path,
                        params,
                        query,
                        "json" if op.body else None,
                        fields,
                        base,
                    )
                )
            continue
        spec = {**BROWSER, **CONSOLE}.get(key)
        if spec is None:
            unknown.append(f"{method} {path}")
            continue
        routes.append(
            Route(
                method,
                path,
                params,
                spec.get("query", ()),
                "form" if method == "POST" else None,
                spec.get("fields", ()),
                spec.get("base", lambda: {}),
                spec.get("needs_no_session", False),
            )
        )
    assert not unknown, f"say what these routes read in CONSOLE or BROWSER: {unknown}"
    return routes


# ------------------------------------------------------------------------------ the stack


@dataclass
class Target:
    stack: Stack
    routes: list[Route]
    tables: list[str]
    valid: dict[str, str]  # a real value for each path parameter
    callback_query: dict[str, str]
    clients: dict[bool, aiohttp.ClientSession]  # with a key / session, and without
    csrf: dict[bool, str]

    @property
    def res(self) -> Resources:
        return self.stack.resources


async def _csrf_of(client: aiohttp.ClientSession, path: str) -> str:
    async with client.get(path, allow_redirects=False) as response:
        found = CSRF.search(await response.text())
    assert found, path
    return html.unescape(found.group(1))


@pytest.fixture(scope="module")
async def target(admin_dsn, settings, ring) -> AsyncIterator[Target]:
    """A server of its own on a database of its own, without a worker (so nothing changes
    the rows but the requests), seeded with an app, a pending connection and a Basic
    credential."""
    async with private_database(admin_dsn, purpose="fuzz") as database_url:
        own = stack_settings(
            settings, prefix=f"fuzz-{uuid.uuid4().hex[:8]}", database_url=database_url
        )
        async with open_stack(own, ring, worker=False) as stack:
            api = stack.api()
            async with api.post("/v1/apps", json={**app_body(), "name": SEEDED_APP}) as response:
                assert response.status == 201, await response.text()
            async with api.post(
                f"/v1/apps/{SEEDED_APP}/connections", json={"connection_id": SEEDED_CONNECTION}
            ) as response:
                assert response.status == 201, await response.text()
                started = await response.json()
            async with api.put(
                f"/v1/basic/{SEEDED_BASIC}", json={"login": "login", "password": "password"}
            ) as response:
                assert response.status == 201, await response.text()
            signed_in = aiohttp.ClientSession(
                base_url=stack.url,
                headers={"Authorization": f"Bearer {stack.admin_key}"},
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            )
            anonymous = aiohttp.ClientSession(
                base_url=stack.url, cookie_jar=aiohttp.CookieJar(unsafe=True)
            )
            login_csrf = await _csrf_of(signed_in, "/console/login")
            async with signed_in.post(
                "/console/login",
                data={"key": stack.admin_key, "csrf": login_csrf},
                headers={"Origin": stack.url},
                allow_redirects=False,
            ) as response:
                assert response.status == 303
            state = urlsplit(started["authorize_url"]).query
            tables = [
                r["table_name"]
                for r in await stack.resources.pool.fetch(
                    """SELECT table_name FROM information_schema.tables
                       WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
                       ORDER BY table_name"""
                )
            ]
            try:
                yield Target(
                    stack=stack,
                    routes=catalogue(stack.runner.app),  # type: ignore[union-attr]
                    tables=tables,
                    valid={
                        "name": SEEDED_APP,
                        "connection_id": SEEDED_CONNECTION,
                        "authorization_id": started["authorization_id"],
                        "filename": "console.css",
                    },
                    callback_query={
                        "state": dict(p.split("=", 1) for p in state.split("&"))["state"],
                        "error": "access_denied",
                        "error_description": "declined",
                    },
                    clients={True: signed_in, False: anonymous},
                    csrf={
                        True: await _csrf_of(signed_in, "/console"),
                        False: await _csrf_of(anonymous, "/console/login"),
                    },
                )
            finally:
                await signed_in.close()
                await anonymous.close()


async def snapshot(target: Target) -> dict[str, Any]:
    """Every table's rows (API keys by count: using one records when)."""
    parts = [
        f"(SELECT count(*) FROM {t})"
        if t == "api_keys"
        else f"(SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x)"
        for t in target.tables
    ]
    row = await target.res.pool.fetchrow(f"SELECT {', '.join(parts)}")
    return dict(zip(target.tables, row, strict=True))


# ------------------------------------------------------------------------------ sending


def _encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


async def send(
    target: Target, route: Route, place: tuple[str, str], value: Any, keyed: bool
) -> tuple[int, str]:
    """The route's request with `value` at `place`, everything else valid."""
    where, name = place
    params = {p: target.valid.get(p, "x") for p in route.path_params}
    if route.path == "/v1/basic/{name}" or route.path.startswith("/console/basic/"):
        params["name"] = SEEDED_BASIC
    query: list[tuple[str, str]] = []
    if route.path == "/oauth/callback":
        query = list(target.callback_query.items())
    body = route.base()
    if where == "path":
        params[name] = value
    elif where == "query":
        query = [(k, v) for k, v in query if k != name] + [(name, value)]
    else:
        body[name] = value
    path = PATH_PARAM.sub(lambda m: _encoded(str(params[m.group(1)])), route.path)
    if query:
        path += "?" + "&".join(f"{_encoded(k)}={_encoded(str(v))}" for k, v in query)
    client = target.clients[keyed]
    headers: dict[str, str] = {}
    data: bytes | None = None
    if route.body == "json":
        headers["Content-Type"] = "application/json"
        data = dumps(body)
    elif route.body == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Origin"] = target.stack.url
        form = {**body, "csrf": target.csrf[keyed]}
        data = "&".join(f"{_encoded(k)}={_encoded(str(v))}" for k, v in form.items()).encode()
    url = URL(target.stack.url + path, encoded=True)
    async with client.request(
        route.method, url, data=data, headers=headers, allow_redirects=False
    ) as response:
        # Event streams never end: their status and headers are the answer.
        if response.content_type == "text/event-stream":
            return response.status, ""
        return response.status, await response.text()


async def check(target: Target, route: Route, place: tuple[str, str], value: Any, keyed: bool):
    if keyed and route.needs_no_session:
        return
    before = await snapshot(target)
    status, text = await send(target, route, place, value, keyed)
    shown = f"{route} {place} {value!r:.80} keyed={keyed}: {status} {text[:300]}"
    assert status < 500, shown
    if route.api and status >= 400:
        answer = json.loads(text)
        assert answer["error"] and answer["message"], shown
    assert await snapshot(target) == before, f"stored: {shown}"


def _value_for(route: Route, place: tuple[str, str], data: st.DataObject) -> Any:
    if place[0] == "body" and route.body == "json":
        return data.draw(HOSTILE_JSON, label="value")
    return data.draw(HOSTILE_URL_TEXT, label="value")


# ------------------------------------------------------------------------------ the tests


async def test_every_place_of_every_route_refuses_a_nul(target):
    """Each place each route reads, once with and once without a key: a NUL in the middle (of
    something shaped like an API key: the sign-in looked its id up)."""
    failures = []
    for route in target.routes:
        for place in route.places:
            for keyed in (True, False):
                try:
                    await check(target, route, place, "ab_\x00_x", keyed)
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)


async def test_every_json_field_refuses_each_kind_of_hostile_value(target):
    """Each field of each JSON body, with a key: each kind of hostile JSON value."""
    kinds = [
        "a\ud800b",
        Raw("NaN"),
        Raw("-Infinity"),
        Raw("1e400"),
        Raw("[" * DEPTH + "]" * DEPTH),
        ["a\x00"],
        {"a\x00": "b"},
        {"a": Raw("Infinity")},
    ]
    failures = []
    for route in target.routes:
        if route.body != "json":
            continue
        for place in route.places:
            if place[0] != "body":
                continue
            for value in kinds:
                try:
                    await check(target, route, place, value, True)
                except AssertionError as exc:
                    failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), keyed=st.booleans())
async def test_hostile_values_anywhere_never_5xx_and_store_nothing(target, data, keyed):
    route = data.draw(st.sampled_from(target.routes), label="route")
    place = data.draw(st.sampled_from(route.places), label="place")
    await check(target, route, place, _value_for(route, place, data), keyed)


# ------------------------------------------------------------------------------ each named


async def api_answer(target: Target, method: str, path: str, body: bytes | None = None):
    url = URL(target.stack.url + path, encoded=True)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with target.clients[True].request(method, url, data=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/apps/a%00b", "name"),
        ("DELETE", f"/v1/apps/{SEEDED_APP}?cascade=%00", "cascade"),
        ("GET", "/v1/connections/c%00", "connection_id"),
        ("GET", "/v1/connections?app=a%00b", "app"),
        ("GET", "/v1/connections?after=%00", "after"),
        ("GET", "/v1/apps/export?name=a%00b", "name"),
        ("GET", "/v1/events?type=connection.%00", "type"),
    ],
)
async def test_a_nul_in_a_path_or_query_parameter_is_a_400_naming_it(target, method, path, field):
    before = await snapshot(target)
    status, answer = await api_answer(target, method, path)
    assert status == 400, answer
    assert answer["error"] == "invalid_request"
    assert answer["fields"] == [{"field": field, "message": "must not contain NUL characters"}]
    assert await snapshot(target) == before


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ('"client_id": "a\\u0000b"', "client_id", "must not contain NUL"),
        ('"client_id": "a\\ud800b"', "client_id", "lone surrogate"),
        ('"authorize_params": {"x\\u0000": "y"}', "authorize_params.'x\\x00'", "has a key"),
        ('"scopes": ["read", "\\udfff"]', "scopes.1", "lone surrogate"),
        ('"refresh_margin": NaN', "refresh_margin", "finite"),
        ('"refresh_margin": -Infinity', "refresh_margin", "finite"),
        ('"refresh_margin": 1e400', "refresh_margin", "finite"),
        ('"token_params": ' + '{"a": ' * 40 + "1" + "}" * 40, "token_params.a.a.a", "nested"),
    ],
)
async def test_a_hostile_json_value_is_a_400_naming_its_field(target, body, field, message):
    before = await snapshot(target)
    base = dumps(app_body())[:-1].decode()
    status, answer = await api_answer(target, "POST", "/v1/apps", f"{base}, {body}}}".encode())
    assert status == 400, answer
    assert answer["error"] == "invalid_request"
    [error] = answer["fields"]
    assert error["field"].startswith(field) and message in error["message"], error
    assert await snapshot(target) == before


async def test_json_nested_a_thousand_deep_is_a_400(target):
    nested = "[" * DEPTH + "]" * DEPTH
    status, answer = await api_answer(
        target, "POST", "/v1/apps", f'{{"name": "deep", "metadata": {nested}}}'.encode()
    )
    assert status == 400 and answer["error"] == "invalid_json", answer
    assert "nested" in answer["message"]


async def test_a_list_as_a_preset_placeholder_is_a_400_naming_placeholders(target):
    before = await snapshot(target)
    body = {**preset_body(), "placeholders": {"domain": ["example.okta.com"]}}
    status, answer = await api_answer(target, "POST", "/v1/apps", dumps(body))
    assert status == 400, answer
    assert [f["field"] for f in answer["fields"]] == ["placeholders"]
    assert await snapshot(target) == before


async def test_a_nul_in_the_console_sign_in_key_is_refused_without_a_session(target):
    """`key=ab_%00_x` reached the key lookup and failed there; no key was needed for it."""
    async with aiohttp.ClientSession(
        base_url=target.stack.url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as browser:
        csrf = await _csrf_of(browser, "/console/login")
        async with browser.post(
            "/console/login",
            data=f"key=ab_%00_x&csrf={quote(csrf)}",
            headers={
                "Origin": target.stack.url,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            allow_redirects=False,
        ) as response:
            page = await response.text()
            assert response.status == 400, page
            assert "The field &#39;key&#39; must not contain NUL characters" in page
            assert "Set-Cookie" not in response.headers or "session" not in str(
                response.headers.getall("Set-Cookie")
            )


async def test_a_nul_in_the_callback_is_refused_and_spends_no_state(target):
    """`error_description=a%00b` with a live state was stored, and failed there; no key
    was needed for it. Now it is refused, and the real callback still works."""
    before = await snapshot(target)
    query = {"state": target.callback_query["state"], "error": "x"}
    for json_answer in (True, False):
        encoded = urlencode(query) + "&error_description=a%00b"
        accept = "application/json" if json_answer else "text/html"
        async with target.clients[False].get(
            URL(f"{target.stack.url}/oauth/callback?{encoded}", encoded=True),
            headers={"Accept": accept},
        ) as response:
            text = await response.text()
            assert response.status == 400, text
            if json_answer:
                assert json.loads(text) == {
                    "error": "invalid_request",
                    "message": "The parameter 'error_description' must not contain NUL characters.",
                }
            else:
                assert "error_description" in text
    assert await snapshot(target) == before
