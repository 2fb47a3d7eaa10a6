"""The operator console at /console: sign-in, sessions and CSRF over plain HTTP, secrets never
shown, forms that keep their input; then the whole flow in a real headless Chromium against the
real OAuth test server (screenshots in tests/artifacts/console/)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from authbroker.embedded import free_port
from authbroker.events import EventType, make_event
from handlers import console
from handlers.app import create_app
from handlers.console import views
from storage import api_keys, apps, basic, connections
from storage.resources import Resources
from tests import browser
from tests.helpers import follow_callback, serving
from tests.oauth_server import OAuthTestServer

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
COOKIE = "authbroker_console"


@pytest.fixture(scope="module")
async def console_url(resources: Resources) -> AsyncIterator[str]:
    """A web server of its own with the console registered (the session's `web_server` is
    built without it); the OAuth callback still goes to the session's server."""
    app = create_app(resources)
    console.setup(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


class Console:
    """A browser without JavaScript: follows nothing by itself, keeps cookies, knows the last
    CSRF token it saw."""

    def __init__(self, base: str):
        self.base = base
        self.http = aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(path, allow_redirects=False, **kwargs) as response:
            text = await response.text()
        found = CSRF.search(text)
        if found:
            self.csrf = html.unescape(found.group(1))
        return response.status, text, response

    async def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        csrf: str | None = "auto",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        form = dict(data or {})
        if csrf == "auto":
            form["csrf"] = self.csrf
        elif csrf is not None:
            form["csrf"] = csrf
        sent = {"Origin": self.base, **(headers or {})}
        async with self.http.post(path, data=form, headers=sent, allow_redirects=False) as response:
            text = await response.text()
        found = CSRF.search(text)
        if found:
            self.csrf = html.unescape(found.group(1))
        return response.status, text, response

    async def sign_in(self, key: str) -> aiohttp.ClientResponse:
        status, _, _ = await self.get("/console/login")
        assert status == 200
        status, text, response = await self.post("/console/login", {"key": key})
        assert status == 303, text
        await self.get("/console")  # the session's CSRF token
        return response

    def session_cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == COOKIE:
                return cookie.value
        return None


@pytest.fixture
async def browserless(console_url: str) -> AsyncIterator[Console]:
    client = Console(console_url)
    yield client
    await client.close()


@pytest.fixture
async def signed_in(browserless: Console, admin_key: str) -> Console:
    await browserless.sign_in(admin_key)
    return browserless


async def status_with_cookie(base: str, value: str | None) -> int:
    """GET /console with exactly this session cookie (as a copied or forged cookie would come)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            f"{base}/console", headers={"Cookie": f"{COOKIE}={value}"}, allow_redirects=False
        ) as response,
    ):
        return response.status


def set_cookies(response: aiohttp.ClientResponse) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


async def make_app(client: Console, name: str, secret: str, server: OAuthTestServer | None = None):
    await client.get("/console/apps/new?preset=")
    base = server.base_url if server else "https://provider.example"
    status, text, response = await client.post(
        "/console/apps/new",
        {
            "name": name,
            "client_id": server.client_id if server else "client-1",
            "client_secret": secret,
            "authorization_url": server.authorization_url if server else f"{base}/authorize",
            "token_url": server.token_url if server else f"{base}/token",
            "revoke_url": server.revoke_url if server else "",
            "scopes": "read write",
            "scope_separator": " ",
            "client_auth": "body",
            "pkce": "on",
            "refresh_margin": "300",
        },
    )
    assert status == 303, text
    assert response.headers["Location"] == f"/console/apps/{name}"


# ------------------------------------------------------------------------- sign-in and out


async def test_pages_need_a_session(browserless: Console):
    status, _, response = await browserless.get("/console/apps/new")
    assert status == 303
    assert response.headers["Location"] == "/console/login?next=%2Fconsole%2Fapps%2Fnew"
    status, _, response = await browserless.get("/console/events")
    assert status == 401


async def test_wrong_key_gets_an_error_page_and_no_session(browserless: Console):
    await browserless.get("/console/login")
    for key in ("ab_nope_wrong", "not-even-a-key", ""):
        status, text, response = await browserless.post("/console/login", {"key": key})
        assert status == 401
        assert "not a valid admin API key" in text
        assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(response))
    assert browserless.session_cookie() is None
    status, _, _ = await browserless.get("/console")
    assert status == 303


async def test_right_key_gets_a_strict_httponly_session(browserless: Console, admin_key: str):
    response = await browserless.sign_in(admin_key)
    cookie = next(c for c in set_cookies(response) if c.startswith(f"{COOKIE}="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= attributes
    assert "SameSite=Strict" in cookie
    assert "Max-Age=28800" in cookie
    assert "Path=/console" in cookie
    assert "secure" not in attributes  # the public URL is http here
    assert admin_key not in cookie and admin_key.split("_")[2] not in cookie
    status, text, response = await browserless.get("/console")
    assert status == 200
    assert "<h1>Applications</h1>" in text
    headers = response.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "form-action 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "same-origin"


async def test_https_public_url_makes_the_cookie_secure(
    resources: Resources, settings, admin_key: str
):
    behind_tls = Resources(
        settings=settings.replace(public_url="https://broker.example"),
        ring=resources.ring,
        pool=resources.pool,
        redis=resources.redis,
    )
    app = create_app(behind_tls)
    console.setup(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = Console(f"http://127.0.0.1:{port}")
    try:
        _, _, response = await client.get("/console/login")
        login_cookie = next(c for c in set_cookies(response) if "authbroker_console_login" in c)
        assert login_cookie.startswith("__Secure-") and "Secure" in login_cookie
        # The browser would send the cookie back over https only; hand it over here.
        name, _, rest = login_cookie.partition("=")
        value = rest.split(";")[0]
        async with client.http.post(
            "/console/login",
            data={"key": admin_key, "csrf": client.csrf},
            headers={"Origin": "https://broker.example", "Cookie": f"{name}={value}"},
            allow_redirects=False,
        ) as answer:
            assert answer.status == 303
            cookie = next(c for c in set_cookies(answer) if c.startswith(f"__Secure-{COOKIE}="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        await client.close()
        await runner.cleanup()


async def test_sign_in_returns_only_to_console_pages(console_url: str, admin_key: str):
    for target, expected in (
        ("/console/basic", "/console/basic"),
        ("//evil.example/console", "/console"),
        ("https://evil.example/", "/console"),
        ("/consolex", "/console"),
        ("/console\\..\\x", "/console"),
    ):
        client = Console(console_url)
        try:
            await client.get("/console/login")
            status, _, response = await client.post(
                "/console/login", {"key": admin_key, "next": target}
            )
        finally:
            await client.close()
        assert status == 303
        assert response.headers["Location"] == expected


async def test_a_tampered_cookie_is_no_session(browserless: Console, admin_key: str):
    await browserless.sign_in(admin_key)
    value = browserless.session_cookie()
    assert value
    body, mac = value.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    assert await status_with_cookie(browserless.base, value) == 200
    assert await status_with_cookie(browserless.base, forged) == 303


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(
    browserless: Console, admin_key: str
):
    await browserless.sign_in(admin_key)
    copied = browserless.session_cookie()
    status, _, response = await browserless.post("/console/logout")
    assert status == 303
    assert response.headers["Location"] == "/console/login?signed_out=1"
    status, _, _ = await browserless.get("/console")
    assert status == 303
    assert await status_with_cookie(browserless.base, copied) == 303


async def test_a_revoked_keys_session_is_refused(
    browserless: Console, resources: Resources, unique
):
    key, plaintext = await api_keys.create(resources.pool, unique("console-revoked"))
    await browserless.sign_in(plaintext)
    status, _, _ = await browserless.get("/console")
    assert status == 200
    await api_keys.revoke(resources.pool, key.id)
    status, _, response = await browserless.get("/console")
    assert status == 303 and response.headers["Location"].startswith("/console/login")
    status, text, _ = await browserless.post("/console/basic", {"name": "x", "login": "y"})
    assert status == 403
    assert "session has ended" in text
    assert await basic.get(resources.pool, "x") is None


async def test_only_admin_keys_sign_in(browserless: Console, resources: Resources, unique):
    for role in ("runtime", "operator"):
        _, key = await api_keys.create(resources.pool, unique(role), role=role)
        await browserless.get("/console/login")
        status, text, _ = await browserless.post("/console/login", {"key": key})
        assert status == 401 and "not a valid admin API key" in text
        status, _, _ = await browserless.get("/console")
        assert status == 303


async def test_failed_sign_ins_are_throttled_per_address(resources: Resources, admin_key: str):
    # A server of its own: its buckets start full whatever other tests sent.
    async with serving(create_app(resources), free_port()) as base:
        client = Console(base)
        try:
            await client.sign_in(admin_key)  # accepted once: it is not slowed down later
            await client.post("/console/logout")
            statuses = []
            for attempt in range(20):
                await client.get("/console/login")
                status, text, response = await client.post(
                    "/console/login", {"key": f"ab_wrong{attempt}_x"}
                )
                statuses.append(status)
                if status == 429:
                    break
            assert statuses == [401] * 10 + [429], statuses
            assert "Too many failed sign-ins" in text and int(response.headers["Retry-After"]) >= 1
            await client.sign_in(admin_key)
            status, _, _ = await client.get("/console")
            assert status == 200
        finally:
            await client.close()


# -------------------------------------------------------------------------------- API keys


async def test_api_keys_are_created_shown_once_and_revoked(
    signed_in: Console, resources: Resources, unique
):
    status, text, _ = await signed_in.get("/console/api-keys")
    assert status == 200 and "Create a key" in text
    name = unique("console-key")
    status, text, _ = await signed_in.post(
        "/console/api-keys", {"name": name, "role": "runtime", "apps": "crm google crm"}
    )
    assert status == 200, text
    plaintext = re.search(r'id="created-key" type="text" readonly value="(ab_[^"]+)"', text)
    assert plaintext is not None and "shown only on this page" in text
    key = await api_keys.verify(resources.pool, html.unescape(plaintext.group(1)))
    assert key is not None and key.role == "runtime" and key.apps == ["crm", "google"]
    status, text, _ = await signed_in.get("/console/api-keys")
    assert name in text and plaintext.group(1) not in text
    status, text, _ = await signed_in.get(f"/console/api-keys/{key.id}")
    assert status == 200 and "Revoke this key" in text and "No credentials read" in text

    status, text, _ = await signed_in.post(
        "/console/api-keys", {"name": unique("k"), "role": "operator", "apps": "crm"}
    )
    assert status == 400 and 'id="e-apps"' in text

    status, _, response = await signed_in.post(f"/console/api-keys/{key.id}/revoke")
    assert status == 303 and response.headers["Location"] == "/console/api-keys"
    assert await api_keys.verify(resources.pool, html.unescape(plaintext.group(1))) is None
    status, text, _ = await signed_in.get("/console/api-keys/nope")
    assert status == 404


async def test_moving_a_url_asks_for_the_secret_or_a_confirmation(
    signed_in: Console, resources: Resources, unique
):
    name = unique("move")
    await make_app(signed_in, name, "first-secret")
    form = {
        "client_id": "client-1",
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://elsewhere.example/token",
        "scopes": "read write",
        "scope_separator": " ",
        "client_auth": "body",
        "pkce": "on",
        "refresh_margin": "300",
    }
    status, text, _ = await signed_in.post(f"/console/apps/{name}/edit", form)
    assert status == 409
    assert 'id="e-confirm_secret_destination"' in text and 'id="e-token_url"' in text
    assert (await apps.get(resources.pool, name)).token_url == "https://provider.example/token"
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "confirm_secret_destination": "on"}
    )
    assert status == 303
    assert (await apps.get(resources.pool, name)).token_url == "https://elsewhere.example/token"
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit",
        {**form, "token_url": "https://third.example/token", "client_secret": "second"},
    )
    assert status == 303
    moved = await apps.get(resources.pool, name)
    assert moved.token_url == "https://third.example/token"
    assert moved.client(resources.ring).client_secret == "second"


# ----------------------------------------------------------------------------------- CSRF


async def test_every_post_without_the_csrf_token_is_refused(
    signed_in: Console, resources: Resources, unique
):
    name = unique("csrf")
    await make_app(signed_in, name, "csrf-secret-1")
    status, _, response = await signed_in.post(f"/console/apps/{name}/connect", {})
    assert status == 303
    authorization_id = response.headers["Location"].rsplit("/", 1)[1]
    await signed_in.get(f"/console/connect/{authorization_id}")
    found = await apps.get(resources.pool, name)
    assert found is not None
    connection_id = await resources.pool.fetchval(
        "SELECT connection_id FROM authorizations WHERE id = $1",
        uuid.UUID(authorization_id),
    )
    await signed_in.post("/console/basic", {"name": name, "login": "l", "password": "p"})
    values = {"name": name, "connection_id": quote(connection_id, safe="")}
    posts = [
        route.path.format(**values)
        for route in views.routes
        if isinstance(route, web.RouteDef) and route.method == "POST"
    ]
    assert len(posts) >= 9, posts
    before = await resources.pool.fetchval("SELECT count(*) FROM connections")
    for path in posts:
        for csrf, origin in (
            (None, signed_in.base),
            ("", signed_in.base),
            ("forged-token", signed_in.base),
            ("auto", "https://evil.example"),
            ("auto", "null"),
        ):
            status, _, response = await signed_in.post(
                path, {"client_id": "changed"}, csrf=csrf, headers={"Origin": origin}
            )
            assert status == 403, (path, csrf, origin, status)
            assert not any(c.startswith(f"{COOKIE}=") for c in set_cookies(response))
    # Nothing changed, and the session still works.
    assert (await apps.get(resources.pool, name)).client_id == "client-1"
    assert await basic.get(resources.pool, name) is not None
    assert await resources.pool.fetchval("SELECT count(*) FROM connections") == before
    status, _, _ = await signed_in.get("/console")
    assert status == 200
    # The sign-in form has its own token.
    fresh = Console(signed_in.base)
    try:
        await fresh.get("/console/login")
        status, _, _ = await fresh.post("/console/login", {"key": "x"}, csrf=None)
        assert status == 403
    finally:
        await fresh.close()


# -------------------------------------------------------------------------------- secrets


async def test_secrets_never_appear_in_any_page(
    signed_in: Console,
    api: aiohttp.ClientSession,
    anonymous: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    worker,
    resources: Resources,
    unique,
):
    name = unique("secrets")
    await make_app(signed_in, name, oauth_server.client_secret, oauth_server)
    password = f"basic-pw-{uuid.uuid4().hex}"
    status, _, _ = await signed_in.post(
        "/console/basic", {"name": name, "login": "robot", "password": password}
    )
    assert status == 303
    # A real connection with real tokens.
    status, _, response = await signed_in.post(
        f"/console/apps/{name}/connect", {"connection_id": f"{name}-c1"}
    )
    assert status == 303
    status, page, _ = await signed_in.get(response.headers["Location"])
    authorize_url = html.unescape(re.search(r'href="(http[^"]+)" target="_blank"', page).group(1))
    location = await oauth_server.approve(authorize_url)
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded", outcome
    async with api.get(f"/v1/connections/{name}-c1/credentials") as answer:
        tokens = await answer.json()
    stored = await connections.get(resources.pool, f"{name}-c1")
    refresh_token = stored.open_refresh_token(resources.ring)
    assert refresh_token
    secrets = [oauth_server.client_secret, password, tokens["access_token"], refresh_token]

    # Every page reachable from the console's links, and the edit form after an error.
    seen: set[str] = set()
    queue = ["/console", f"/console/apps/{name}", "/console/basic"]
    pages = 0
    while queue:
        path = queue.pop()
        if path in seen or "/static/" in path or path.startswith("/console/events"):
            continue
        seen.add(path)
        status, text, _ = await signed_in.get(path)
        if status == 303:
            continue
        pages += 1
        for secret in secrets:
            assert secret not in text, path
        for link in re.findall(r'href="(/console[^"#]*)', text):
            queue.append(html.unescape(link))
    assert pages >= 8, seen
    status, text, _ = await signed_in.post(
        f"/console/apps/{name}/edit",
        {"client_id": "x", "client_secret": oauth_server.client_secret, "token_url": "nope"},
    )
    assert status == 400
    assert oauth_server.client_secret not in text
    status, text, _ = await signed_in.post(
        "/console/basic", {"name": name, "login": "a:b", "password": password}
    )
    assert status == 400
    assert password not in text


# ---------------------------------------------------------------------------------- forms


async def test_forms_keep_their_input_on_validation_errors(
    signed_in: Console, resources: Resources, unique
):
    name = unique("keep")
    await signed_in.get("/console/apps/new?preset=")
    status, text, _ = await signed_in.post(
        "/console/apps/new",
        {
            "name": name,
            "client_id": "client-<b>1</b>",
            "client_secret": "typed-secret-42",
            "authorization_url": "https://provider.example/authorize",
            "token_url": "ftp://provider.example/token",
            "scopes": "read write",
            "scope_separator": " ",
            "client_auth": "body",
            "authorize_params": "access_type=offline\nbroken line",
            "pkce": "on",
            "refresh_margin": "soon",
        },
    )
    assert status == 400
    assert f'value="{name}"' in text
    assert 'value="client-&lt;b&gt;1&lt;/b&gt;"' in text  # kept, and escaped
    assert 'value="ftp://provider.example/token"' in text
    assert 'value="read write"' in text
    assert "access_type=offline\nbroken line</textarea>" in text
    assert 'id="e-authorize_params"' in text and "Line 2" in text
    assert 'id="e-refresh_margin"' in text
    assert "typed-secret-42" not in text
    assert await apps.get(resources.pool, name) is None

    status, text, _ = await signed_in.post(
        "/console/apps/new",
        {
            "name": name,
            "client_id": "client-1",
            "authorization_url": "https://provider.example/authorize",
            "token_url": "ftp://provider.example/token",
            "scope_separator": " ",
            "client_auth": "body",
            "refresh_margin": "300",
        },
    )
    assert status == 400
    assert 'id="e-token_url"' in text and "https://" in text
    assert 'aria-invalid="true"' in text

    await make_app(signed_in, name, "kept-secret")
    status, text, _ = await signed_in.post(
        f"/console/apps/{name}/edit",
        {
            "client_id": "client-2",
            "authorization_url": "not a url",
            "token_url": "https://provider.example/token",
            "scopes": "read",
            "scope_separator": " ",
            "client_auth": "basic",
            "refresh_margin": "300",
        },
    )
    assert status == 400
    assert 'value="client-2"' in text and 'value="not a url"' in text
    assert '<option value="basic" selected>' in text
    assert (await apps.get(resources.pool, name)).client_id == "client-1"

    status, text, _ = await signed_in.post(
        f"/console/apps/{name}/connect", {"connection_id": "bad id!", "scopes": "read"}
    )
    assert status == 400
    assert 'value="bad id!"' in text and 'id="e-connection_id"' in text

    status, text, _ = await signed_in.post(
        "/console/basic", {"name": "bad name!", "login": "robot", "password": "pw"}
    )
    assert status == 400
    assert 'value="bad name!"' in text and 'value="robot"' in text
    assert 'id="e-name"' in text


async def test_edit_keeps_the_secret_when_left_empty(
    signed_in: Console, resources: Resources, unique
):
    name = unique("edit")
    await make_app(signed_in, name, "first-secret")
    before = await apps.get(resources.pool, name)
    status, text, _ = await signed_in.get(f"/console/apps/{name}/edit")
    assert status == 200
    assert "first-secret" not in text
    assert re.search(r'Client secret <span class="badge ok">set</span>', text)
    form = {
        "client_id": "client-1",
        "client_secret": "",
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
        "revoke_url": "",
        "scopes": "read write admin",
        "scope_separator": ",",
        "client_auth": "body",
        "authorize_params": "",
        "token_params": "",
        "pkce": "on",
        "refresh_margin": "300",
    }
    status, _, _ = await signed_in.post(f"/console/apps/{name}/edit", form)
    assert status == 303
    after = await apps.get(resources.pool, name)
    assert after.scopes == ["read", "write", "admin"]
    assert after.scope_separator == ","
    assert after.client_secret == before.client_secret
    assert after.client(resources.ring).client_secret == "first-secret"
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "client_secret": "second-secret"}
    )
    assert status == 303
    assert (await apps.get(resources.pool, name)).client(
        resources.ring
    ).client_secret == "second-secret"
    # Back to the space separator, which the schema alone cannot take.
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "scope_separator": " "}
    )
    assert status == 303
    assert (await apps.get(resources.pool, name)).scope_separator == " "


async def test_the_form_sets_reports_to_invalidate(
    signed_in: Console, resources: Resources, unique
):
    name = unique("reports")
    await make_app(signed_in, name, "a-secret")
    status, text, _ = await signed_in.get(f"/console/apps/{name}/edit")
    assert status == 200
    assert re.search(r'name="reports_to_invalidate"[^>]*value="3"', text), text
    form = {
        "client_id": "client-1",
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
        "scopes": "read write",
        "scope_separator": " ",
        "client_auth": "body",
        "pkce": "on",
        "refresh_margin": "300",
    }
    status, text, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "reports_to_invalidate": "0"}
    )
    assert status == 400 and 'id="e-reports_to_invalidate"' in text
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "reports_to_invalidate": "5"}
    )
    assert status == 303
    assert (await apps.get(resources.pool, name)).reports_to_invalidate == 5


async def test_create_from_a_preset(signed_in: Console, resources: Resources, unique):
    presets = pytest.importorskip("authbroker.presets")
    status, text, _ = await signed_in.get("/console/apps/new")
    assert status == 200
    assert "By hand" in text
    chosen = "microsoft" if "microsoft" in presets.names() else presets.names()[0]
    preset = presets.get(chosen)
    status, text, _ = await signed_in.get(f"/console/apps/new?preset={chosen}")
    assert status == 200
    assert f'name="preset" value="{chosen}"' in text
    name = unique("preset")
    form = {"name": name, "client_id": "cid", "client_secret": "preset-secret", "preset": chosen}
    # What the form showed, sent back unchanged: the preset's meaning is kept.
    for field in ("authorization_url", "token_url", "revoke_url", "client_auth", "refresh_margin"):
        found = re.search(rf'id="f-{field}"[^>]*value="([^"]*)"', text)
        if found:
            form[field] = html.unescape(found.group(1))
    form["client_auth"] = preset.values.get("client_auth", "body")
    form["scope_separator"] = preset.values.get("scope_separator", " ")
    form["scopes"] = " ".join(preset.values.get("scopes", []))
    form["authorize_params"] = "\n".join(
        f"{k}={v}" for k, v in preset.values.get("authorize_params", {}).items()
    )
    form["token_params"] = "\n".join(
        f"{k}={v}" for k, v in preset.values.get("token_params", {}).items()
    )
    if preset.values.get("pkce", True):
        form["pkce"] = "on"
    for placeholder in preset.placeholders:
        form[f"ph_{placeholder}"] = "contoso"
    status, text, _ = await signed_in.post("/console/apps/new", form)
    assert status == 303, text
    created = await apps.get(resources.pool, name)
    expected = presets.apply(chosen, {}, dict.fromkeys(preset.placeholders, "contoso"))
    assert created.authorization_url == expected["authorization_url"]
    assert "{" not in created.authorization_url
    assert created.preset == chosen
    assert created.client(resources.ring).client_secret == "preset-secret"


async def test_a_per_connection_setting_from_a_preset_is_asked_when_connecting(
    signed_in: Console, resources: Resources, unique
):
    """Zendesk's subdomain left empty on the preset's form: each connection gives it, in a
    field of the connect form, and every error is shown next to that field."""
    status, text, _ = await signed_in.get("/console/apps/new?preset=zendesk")
    assert status == 200
    assert "Leave it empty to take it from each connection" in text
    name = unique("zd")
    form = {"name": name, "client_id": "cid", "client_secret": "zd-secret", "preset": "zendesk"}
    for field in ("authorization_url", "token_url", "client_auth", "refresh_margin", "scopes"):
        found = re.search(rf'id="f-{field}"[^>]*value="([^"]*)"', text)
        if found:
            form[field] = html.unescape(found.group(1))
    form.update({"client_auth": "body", "scope_separator": " ", "pkce": "on", "ph_subdomain": ""})
    status, text, _ = await signed_in.post("/console/apps/new", form)
    assert status == 303, text
    created = await apps.get(resources.pool, name)
    assert created.connection_settings == ["subdomain"]
    assert created.token_url == "https://{subdomain}.zendesk.com/oauth/tokens"

    status, page, _ = await signed_in.get(f"/console/apps/{name}")
    assert status == 200
    assert "Connection settings" in page and 'name="setting_subdomain"' in page

    connect = f"/console/apps/{name}/connect"
    for value, words in [("", "Required"), ("evil.example", "Must be one DNS label")]:
        status, page, _ = await signed_in.post(
            connect, {"connection_id": f"{name}-c", "setting_subdomain": value}
        )
        assert status == 400
        error = re.search(r'id="e-setting_subdomain">([^<]*)<', page)
        assert error and words in html.unescape(error.group(1)), page
        assert f'value="{value}"' in page  # the input is kept
        assert await connections.get(resources.pool, f"{name}-c") is None

    status, _, response = await signed_in.post(
        connect, {"connection_id": f"{name}-c", "setting_subdomain": "acme"}
    )
    assert status in (302, 303), response.headers
    found = await connections.get(resources.pool, f"{name}-c")
    assert found is not None and found.settings == {"subdomain": "acme"}
    status, page, _ = await signed_in.get(response.headers["Location"])
    assert status == 200 and "acme.zendesk.com" in page
    status, page, _ = await signed_in.get(f"/console/apps/{name}")
    assert "<code>subdomain=acme</code>" in page


# --------------------------------------------------------------------------------- events


async def test_the_event_strip_and_its_live_stream(
    signed_in: Console, resources: Resources, redis, settings, unique
):
    app = unique("events")
    old = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")
    await redis.xadd(settings.events_stream, {"type": old["type"], "event": json.dumps(old)})
    status, text, _ = await signed_in.get(f"/console?events={quote('connection.refreshed')}")
    assert status == 200
    assert 'aria-live="polite"' in text
    assert f'data-id="{old["id"]}"' in text
    since = html.unescape(re.search(r'data-stream="([^"]+)"', text).group(1))
    assert "type=connection.refreshed" in since

    # Relayed after the page was rendered, before the stream opened: caught up from the stream;
    # then live ones as the relay appends them, filtered by type.
    missed = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")
    await redis.xadd(settings.events_stream, {"type": missed["type"], "event": json.dumps(missed)})
    other = make_event(EventType.REVOKED, app=app, connection_id=f"{app}-c", status="revoked")
    live = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")
    received: list[dict[str, Any]] = []
    async with signed_in.http.get(since, timeout=aiohttp.ClientTimeout(total=20)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")

        async def publish() -> None:
            await asyncio.sleep(0.5)
            for event in (other, live):
                await redis.xadd(
                    settings.events_stream, {"type": event["type"], "event": json.dumps(event)}
                )

        task = asyncio.create_task(publish())
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            line = await asyncio.wait_for(response.content.readline(), timeout=10)
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event["app"] == app:  # other tests' events may pass by
                    received.append(event)
        await task
    assert [e["id"] for e in received] == [missed["id"], live["id"]]
    assert "data" not in received[0]


# -------------------------------------------------------------------------------- browser


async def test_console_in_a_real_browser(
    console_url: str,
    web_server: str,
    api: aiohttp.ClientSession,
    admin_key: str,
    oauth_server: OAuthTestServer,
    worker,
    events,
    resources: Resources,
    unique,
):
    """Sign in, create an app from a preset pointed at the real OAuth server, connect an
    account through its login and consent pages, watch it become active and its event arrive,
    refresh it live and by button, diagnose it, delete it; on a laptop and on a phone."""
    name = unique("browser")
    connection_id = f"{name}-alice"
    async with browser.chromium() as chromium:
        context = await chromium.new_context(viewport=browser.LAPTOP)
        page = await context.new_page()
        page.set_default_timeout(20_000)
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        context.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )

        await page.goto(f"{console_url}/console")
        assert "/console/login" in page.url
        await browser.screenshot(page, "01-sign-in")
        await page.get_by_label("Admin API key").fill("ab_wrong_key")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_text("not a valid admin API key").wait_for()
        await browser.screenshot(page, "02-sign-in-refused")
        assert [p.split()[0] for p in problems] == ["401"]  # the refused sign-in, as it should
        problems.clear()
        await page.get_by_label("Admin API key").fill(admin_key)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Applications").wait_for()
        await browser.screenshot(page, "03-applications")

        await page.get_by_role("link", name="New application").first.click()
        try:
            from authbroker import presets

            chosen = "google" if "google" in presets.names() else presets.names()[0]
            title = presets.get(chosen).title
        except ImportError:
            chosen = title = None
        if chosen:
            await page.get_by_role("heading", name="New application").wait_for()
            await browser.screenshot(page, "04-new-application")
            await page.get_by_role("link", name=title).first.click()
        await page.get_by_label("Name", exact=True).fill(name)
        await page.get_by_label("Client id").fill(oauth_server.client_id)
        await page.get_by_label("Client secret").fill(oauth_server.client_secret)
        for label, value in (
            ("Authorization URL", oauth_server.authorization_url),
            ("Token URL", oauth_server.token_url),
            ("Revoke URL", oauth_server.revoke_url),
            ("Scopes", "read write"),
        ):
            await page.get_by_label(label, exact=False).first.fill(value)
        await page.get_by_label("Use PKCE (S256)").check()
        await browser.screenshot(page, "05-application-form")
        await page.get_by_role("button", name="Create the application").click()
        await page.get_by_role("heading", name="Redirect URL").wait_for()
        assert page.url.endswith(f"/console/apps/{name}")
        await page.get_by_text(f"Application {name} created").wait_for()
        assert await page.locator("#redirect-url").input_value() == resources.settings.redirect_url
        assert await page.get_by_role("button", name="Copy").is_visible()  # JS showed it
        if chosen:
            assert await page.get_by_text("Preset").first.is_visible()
        await browser.screenshot(page, "06-application")

        # Connect: this tab waits, the provider's pages open in a new one.
        await page.get_by_label("Connection id").fill(connection_id)
        await page.get_by_role("button", name="Connect", exact=True).click()
        await page.wait_for_url(re.compile(r"/console/connect/"))
        await browser.screenshot(page, "07-connect-waiting")
        async with context.expect_page() as opened:
            await page.locator("#authorize-link").click()
        provider = await opened.value
        await provider.wait_for_load_state()
        assert provider.url.startswith(oauth_server.base_url)
        await provider.locator('input[name="username"]').fill(oauth_server.username)
        await provider.locator('input[name="password"]').fill(oauth_server.password)
        await browser.screenshot(provider, "08-provider-login")
        await provider.locator('input[type="submit"]').click()
        await provider.locator('input[value="Authorize"]').wait_for()
        await browser.screenshot(provider, "09-provider-consent")
        await provider.locator('input[value="Authorize"]').click()
        await provider.wait_for_url(re.compile(r"/oauth/callback"))
        await provider.get_by_text("Connected").first.wait_for()
        await browser.screenshot(provider, "10-callback")
        await provider.close()

        # The waiting tab comes back by itself, with the connection active and its event.
        await page.wait_for_url(re.compile(rf"/console/apps/{name}"), timeout=30_000)
        await page.get_by_text(f"Connected: {connection_id} is active").wait_for()
        card = page.locator(f'[data-connection="{connection_id}"]')
        await card.locator(".badge.status-active").wait_for()
        strip = page.locator("#event-list")
        await strip.locator("li", has_text="connection.authorized").first.wait_for()
        await page.locator("[data-live-state]", has_text="live").wait_for()
        await browser.screenshot(page, "11-connection-active")

        # A refresh made elsewhere (the API) appears live, without reloading the page.
        async with api.post(f"/v1/connections/{connection_id}/refresh") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["outcome"] == "refreshed"
        await strip.locator("li.fresh", has_text="connection.refreshed").first.wait_for()
        await browser.screenshot(page, "12-live-event")

        # Refresh now, from the console.
        await card.get_by_role("button", name=f"Refresh {connection_id} now").click()
        await page.get_by_text(f"Refreshed {connection_id}.").wait_for()
        await (
            page.locator(f'[data-connection="{connection_id}"]').get_by_text("succeeded").wait_for()
        )
        await browser.screenshot(page, "13-refreshed")

        await (
            page.locator(f'[data-connection="{connection_id}"]')
            .get_by_role("link", name=f"Diagnose {connection_id}")
            .click()
        )
        await page.get_by_role(
            "heading", name=f"Diagnosis of connection {connection_id}"
        ).wait_for()
        await browser.screenshot(page, "14-connection-diagnosis")
        await page.get_by_role("link", name=f"Back to {name}").click()
        await page.get_by_role("link", name="Diagnose", exact=True).click()
        await page.get_by_role("heading", name=f"Diagnosis of {name}").wait_for()
        await browser.screenshot(page, "15-application-diagnosis")
        await page.get_by_role("link", name=f"Back to {name}").click()

        # Phone width: the same pages, one column.
        phone = await context.new_page()
        await phone.set_viewport_size(browser.PHONE)
        for path, shot in (
            (f"/console/apps/{name}", "16-phone-application"),
            ("/console", "17-phone-applications"),
            (f"/console/apps/{name}/edit", "18-phone-edit"),
        ):
            await phone.goto(f"{console_url}{path}")
            await phone.locator("main h1").wait_for()
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= browser.PHONE["width"], (path, width)
            await browser.screenshot(phone, shot)
        await phone.close()

        # Without JavaScript: the same page, the strip as rendered, no dead Copy button.
        plain = await chromium.new_context(
            viewport=browser.LAPTOP,
            java_script_enabled=False,
            storage_state=await context.storage_state(),
        )
        nojs = await plain.new_page()
        await nojs.goto(f"{console_url}/console/apps/{name}")
        await nojs.get_by_role("heading", name="Redirect URL").wait_for()
        assert not await nojs.get_by_role("button", name="Copy").is_visible()
        await nojs.locator("#event-list li", has_text="connection.refreshed").first.wait_for()
        await browser.screenshot(nojs, "19-no-javascript")
        await plain.close()

        # Delete, after a confirmation page.
        await (
            page.locator(f'[data-connection="{connection_id}"]')
            .get_by_role("link", name=f"Delete {connection_id}")
            .click()
        )
        await page.get_by_role("heading", name=f"Delete connection {connection_id}?").wait_for()
        await browser.screenshot(page, "20-delete-confirm")
        await page.get_by_role("button", name="Delete and revoke").click()
        await page.get_by_text(f"Connection {connection_id} is being revoked").wait_for()
        await events.wait_for(
            lambda e: e["type"] == "connection.revoked" and e["connection_id"] == connection_id
        )
        await strip.locator("li", has_text="connection.revoked").first.wait_for()
        await page.reload()
        await page.locator(f'[data-connection="{connection_id}"] .badge.status-revoked').wait_for()
        await browser.screenshot(page, "21-revoked")

        # Basic credentials: set one (the password never comes back), then delete it.
        await page.get_by_role("link", name="Basic credentials").click()
        await page.get_by_label("Name", exact=True).fill(name)
        await page.get_by_label("Login").fill("robot")
        await page.get_by_label("Password").fill("browser-basic-password")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_text(f"Basic credential {name} created").wait_for()
        assert "browser-basic-password" not in await page.content()
        await browser.screenshot(page, "22-basic-credentials")
        await page.get_by_role("link", name=f"Delete {name}").click()
        await page.get_by_role("button", name="Delete the credential").click()
        await page.get_by_text(f"Basic credential {name} deleted").wait_for()

        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_text("You are signed out").wait_for()
        await page.goto(f"{console_url}/console")
        assert "/console/login" in page.url
        await context.close()
    assert not problems, problems


# ------------------------------------------------------------------------------- webhooks

SECRET = re.compile(r'id="webhook-secret" type="text" readonly value="(whsec_[^"]+)"')


async def test_webhooks_page_shows_a_secret_once_and_posts_need_csrf(
    signed_in: Console, resources: Resources, unique
):
    """Create (refused input stays on the form, named), the secret on that answer only, then
    disable, enable, rotate, delete; every POST of the page refused without its CSRF token."""
    from handlers.console import webhooks as webhook_views

    status, page, _ = await signed_in.get("/console/webhooks")
    assert status == 200 and 'aria-current="page">Webhooks' in page
    status, page, _ = await signed_in.post(
        "/console/webhooks",
        {"url": "https://169.254.169.254/hook", "types": "connection.refreshd", "apps": ""},
    )
    assert status == 400
    assert "metadata address" in page and "Unknown event type" in page
    assert 'value="connection.refreshd"' in page  # the input is kept
    app = unique("conhook")
    url = f"https://hooks.example.com/{app}"
    status, page, _ = await signed_in.post(
        "/console/webhooks", {"url": url, "types": "connection. app.", "apps": app}
    )
    assert status == 201, page
    secret = SECRET.search(page).group(1)
    webhook_id = await resources.pool.fetchval("SELECT id::text FROM webhooks WHERE url = $1", url)
    assert webhook_id and f'data-webhook="{webhook_id}"' in page
    status, page, _ = await signed_in.get("/console/webhooks")
    assert url in page and secret not in page and "webhook-secret" not in page

    posts = [
        route.path.format(webhook_id=webhook_id, delivery_id="1")
        for route in webhook_views.routes
        if isinstance(route, web.RouteDef) and route.method == "POST"
    ]
    assert len(posts) == 6, posts
    for path in posts:
        for csrf in (None, "forged-token"):
            status, _, _ = await signed_in.post(path, {}, csrf=csrf)
            assert status == 403, (path, csrf)
    assert await resources.pool.fetchval(
        "SELECT enabled FROM webhooks WHERE id = $1::uuid", webhook_id
    )

    status, _, response = await signed_in.post(f"/console/webhooks/{webhook_id}/disable")
    assert status == 303 and response.headers["Location"] == "/console/webhooks"
    _, page, _ = await signed_in.get("/console/webhooks")
    assert "disabled: by an operator" in page and "Deliveries to" in page
    status, _, _ = await signed_in.post(f"/console/webhooks/{webhook_id}/enable")
    assert status == 303
    status, page, _ = await signed_in.post(f"/console/webhooks/{webhook_id}/rotate")
    assert status == 200
    rotated = SECRET.search(page).group(1)
    assert rotated != secret and "previous secret keeps signing" in page
    _, page, _ = await signed_in.get("/console/webhooks")
    assert rotated not in page and "signs too until" in page

    status, page, _ = await signed_in.get(f"/console/webhooks/{webhook_id}/delete")
    assert status == 200 and "Delete this webhook subscription?" in page
    status, _, _ = await signed_in.post(f"/console/webhooks/{webhook_id}/delete")
    assert status == 303
    _, page, _ = await signed_in.get("/console/webhooks")
    assert "deleted." in page and f'data-webhook="{webhook_id}"' not in page
    status, _, _ = await signed_in.get(f"/console/webhooks/{uuid.uuid4()}/delete")
    assert status == 404


async def test_webhooks_in_a_real_browser(
    console_url: str, admin_key: str, worker, resources: Resources, unique
):
    """Subscribe a receiver on loopback, copy the secret shown once, see a delivery (verified
    with the secret) among the last deliveries, replay it, disable and enable, rotate, delete;
    on a laptop and on a phone."""
    from authbroker_client import verify_webhook

    from storage import outbox
    from tests.chaos_helpers import FakeProvider, wait_until

    app = unique("browserhook")
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    receiver = await FakeProvider().start()
    receiver.handlers["/hook"] = hook
    try:
        async with browser.chromium() as chromium:
            context = await chromium.new_context(viewport=browser.LAPTOP)
            page = await context.new_page()
            page.set_default_timeout(20_000)
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            await page.goto(f"{console_url}/console/login?next=/console/webhooks")
            await page.get_by_label("Admin API key").fill(admin_key)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("heading", name="Webhooks", exact=True).wait_for()

            await page.get_by_role("textbox", name="URL").fill(receiver.url("/hook"))
            await page.get_by_label("Event types").fill("connection.")
            await page.get_by_label("Apps").fill(app)
            await page.get_by_label("Description").fill("browser test")
            await page.get_by_role("button", name="Create the subscription").click()
            await page.get_by_text("copy the secret now").wait_for()
            secret = await page.locator("#webhook-secret").input_value()
            assert secret.startswith("whsec_")
            assert await page.get_by_role("button", name="Copy").is_visible()
            await browser.screenshot(page, "30-webhook-created")

            event = make_event(
                EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active"
            )
            async with resources.pool.acquire() as conn, conn.transaction():
                await outbox.append(conn, event)

            async def delivered() -> bool:
                return len(received) >= 1

            assert await wait_until(delivered, timeout=60)
            headers, body = received[0]
            assert verify_webhook(headers, body, secret) == event

            await page.get_by_role("link", name="Webhooks", exact=True).click()
            card = page.locator(".webhook", has_text=receiver.url("/hook"))
            await card.locator(".badge", has_text="delivered").wait_for()
            assert secret not in await page.content()
            await browser.screenshot(page, "31-webhook-delivered")

            await card.get_by_role(
                "button", name=f"Replay connection.refreshed {event['id']}"
            ).click()
            await page.get_by_text(f"Sending connection.refreshed {event['id']} again").wait_for()

            async def replayed() -> bool:
                return len(received) >= 2

            assert await wait_until(replayed, timeout=60)
            assert received[1][0]["webhook-id"] == event["id"]

            await card.get_by_role("button", name=f"Disable {receiver.url('/hook')}").click()
            await card.locator(".badge", has_text="disabled").wait_for()
            await browser.screenshot(page, "32-webhook-disabled")
            await card.get_by_role("button", name=f"Enable {receiver.url('/hook')}").click()
            await card.locator(".badge", has_text="enabled").wait_for()

            await card.get_by_role(
                "button", name=f"Rotate the secret of {receiver.url('/hook')}"
            ).click()
            await page.get_by_text("New signing secret").wait_for()
            rotated = await page.locator("#webhook-secret").input_value()
            assert rotated.startswith("whsec_") and rotated != secret

            phone = await context.new_page()
            await phone.set_viewport_size(browser.PHONE)
            await phone.goto(f"{console_url}/console/webhooks")
            await phone.locator("main h1").wait_for()
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= browser.PHONE["width"], width
            await browser.screenshot(phone, "33-phone-webhooks")
            await phone.close()

            await page.get_by_role("link", name="Webhooks", exact=True).click()
            await card.get_by_role("link", name=f"Delete {receiver.url('/hook')}").click()
            await page.get_by_role("button", name="Delete the subscription").click()
            await page.get_by_text("deleted.").first.wait_for()
            assert not await page.locator(".webhook", has_text=receiver.url("/hook")).count()
            await context.close()
        assert not problems, problems
    finally:
        await receiver.stop()


async def test_a_button_makes_a_new_signing_key(signed_in: Console, resources: Resources, unique):
    name = unique("keys")
    await make_app(signed_in, name, "a-secret")
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    assert status == 200 and "Generate a new signing key" not in text  # body: no keys
    app = await apps.get(resources.pool, name)
    async with resources.pool.acquire() as conn:
        await apps.update(conn, resources.ring, app, {"client_auth": "private_key_jwt"})
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    first = (await apps.get(resources.pool, name)).jwks["keys"][0]["kid"]
    assert first in text and "Generate a new signing key" in text
    status, _, response = await signed_in.post(f"/console/apps/{name}/keys", {"alg": "ES256"})
    assert status == 303 and response.headers["Location"] == f"/console/apps/{name}"
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    after = (await apps.get(resources.pool, name)).jwks["keys"]
    assert [k["kty"] for k in after] == ["EC", "RSA"] and after[1]["kid"] == first
    assert f"New ES256 signing key {after[0]['kid']}" in text
    assert "PRIVATE KEY" not in text
    status, _, _ = await signed_in.post(f"/console/apps/{name}/keys", {}, csrf=None)
    assert status == 403


async def test_the_basic_page_shows_which_wait_for_a_password(
    signed_in: Console, api: aiohttp.ClientSession, unique
):
    waiting, ready = unique("waits"), unique("ready")
    document = {"version": 1, "credentials": [{"name": waiting, "login": "imported"}]}
    async with api.post("/v1/basic/import", json=document) as response:
        assert response.status == 200, await response.text()
    async with api.put(f"/v1/basic/{ready}", json={"login": "l", "password": "p"}) as response:
        assert response.status == 201
    status, text, _ = await signed_in.get("/console/basic")
    assert status == 200
    rows = {
        name: row for name, row in re.findall(r"<code>([^<]+)</code></th>(.*?)</tr>", text, re.S)
    }
    assert "awaiting password" in rows[waiting] and "awaiting password" not in rows[ready]
    # Setting it from the page ends the wait.
    await signed_in.post(
        "/console/basic", {"name": waiting, "login": "imported", "password": "now-set"}
    )
    status, text, _ = await signed_in.get("/console/basic")
    rows = {
        name: row for name, row in re.findall(r"<code>([^<]+)</code></th>(.*?)</tr>", text, re.S)
    }
    assert "awaiting password" not in rows[waiting]


LINK_FIELD = re.compile(r'id="connect-link" type="text" readonly value="([^"]+)"')


async def test_a_connect_link_button_shows_a_link_that_authorizes(
    signed_in: Console,
    api: aiohttp.ClientSession,
    anonymous: aiohttp.ClientSession,
    oauth_server: OAuthTestServer,
    worker,
    resources: Resources,
    unique,
):
    name = unique("clink")
    await make_app(signed_in, name, oauth_server.client_secret, oauth_server)
    cid = f"{name}-1"
    async with api.post(f"/v1/apps/{name}/connections", json={"connection_id": cid}) as response:
        assert response.status == 201
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    assert "Make a connect link" in text and f"Make a connect link for {cid}" in text

    status, text, _ = await signed_in.post(
        f"/console/apps/{name}/connect-link", {"connection_id": cid}
    )
    assert status == 201, text
    url = html.unescape(LINK_FIELD.search(text).group(1))
    assert "/connect/" in url and "only time" in text and cid in text
    location = await oauth_server.approve(url)
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded" and outcome["connection_id"] == cid
    assert (await connections.get(resources.pool, cid)).status == "active"

    # On the app, for a new connection; a bad id makes no link and says why.
    status, text, _ = await signed_in.post(f"/console/apps/{name}/connect-link", {"scopes": "read"})
    assert status == 201 and "conn_" in text
    status, _, response = await signed_in.post(
        f"/console/apps/{name}/connect-link", {"connection_id": "bad id!"}
    )
    assert status == 303 and response.headers["Location"].startswith(f"/console/apps/{name}")
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    assert "No link was made" in text
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/connect-link", {"connection_id": cid}, csrf=None
    )
    assert status == 403


async def test_the_app_form_sets_reconnect_links(signed_in: Console, resources: Resources, unique):
    name = unique("relinks")
    await make_app(signed_in, name, "a-secret")
    assert (await apps.get(resources.pool, name)).reconnect_links is False
    form = {
        "client_id": "client-1",
        "authorization_url": "https://provider.example/authorize",
        "token_url": "https://provider.example/token",
        "scopes": "read write",
        "scope_separator": " ",
        "client_auth": "body",
        "pkce": "on",
        "refresh_margin": "300",
    }
    status, _, _ = await signed_in.post(
        f"/console/apps/{name}/edit", {**form, "reconnect_links": "on"}
    )
    assert status == 303
    assert (await apps.get(resources.pool, name)).reconnect_links is True
    status, text, _ = await signed_in.get(f"/console/apps/{name}/edit")
    assert re.search(r'name="reconnect_links" type="checkbox" value="on" checked', text)
    status, text, _ = await signed_in.get(f"/console/apps/{name}")
    assert "in events that need a new sign-in" in text
    status, _, _ = await signed_in.post(f"/console/apps/{name}/edit", form)
    assert (await apps.get(resources.pool, name)).reconnect_links is False


async def test_a_service_connection_from_the_console(
    signed_in: Console, oauth_server, worker, events, unique
):
    """An app without an authorization URL offers no user sign-in, only service connections;
    the form starts one, and a bad resource is named on the form, nothing stored."""
    name = unique("svc")
    client_id, secret = oauth_server.create_application(
        "https://unused.example/cb", name=name, grant="client-credentials"
    )
    form = {
        "name": name,
        "client_id": client_id,
        "client_secret": secret,
        "token_url": oauth_server.token_url,
        "scopes": "read",
        "scope_separator": " ",
        "client_auth": "body",
        "refresh_margin": "300",
    }
    await signed_in.get("/console/apps/new?preset=")
    status, text, _ = await signed_in.post("/console/apps/new", form)
    assert status == 303, text
    status, page, _ = await signed_in.get(f"/console/apps/{name}")
    assert status == 200
    assert "Connect an account" not in page and "Service connection" in page

    status, page, _ = await signed_in.post(
        f"/console/apps/{name}/service-connection",
        {"connection_id": f"{name}-svc", "resource": "not-a-uri"},
    )
    assert status == 400 and "absolute URI" in page
    status, page, _ = await signed_in.post(
        f"/console/apps/{name}/service-connection",
        {"connection_id": f"{name}-svc", "audience": "https://api.example.com"},
    )
    assert status == 303, page
    await events.wait_for(
        lambda e: e["type"] == "connection.authorized" and e["connection_id"] == f"{name}-svc",
        120,
    )
    status, page, _ = await signed_in.get(f"/console/apps/{name}")
    assert "client credentials (service connection)" in page
    assert "audience=https://api.example.com" in page and "New token" in page
