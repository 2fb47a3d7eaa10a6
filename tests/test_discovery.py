"""Discovery against a real HTTP server on 127.0.0.1 serving metadata documents."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from authbroker.discovery import MAX_BODY, DiscoveryError, discover, well_known_urls

RFC8414 = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"

Reply = Callable[[str], web.StreamResponse]
"""Builds the answer for a path, given the server's origin (http://127.0.0.1:PORT)."""


@contextlib.asynccontextmanager
async def metadata_server(routes: dict[str, Reply]) -> AsyncIterator[str]:
    """Serve `routes` (anything else is a 404) and yield the server's origin."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        reply = routes.get(request.path)
        if reply is None:
            raise web.HTTPNotFound()
        return reply(f"http://{request.host}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def document(path: str = "", **fields: Any) -> Reply:
    """A metadata document for the issuer origin+path; `fields` override or (None) remove."""

    def reply(origin: str) -> web.Response:
        issuer = origin + path
        doc: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "revocation_endpoint": f"{issuer}/revoke",
            "scopes_supported": ["openid", "email"],
        }
        doc.update(fields)
        return web.json_response({k: v for k, v in doc.items() if v is not None})

    return reply


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_rfc8414_with_basic_and_post_prefers_basic(session: aiohttp.ClientSession) -> None:
    methods = ["client_secret_post", "client_secret_basic"]
    routes = {
        RFC8414: document(
            token_endpoint_auth_methods_supported=methods,
            code_challenge_methods_supported=["plain", "S256"],
        )
    }
    async with metadata_server(routes) as origin:
        found = await discover(session, origin)
    assert found == {
        "authorization_url": f"{origin}/authorize",
        "token_url": f"{origin}/token",
        "revoke_url": f"{origin}/revoke",
        "client_auth": "basic",
        "pkce": True,
        "issuer": origin,
        "require_iss": False,
        "scopes": [],
        "_scopes_supported": ["openid", "email"],
        "_metadata_url": f"{origin}{RFC8414}",
    }


async def test_the_issuer_and_its_promise_of_iss_become_app_settings(
    session: aiohttp.ClientSession,
) -> None:
    """RFC 9207: the issuer is what callbacks must name; a server whose metadata promises `iss`
    on every authorization response makes a callback without one a mix-up."""
    routes = {
        "/tenant" + OIDC: document("/tenant", authorization_response_iss_parameter_supported=True)
    }
    async with metadata_server(routes) as origin:
        found = await discover(session, f"{origin}/tenant")
    assert found["issuer"] == f"{origin}/tenant"
    assert found["require_iss"] is True
    for promise in (False, "true", None):
        routes = {RFC8414: document(authorization_response_iss_parameter_supported=promise)}
        async with metadata_server(routes) as origin:
            found = await discover(session, origin)
        assert found["require_iss"] is False, promise


async def test_only_post_means_body(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(token_endpoint_auth_methods_supported=["client_secret_post"])}
    async with metadata_server(routes) as origin:
        found = await discover(session, origin)
    assert found["client_auth"] == "body"


async def test_defaults_when_methods_are_absent(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(revocation_endpoint=None, scopes_supported=None)}
    async with metadata_server(routes) as origin:
        found = await discover(session, origin)
    # RFC 8414 §2: no token_endpoint_auth_methods_supported means client_secret_basic.
    assert found["client_auth"] == "basic"
    assert found["pkce"] is True
    assert found["revoke_url"] is None
    assert found["_scopes_supported"] == []


async def test_pkce_off_when_s256_is_not_listed(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(code_challenge_methods_supported=["plain"])}
    async with metadata_server(routes) as origin:
        assert (await discover(session, origin))["pkce"] is False


async def test_falls_back_to_openid_configuration(session: aiohttp.ClientSession) -> None:
    routes = {OIDC: document(token_endpoint_auth_methods_supported=["client_secret_basic"])}
    async with metadata_server(routes) as origin:
        found = await discover(session, origin)
    assert found["_metadata_url"] == f"{origin}{OIDC}"
    assert found["token_url"] == f"{origin}/token"


async def test_issuer_with_a_path(session: aiohttp.ClientSession) -> None:
    routes = {f"{RFC8414}/tenant1": document("/tenant1")}
    async with metadata_server(routes) as origin:
        found = await discover(session, f"{origin}/tenant1")
    assert found["_metadata_url"] == f"{origin}/.well-known/oauth-authorization-server/tenant1"
    assert found["authorization_url"] == f"{origin}/tenant1/authorize"


def test_well_known_urls() -> None:
    assert well_known_urls("https://as.example/tenant1/") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant1",
        "https://as.example/tenant1/.well-known/openid-configuration",
    ]
    assert well_known_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration",
    ]


async def test_issuer_mismatch(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(issuer="https://evil.example")}
    async with metadata_server(routes) as origin:
        with pytest.raises(DiscoveryError, match=re.escape("names issuer 'https://evil.example'")):
            await discover(session, origin)


async def test_missing_token_endpoint(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(token_endpoint=None)}
    async with metadata_server(routes) as origin:
        with pytest.raises(
            DiscoveryError, match=re.escape(f"{origin}{RFC8414} has no token_endpoint")
        ):
            await discover(session, origin)


async def test_plain_http_endpoint_on_another_host(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(token_endpoint="http://as.example/token")}
    async with metadata_server(routes) as origin:
        with pytest.raises(DiscoveryError, match=r"token_endpoint .* must use https"):
            await discover(session, origin)


async def test_redirect_is_not_followed(session: aiohttp.ClientSession) -> None:
    def moved(origin: str) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": f"{origin}/elsewhere"})

    routes = {RFC8414: moved, "/elsewhere": document(), OIDC: document()}
    async with metadata_server(routes) as origin:
        with pytest.raises(
            DiscoveryError, match=re.escape(f"redirects (302) to {origin}/elsewhere")
        ):
            await discover(session, origin)


async def test_not_json(session: aiohttp.ClientSession) -> None:
    def page(origin: str) -> web.StreamResponse:
        return web.Response(text="<html>welcome</html>", content_type="text/html")

    routes = {RFC8414: page}
    async with metadata_server(routes) as origin:
        with pytest.raises(DiscoveryError, match=re.escape(f"{origin}{RFC8414} is not JSON")):
            await discover(session, origin)


async def test_404_on_both(session: aiohttp.ClientSession) -> None:
    async with metadata_server({}) as origin:
        with pytest.raises(DiscoveryError) as caught:
            await discover(session, origin)
    message = str(caught.value)
    assert f"{origin}{RFC8414} answered 404" in message
    assert f"{origin}{OIDC} answered 404" in message


async def _spaces() -> AsyncIterator[bytes]:
    for _ in range(MAX_BODY // 65536 + 1):
        yield b" " * 65536


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_size_is_capped(session: aiohttp.ClientSession, chunked: bool) -> None:
    def huge(origin: str) -> web.StreamResponse:
        body = _spaces() if chunked else b" " * (MAX_BODY + 1)
        return web.Response(body=body, content_type="application/json")

    async with metadata_server({RFC8414: huge}) as origin:
        with pytest.raises(DiscoveryError, match="larger than 1024 KiB"):
            await discover(session, origin)


async def test_server_error_stops_discovery(session: aiohttp.ClientSession) -> None:
    def broken(origin: str) -> web.StreamResponse:
        return web.Response(status=503)

    async with metadata_server({RFC8414: broken, OIDC: document()}) as origin:
        with pytest.raises(DiscoveryError, match="answered 503"):
            await discover(session, origin)


async def test_unreachable(session: aiohttp.ClientSession) -> None:
    async with metadata_server({}) as origin:
        pass  # closed: nothing listens on its port any more
    with pytest.raises(DiscoveryError, match=re.escape(f"could not fetch {origin}{RFC8414}")):
        await discover(session, origin, timeout=5)


@pytest.mark.parametrize(
    "issuer",
    ["http://as.example", "ftp://as.example", "https://as.example/?tenant=1", "as.example"],
)
async def test_bad_issuer(session: aiohttp.ClientSession, issuer: str) -> None:
    with pytest.raises(DiscoveryError, match="issuer"):
        await discover(session, issuer)


@pytest.mark.parametrize(
    ("methods", "has_key", "expected"),
    [
        (["client_secret_basic", "private_key_jwt"], True, "private_key_jwt"),
        (["client_secret_basic", "private_key_jwt"], False, "basic"),  # today's choice
        (["client_secret_post", "private_key_jwt"], False, "body"),
        (["private_key_jwt"], False, "private_key_jwt"),  # a key is made for it
        (["client_secret_jwt"], False, "client_secret_jwt"),
    ],
)
async def test_jwt_methods(
    session: aiohttp.ClientSession, methods: list[str], has_key: bool, expected: str
) -> None:
    routes = {RFC8414: document(token_endpoint_auth_methods_supported=methods)}
    async with metadata_server(routes) as origin:
        found = await discover(session, origin, has_signing_key=has_key)
    assert found["client_auth"] == expected


async def test_no_usable_method_is_an_error_naming_them(session: aiohttp.ClientSession) -> None:
    routes = {RFC8414: document(token_endpoint_auth_methods_supported=["tls_client_auth"])}
    async with metadata_server(routes) as origin:
        with pytest.raises(DiscoveryError, match="it lists tls_client_auth"):
            await discover(session, origin)
