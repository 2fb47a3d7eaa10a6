"""Secret hygiene: the whole OAuth flow against the real server (authorize, exchange, refresh,
on-demand and reported refresh, a refused grant, a code kept through a Redis outage, revoke)
and Basic credentials, with every log line at debug level and every event captured (the Redis
stream, the pub/sub channel and the outbox rows). No client secret, previous secret, password,
access or refresh token, code, PKCE verifier, state or API key may appear in any of them, nor
in any column of the tables that hold them (checked while each secret is stored); nor may the
Basic form of a client secret (base64 of `id:secret`), even from a provider that echoes it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import aiohttp
import pytest
import structlog
from aiohttp import web
from redis.asyncio import Redis

from authbroker.events import EventType, make_event
from authbroker.logs import configure_logging
from authbroker.oauth import basic_credentials
from handlers import callback
from services import queue
from services.queue import enqueue_exchange
from storage import authorizations, connections
from storage.resources import Resources
from tests.chaos_helpers import FakeProvider
from tests.helpers import create_oauth_app, follow_callback, start_connection
from tests.oauth_server import basic_auth_header

TABLES = ("apps", "basic_credentials", "connections", "authorizations", "outbox", "api_keys")


class Secrets:
    """Every secret value the run handled, and the spellings it could leak in."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, label: str, value: str | None) -> None:
        assert value, f"{label}: nothing captured"
        assert len(value) >= 12, f"{label}: too short to search for safely"
        self.values[label] = value

    def add_client_secret(self, label: str, client_id: str, secret: str) -> None:
        """A client secret and its Basic form, the Authorization header authbroker builds."""
        self.add(label, secret)
        self.add(f"{label}, Basic form", basic_credentials(client_id, secret))

    def forms(self) -> Iterator[tuple[str, str]]:
        for label, value in self.values.items():
            for form in {value, quote_plus(value), quote(value, safe="")}:
                yield label, form

    def find_in(self, text: str) -> list[str]:
        return sorted({label for label, form in self.forms() if form in text})

    def find_in_bytes(self, data: bytes) -> list[str]:
        return sorted({label for label, form in self.forms() if form.encode() in data})


@contextlib.contextmanager
def debug_logs() -> Iterator[io.StringIO]:
    """Route structlog and stdlib logging, at debug level, to a buffer; restore afterwards."""
    buffer = io.StringIO()
    restore = sys.stderr
    sys.stderr = buffer  # configure_logging binds sys.stderr when called
    try:
        configure_logging("json", "debug")
    finally:
        sys.stderr = restore
    try:
        yield buffer
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("json", os.environ.get("AUTHBROKER_TEST_LOG_LEVEL", "warning"))


@contextlib.asynccontextmanager
async def channel_messages(redis: Redis, channel: str) -> AsyncIterator[list[str]]:
    """Every message published on the events channel while the block runs."""
    received: list[str] = []
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    stop = asyncio.Event()

    async def listen() -> None:
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                received.append(str(message["data"]))

    task = asyncio.create_task(listen())
    try:
        yield received
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()


async def plaintext_in_tables(
    res: Resources, found: Secrets, tables: tuple[str, ...] = TABLES
) -> dict[str, list[str]]:
    """Which secrets appear in plaintext in which table, reading every column of every row
    (bytea as raw bytes, arrays and jsonb as their JSON text)."""
    hits: dict[str, list[str]] = {}
    for table in tables:
        for row in await res.pool.fetch(f"SELECT * FROM {table}"):
            for column, value in dict(row).items():
                if value is None:
                    continue
                if isinstance(value, bytes | bytearray | memoryview):
                    labels = found.find_in_bytes(bytes(value))
                else:
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                    labels = found.find_in(text)
                if labels:
                    hits.setdefault(f"{table}.{column}", []).extend(labels)
    return hits


async def tokens_of(res: Resources, connection_id: str) -> tuple[str, str]:
    found = await connections.get(res.pool, connection_id)
    assert found is not None
    return found.open_access_token(res.ring) or "", found.open_refresh_token(res.ring) or ""


async def verifier_of(res: Resources, authorization_id: str) -> str | None:
    found = await authorizations.get(res.pool, uuid.UUID(authorization_id))
    assert found is not None
    return found.open_verifier(res.ring)


async def test_no_secret_in_logs_events_or_plaintext_columns(
    api,
    anonymous,
    oauth_server,
    worker,
    resources,
    settings,
    redis,
    events,
    admin_key,
    unique,
    monkeypatch,
):
    res = resources
    found = Secrets()
    found.add("api key", admin_key)
    app = unique("hygiene")
    client_id, client_secret = oauth_server.create_application(settings.redirect_url, name=app)
    found.add_client_secret("client secret", client_id, client_secret)
    previous = f"previous-{secrets.token_urlsafe(24)}"
    found.add_client_secret("previous client secret", client_id, previous)
    basic_name, login, password = unique("basic"), "svc-hygiene", secrets.token_urlsafe(24)
    found.add("basic password", password)
    found.add("basic header", base64.b64encode(f"{login}:{password}".encode()).decode())
    tables_checked: list[dict[str, list[str]]] = []

    with debug_logs() as logs:
        async with channel_messages(redis, settings.events_channel) as published:
            await create_oauth_app(
                api, oauth_server, app, client_id=client_id, client_secret=client_secret
            )
            async with api.patch(
                f"/v1/apps/{app}", json={"client_secrets_previous": [previous]}
            ) as response:
                assert response.status == 200, await response.text()

            async with api.put(
                f"/v1/basic/{basic_name}", json={"login": login, "password": password}
            ) as response:
                assert response.status == 201, await response.text()
            async with api.get(f"/v1/basic/{basic_name}/credentials") as response:
                assert (await response.json())["password"] == password

            # Sign-in 1: the whole flow, then every kind of refresh, then revoke.
            cid = f"{app}-1"
            started = await start_connection(api, app, connection_id=cid)
            found.add("state 1", parse_qs(urlsplit(started["authorize_url"]).query)["state"][0])
            found.add("verifier 1", await verifier_of(res, started["authorization_id"]))
            tables_checked.append(await plaintext_in_tables(res, found))
            location = await oauth_server.approve(started["authorize_url"])
            found.add("code 1", parse_qs(urlsplit(location).query)["code"][0])
            _, outcome = await follow_callback(anonymous, location)
            assert outcome["status"] == "succeeded", outcome
            access, refresh = await tokens_of(res, cid)
            found.add("access token 1", access)
            found.add("refresh token 1", refresh)
            tables_checked.append(await plaintext_in_tables(res, found))

            async with api.get(f"/v1/connections/{cid}/credentials") as response:
                assert (await response.json())["access_token"] == access
            async with api.post(f"/v1/connections/{cid}/refresh") as response:
                assert (await response.json())["outcome"] == "refreshed"
            access, refresh = await tokens_of(res, cid)
            found.add("access token 2", access)
            found.add("refresh token 2", refresh)
            async with api.post(
                f"/v1/connections/{cid}/report",
                json={"status": 401, "www_authenticate": 'Bearer error="invalid_token"'},
            ) as response:
                assert (await response.json())["action"] == "refreshed"
            access, refresh = await tokens_of(res, cid)
            found.add("access token 3", access)
            found.add("refresh token 3", refresh)
            async with api.post(
                f"/v1/connections/{cid}/report",
                json={
                    "status": 403,
                    "www_authenticate": 'Bearer error="insufficient_scope", scope="admin"',
                },
            ) as response:
                assert response.status == 200
            tables_checked.append(await plaintext_in_tables(res, found))

            # Sign-in 2: the user revokes the grant at the provider; the refresh is refused.
            cid2 = f"{app}-2"
            started = await start_connection(api, app, connection_id=cid2)
            found.add("state 2", parse_qs(urlsplit(started["authorize_url"]).query)["state"][0])
            found.add("verifier 2", await verifier_of(res, started["authorization_id"]))
            location = await oauth_server.approve(started["authorize_url"])
            found.add("code 2", parse_qs(urlsplit(location).query)["code"][0])
            _, outcome = await follow_callback(anonymous, location)
            assert outcome["status"] == "succeeded", outcome
            access2, refresh2 = await tokens_of(res, cid2)
            found.add("access token 4", access2)
            found.add("refresh token 4", refresh2)
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    oauth_server.revoke_url,
                    data={"token": refresh2, "token_type_hint": "refresh_token"},
                    headers={"Authorization": basic_auth_header(client_id, client_secret)},
                ) as response,
            ):
                assert response.status == 200
            async with api.post(f"/v1/connections/{cid2}/refresh") as response:
                body = await response.json()
            assert body["connection"]["problem"] == "refresh_token_invalidated", body

            # Sign-in 3: the code waits in the database (Redis "down" at the callback).
            async def not_enqueued(*_args: Any) -> None:
                raise ConnectionError("Redis is down")

            cid3 = f"{app}-3"
            started = await start_connection(api, app, connection_id=cid3)
            found.add("state 3", parse_qs(urlsplit(started["authorize_url"]).query)["state"][0])
            found.add("verifier 3", await verifier_of(res, started["authorization_id"]))
            location = await oauth_server.approve(started["authorize_url"])
            code3 = parse_qs(urlsplit(location).query)["code"][0]
            found.add("code 3", code3)
            with monkeypatch.context() as patch:
                patch.setattr(queue, "enqueue_exchange", not_enqueued)
                patch.setattr(callback, "WAIT_FOR_OUTCOME", 0.1)
                _, outcome = await follow_callback(anonymous, location)
            assert outcome["status"] == "pending", outcome
            waiting = await authorizations.get(res.pool, uuid.UUID(started["authorization_id"]))
            assert waiting is not None and waiting.open_code(res.ring) == code3  # sealed, kept
            tables_checked.append(await plaintext_in_tables(res, found))
            await enqueue_exchange(res, uuid.UUID(started["authorization_id"]))
            await events.wait_for(
                lambda e: e["type"] == "connection.authorized" and e["connection_id"] == cid3
            )
            access3, refresh3 = await tokens_of(res, cid3)
            found.add("access token 5", access3)
            found.add("refresh token 5", refresh3)
            tables_checked.append(await plaintext_in_tables(res, found))

            # Revoke (delete) every connection; delete the Basic credential.
            for connection_id in (cid, cid2, cid3):
                async with api.delete(f"/v1/connections/{connection_id}") as response:
                    assert response.status == 202
            for connection_id in (cid, cid2, cid3):
                await events.wait_for(
                    lambda e, c=connection_id: (
                        e["type"] == "connection.revoked" and e["connection_id"] == c
                    )
                )
            async with api.delete(f"/v1/basic/{basic_name}") as response:
                assert response.status == 204
            await asyncio.sleep(0.5)  # the last publications reach the subscriber

    captured = logs.getvalue()
    # The capture is real: every stage logged, at debug level, as JSON lines.
    for name in (
        "app_created",
        "basic_credential_set",
        "authorization_started",
        "callback_accepted",
        "connection_authorized",
        "connection_refreshed",
        "connection_invalidated",
        "exchange_enqueue_failed",
        "connection_revoked",
        '"level": "debug"',
    ):
        assert name in captured, name
    ours = [e for e in await events.all() if e["app"] == app]
    assert {e["type"] for e in ours} >= {
        "connection.authorized",
        "connection.refreshed",
        "connection.invalidated",
        "connection.insufficient_scope",
        "connection.revoked",
    }
    assert sum(app in message for message in published) >= len(ours)

    assert found.find_in(captured) == [], "secrets in the logs"
    stream = json.dumps(await redis.xrange(settings.events_stream))
    assert found.find_in(stream) == [], "secrets in the event stream"
    assert found.find_in("\n".join(published)) == [], "secrets on the events channel"
    outbox = "\n".join(r["e"] for r in await res.pool.fetch("SELECT event::text AS e FROM outbox"))
    assert app in outbox
    assert found.find_in(outbox) == [], "secrets in the outbox"
    tables_checked.append(await plaintext_in_tables(res, found))
    for moment, hits in enumerate(tables_checked):
        assert hits == {}, f"plaintext secrets in the database (check {moment}): {hits}"


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_failed_requests_log_no_secret_either(
    api, anonymous, oauth_server, worker, resources, settings, unique, fmt
):
    """Refusals and errors log too: a wrong client secret at the token endpoint, a forged
    callback, a bad API key. None of what was sent appears in the lines they produce."""
    found = Secrets()
    app = unique("hygiene-fail")
    wrong_secret = f"wrong-{secrets.token_urlsafe(24)}"
    found.add("wrong client secret", wrong_secret)
    bad_key = f"ab_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
    found.add("bad api key", bad_key)
    buffer = io.StringIO()
    restore = sys.stderr
    sys.stderr = buffer
    try:
        configure_logging(fmt, "debug")
    finally:
        sys.stderr = restore
    try:
        await create_oauth_app(api, oauth_server, app, client_secret=wrong_secret)
        started = await start_connection(api, app)
        location = await oauth_server.approve(started["authorize_url"])
        code = parse_qs(urlsplit(location).query)["code"][0]
        found.add("code", code)
        found.add("state", parse_qs(urlsplit(location).query)["state"][0])
        _, outcome = await follow_callback(anonymous, location)
        assert outcome["status"] == "failed" and outcome["problem"] == "invalid_settings"
        forged = f"forged-{secrets.token_urlsafe(24)}"
        found.add("forged state", forged)
        status, _ = await follow_callback(anonymous, f"/oauth/callback?code={code}&state={forged}")
        assert status == 400
        async with (
            aiohttp.ClientSession(base_url=settings.public_url) as session,
            session.get("/v1/apps", headers={"Authorization": f"Bearer {bad_key}"}) as response,
        ):
            assert response.status == 401
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("json", os.environ.get("AUTHBROKER_TEST_LOG_LEVEL", "warning"))
    captured = buffer.getvalue()
    assert "authorization_failed" in captured and "callback_refused" in captured
    assert found.find_in(captured) == []


async def test_webhook_secrets_stay_out_of_logs_events_and_columns(
    api, worker, resources, redis, settings, unique
):
    """A subscription's secret, and the one a rotation makes, are answered once each and
    appear in no log line (debug level), no event, and no column in plaintext, while
    deliveries signed with them go out."""
    from storage import outbox
    from tests.chaos_helpers import FakeProvider, wait_until

    found = Secrets()
    app = unique("hygiene-hook")
    received: list[bytes] = []

    async def hook(request):
        from aiohttp import web

        received.append(await request.read())
        return web.Response(status=200)

    server = await FakeProvider().start()
    server.handlers["/in"] = hook
    try:
        with debug_logs() as logs:
            async with api.post(
                "/v1/webhooks", json={"url": server.url("/in"), "apps": [app]}
            ) as response:
                created = await response.json()
            found.add("webhook secret", created["secret"])
            found.add("webhook key", created["secret"].removeprefix("whsec_"))
            async with api.post(f"/v1/webhooks/{created['id']}/rotate-secret") as response:
                rotated = await response.json()
            found.add("rotated secret", rotated["secret"])
            found.add("rotated key", rotated["secret"].removeprefix("whsec_"))
            event = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c")
            async with resources.pool.acquire() as conn, conn.transaction():
                await outbox.append(conn, event)

            async def delivered() -> bool:
                return bool(received)

            assert await wait_until(delivered, timeout=60)
            async with api.get(f"/v1/webhooks/{created['id']}/deliveries") as response:
                history = await response.text()
            tables = ("webhooks", "webhook_deliveries", "webhook_attempts", "outbox")
            hits = await plaintext_in_tables(resources, found, tables)
            async with api.delete(f"/v1/webhooks/{created['id']}"):
                pass
            captured = logs.getvalue()
    finally:
        await server.stop()
    assert "webhook_created" in captured and "webhook_secret_rotated" in captured
    assert hits == {}, f"plaintext secrets in the database: {hits}"
    assert found.find_in(captured) == [], "secrets in the logs"
    assert found.find_in(history) == [], "secrets in the attempts"
    assert found.find_in(json.dumps(await redis.xrange(settings.events_stream))) == []
    assert found.find_in_bytes(received[0]) == [], "a secret in a delivery's body"


async def test_a_provider_echoing_the_basic_header_leaks_it_nowhere(
    api, anonymous, worker, resources, settings, redis, events, unique
):
    """The token endpoint refuses each secret (current, then previous) and quotes the
    Authorization header it got, bare and with its scheme: neither secret nor its Basic form
    reaches a log line, an event or a column."""
    provider = await FakeProvider().start()

    async def echo(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        return web.json_response(
            {
                "error": "invalid_client",
                "error_description": f"refused {header.removeprefix('Basic ')} ({header})",
            },
            status=401,
        )

    provider.handlers["/token"] = echo
    found = Secrets()
    app, client_id = unique("hygiene-echo"), f"client {uuid.uuid4().hex[:6]}"
    secret, previous = f"now-{secrets.token_urlsafe(24)}", f"old-{secrets.token_urlsafe(24)}"
    found.add_client_secret("client secret", client_id, secret)
    found.add_client_secret("previous client secret", client_id, previous)
    try:
        with debug_logs() as logs:
            async with api.post(
                "/v1/apps",
                json={
                    "name": app,
                    "client_id": client_id,
                    "client_secret": secret,
                    "client_secrets_previous": [previous],
                    "client_auth": "basic",
                    "authorization_url": provider.url("/authorize"),
                    "token_url": provider.url("/token"),
                },
            ) as response:
                assert response.status == 201, await response.text()
            started = await start_connection(api, app)
            state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
            _, outcome = await follow_callback(
                anonymous, f"/oauth/callback?code=c0de&state={state}"
            )
            assert outcome["problem"] == "invalid_settings", outcome
            await events.wait_for(
                lambda e: (
                    e["type"] == "connection.authorization_failed"
                    and e["connection_id"] == started["connection_id"]
                )
            )
        assert provider.hits["/token"] == 4  # each secret in the header, then in the body
        failed = await connections.get(resources.pool, started["connection_id"])
        assert failed is not None and "[redacted]" in failed.last_error["description"]
        assert found.find_in(logs.getvalue()) == [], "secrets in the logs"
        stream = json.dumps(await redis.xrange(settings.events_stream))
        assert found.find_in(stream) == [], "secrets in the event stream"
        assert await plaintext_in_tables(resources, found) == {}
    finally:
        await provider.stop()
