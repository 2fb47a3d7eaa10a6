"""Health endpoints and API keys, through the real web server.

A load balancer reads /healthz and /readyz; every /v1 call needs an API key, and every refusal
is the same 401 whatever was wrong, so the answer says nothing about which keys exist.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from authbroker.embedded import free_port
from handlers.app import create_app
from storage import api_keys
from storage.resources import Resources

UNAUTHORIZED = "unauthorized"


async def test_healthz(anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.get("/healthz") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"status": "ok"}


async def test_readyz_when_everything_is_up(anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.get("/readyz") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"postgres": "ok", "redis": "ok"}
    assert "message" not in body


async def _refusal(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.status == 401
    assert response.content_type == "application/json"
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    body = await response.json()
    assert body["error"] == UNAUTHORIZED
    assert "Authorization: Bearer" in body["message"]
    return body


async def test_no_key_is_refused(anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.get("/v1/apps") as response:
        await _refusal(response)


async def test_every_kind_of_bad_key_gets_the_same_answer(
    anonymous: aiohttp.ClientSession, resources: Resources, unique: Callable[[str], str]
) -> None:
    revoked_key, revoked_plain = await api_keys.create(resources.pool, unique("revoked"))
    assert await api_keys.revoke(resources.pool, revoked_key.id)
    _, valid = await api_keys.create(resources.pool, unique("valid"))

    async with anonymous.get("/v1/apps") as response:
        reference = await _refusal(response)

    bad_headers = {
        "malformed": "Bearer not-a-key",
        "unknown": "Bearer ab_000000000000_xxx",
        "revoked": f"Bearer {revoked_plain}",
        "wrong scheme": f"Basic {valid}",
        "empty bearer": "Bearer ",
        "over-long": f"Bearer {valid}{'x' * 300}",
        "valid id, wrong secret": f"Bearer {valid[:-1]}{'A' if valid[-1] != 'A' else 'B'}",
    }
    for label, header in bad_headers.items():
        async with anonymous.get("/v1/apps", headers={"Authorization": header}) as response:
            assert await _refusal(response) == reference, label


async def test_valid_key_is_accepted_and_its_use_recorded(
    anonymous: aiohttp.ClientSession, resources: Resources, unique: Callable[[str], str]
) -> None:
    key, plaintext = await api_keys.create(resources.pool, unique("runtime"))
    assert key.last_used_at is None
    async with anonymous.get(
        "/v1/apps", headers={"Authorization": f"Bearer {plaintext}"}
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert isinstance(body["items"], list)
    # The scheme is case-insensitive, surrounding spaces are ignored.
    async with anonymous.get(
        "/v1/apps", headers={"Authorization": f"bearer  {plaintext} "}
    ) as response:
        assert response.status == 200
    listed = {k.id: k for k in await api_keys.list_all(resources.pool)}
    assert listed[key.id].last_used_at is not None


async def test_the_admin_api_client_works(api: aiohttp.ClientSession) -> None:
    async with api.get("/v1/apps") as response:
        assert response.status == 200


async def test_health_endpoints_need_no_key(anonymous: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz"):
        async with anonymous.get(path, headers={"Authorization": "Bearer junk"}) as response:
            assert response.status == 200, path


# --------------------------------------------------------------------------- storage.api_keys


async def test_stored_key_has_no_plaintext(
    resources: Resources, unique: Callable[[str], str]
) -> None:
    name = unique("stored")
    key, plaintext = await api_keys.create(resources.pool, name)
    prefix, key_id, secret = plaintext.split("_")
    assert prefix == "ab"
    assert key_id == key.id
    assert len(secret) >= 32

    row = await resources.pool.fetchrow("SELECT * FROM api_keys WHERE id = $1", key.id)
    assert row is not None
    assert row["name"] == name
    for column, value in dict(row).items():
        text = value.hex() if isinstance(value, bytes) else str(value)
        assert secret not in text, column
        if isinstance(value, bytes):
            assert secret.encode() not in value, column
    assert row["key_hash"] != secret.encode()
    # ...and a leaked hash is not the key: it must not itself be accepted as one.
    assert await api_keys.verify(resources.pool, f"ab_{key.id}_{row['key_hash'].hex()}") is None


async def test_verify(resources: Resources, unique: Callable[[str], str]) -> None:
    key, plaintext = await api_keys.create(resources.pool, unique("verify"))
    found = await api_keys.verify(resources.pool, plaintext)
    assert found is not None
    assert found.id == key.id
    assert found.name == key.name
    assert found.revoked_at is None

    # One character changed anywhere in the secret, or in the id: not a key.
    _, key_id, secret = plaintext.split("_")
    for position in (0, len(secret) // 2, len(secret) - 1):
        changed = (
            secret[:position] + ("a" if secret[position] != "a" else "b") + secret[position + 1 :]
        )
        assert await api_keys.verify(resources.pool, f"ab_{key_id}_{changed}") is None
    other_id = key_id[:-1] + ("0" if key_id[-1] != "0" else "1")
    assert await api_keys.verify(resources.pool, f"ab_{other_id}_{secret}") is None
    for malformed in ("", "ab", "ab__", f"ab_{key_id}_", f"xx_{key_id}_{secret}", secret):
        assert await api_keys.verify(resources.pool, malformed) is None


async def test_revoke(resources: Resources, unique: Callable[[str], str]) -> None:
    key, plaintext = await api_keys.create(resources.pool, unique("to-revoke"))
    assert await api_keys.revoke(resources.pool, key.id) is True
    assert await api_keys.verify(resources.pool, plaintext) is None
    assert await api_keys.revoke(resources.pool, key.id) is False  # already revoked
    listed = {k.id: k for k in await api_keys.list_all(resources.pool)}
    assert listed[key.id].revoked_at is not None


async def test_keys_are_distinct(resources: Resources, unique: Callable[[str], str]) -> None:
    created = [await api_keys.create(resources.pool, unique("many")) for _ in range(5)]
    assert len({plain for _, plain in created}) == 5
    assert len({key.id for key, _ in created}) == 5


# --------------------------------------------------------------------------- readiness


async def test_readyz_is_503_naming_redis_when_redis_is_down(resources: Resources) -> None:
    dead_redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    broken = Resources(
        settings=resources.settings,
        ring=resources.ring,
        pool=resources.pool,
        redis=dead_redis,  # type: ignore[arg-type]
    )
    server = TestServer(create_app(broken))
    try:
        async with TestClient(server) as client:
            response = await client.get("/readyz")
            assert response.status == 503
            body = await response.json()
            # Liveness does not depend on Redis.
            alive = await client.get("/healthz")
            assert alive.status == 200
    finally:
        await dead_redis.aclose()
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert "redis" in body["message"]
    assert "postgres" not in body["message"]


@pytest.mark.parametrize("path", ["/v1/apps", "/v1/basic", "/v1/connections"])
async def test_v1_routes_are_all_protected(anonymous: aiohttp.ClientSession, path: str) -> None:
    async with anonymous.get(path) as response:
        await _refusal(response)


async def _raw_get(base_url: str, path: str, authorization: bytes) -> tuple[int, bytes]:
    """A request with exactly these header bytes (aiohttp's client would refuse to send them)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Authorization: " + authorization + b"\r\n\r\n"
        )
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_non_ascii_key_is_refused_like_any_other(web_server: str) -> None:
    status, body = await _raw_get(web_server, "/v1/apps", "Bearer ab_é_x".encode())
    assert status == 401
    assert json.loads(body)["error"] == UNAUTHORIZED


async def test_non_utf8_key_is_refused_with_401(web_server: str) -> None:
    status, body = await _raw_get(web_server, "/v1/apps", b"Bearer ab_\xff\xfe_x")
    assert status == 401
    assert json.loads(body)["error"] == UNAUTHORIZED
