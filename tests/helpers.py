"""Helpers the test modules share: an app at the real OAuth server, a connection authorized
through it like a browser would, rows inserted directly, counts read at the server."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from authbroker import oauth
from storage import apps, connections
from storage.resources import Resources
from tests.oauth_server import OAuthTestServer, basic_auth_header


def app_body(name: str, secret: str, **overrides: Any) -> dict[str, Any]:
    """A valid app at a provider nobody contacts (no test here exchanges or revokes a token)."""
    return {
        "name": name,
        "client_id": f"client-{name}",
        "client_secret": secret,
        "authorization_url": "https://auth.example.com/oauth/authorize",
        "token_url": "https://auth.example.com/oauth/token",
        "revoke_url": "https://auth.example.com/oauth/revoke",
        "scopes": ["read", "write"],
        **overrides,
    }


async def sealed_secret(resources: Resources, name: str) -> tuple[Any, bytes]:
    row = await resources.pool.fetchrow("SELECT id, client_secret FROM apps WHERE name = $1", name)
    assert row is not None
    return row["id"], row["client_secret"]


async def authorize_for_real(api, anonymous, oauth_server, events, name: str) -> dict[str, Any]:
    """An app at the real server and one connection authorized through it, tokens stored."""
    await create_oauth_app(api, oauth_server, name)
    started = await start_connection(api, name, connection_id=f"{name}-c")
    location = await oauth_server.approve(started["authorize_url"])
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded", outcome
    await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorized" and e["connection_id"] == started["connection_id"]
        )
    )
    return started


async def publish(redis, settings, event: dict[str, Any]) -> str:
    """Append an event the way the relay does."""
    return await redis.xadd(
        settings.events_stream,
        {"type": event["type"], "event": json.dumps(event, separators=(",", ":"))},
    )


def resolve_as(monkeypatch: pytest.MonkeyPatch, name: str, address: str) -> None:
    """Make `name` resolve to `address` in this process (the DNS answer a hostile name gives)."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".") == name:
            return real(address, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


async def insert_app(res: Resources, name: str, token_url: str, **values: Any) -> apps.App:
    async with res.pool.acquire() as conn:
        return await apps.create(
            conn,
            res.ring,
            {
                "name": name,
                "client_id": f"client-{name}",
                "client_secret": f"secret-{name}",
                "authorization_url": "https://faults.provider.test/oauth/authorize",
                "token_url": token_url,
                "scopes": ["read"],
                **values,
            },
        )


async def insert_connection(
    res: Resources, app: apps.App, connection_id: str, refresh_token: str
) -> None:
    """An active connection as an exchange leaves it, without going through a provider."""
    async with res.pool.acquire() as conn, conn.transaction():
        await connections.start(
            conn,
            connection_id=connection_id,
            app_id=app.id,
            requested_scopes=["read"],
            metadata=None,
        )
        await connections.store_tokens(
            conn,
            res.ring,
            connection_id,
            oauth.TokenResponse(
                access_token=f"at-{secrets.token_hex(8)}",
                token_type="Bearer",
                expires_in=3600,
                refresh_token=refresh_token,
                refresh_token_expires_in=None,
                scopes=["read"],
                extra={},
                placement="body",
            ),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            refresh_at=datetime.now(UTC) + timedelta(hours=1),
            refresh_token_expires_at=None,
            requested_scopes=["read"],
            granted_scopes=["read"],
            problem=None,
            authorized=True,
        )


async def stored_refresh_token(res: Resources, connection_id: str) -> str | None:
    found = await connections.get(res.pool, connection_id)
    assert found is not None
    return found.open_refresh_token(res.ring)


async def create_oauth_app(
    api: aiohttp.ClientSession, server: OAuthTestServer, name: str, **overrides: Any
) -> dict[str, Any]:
    body = {
        "name": name,
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "authorization_url": server.authorization_url,
        "token_url": server.token_url,
        "revoke_url": server.revoke_url,
        "scopes": ["read", "write"],
        **overrides,
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def follow_callback(
    session: aiohttp.ClientSession, location: str, *, json_answer: bool = True
) -> tuple[int, Any]:
    """Do what the browser does with the provider's redirect: request our callback."""
    parts = urlsplit(location)
    headers = {"Accept": "application/json"} if json_answer else {"Accept": "text/html"}
    async with session.get(f"{parts.path}?{parts.query}", headers=headers) as response:
        body = await response.json() if json_answer else await response.text()
        return response.status, body


async def start_connection(api: aiohttp.ClientSession, app: str, **body: Any) -> dict[str, Any]:
    async with api.post(f"/v1/apps/{app}/connections", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def authorize(api, anonymous, server: OAuthTestServer, app: str, connection_id: str) -> None:
    started = await start_connection(api, app, connection_id=connection_id)
    location = await server.approve(started["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded", outcome


async def refresh_count(server: OAuthTestServer) -> dict[str, int]:
    stats = await server.stats()
    return stats.get("token_requests", {}).get("refresh_token", {})


async def stored_tokens(resources: Resources, connection_id: str) -> tuple[str, str]:
    found = await connections.get(resources.pool, connection_id)
    assert found is not None
    return found.open_access_token(resources.ring) or "", found.open_refresh_token(
        resources.ring
    ) or ""


@asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[str]:
    """`app` served on loopback at `port` for the block; its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def revoke_at_provider(
    server: OAuthTestServer, token: str, hint: str = "refresh_token"
) -> None:
    """The user removes the integration in the provider's settings (RFC 7009 at the server)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.revoke_url,
            data={"token": token, "token_type_hint": hint},
            headers={"Authorization": basic_auth_header(server.client_id, server.client_secret)},
        ) as response,
    ):
        assert response.status == 200
