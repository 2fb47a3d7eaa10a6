"""Outbound rules: where a provider endpoint may be. Production refuses loopback and private
targets (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, ::1, fc00::/7) unless
AUTHBROKER_ALLOWED_NETWORKS lists them; everywhere, metadata and link-local addresses are refused
unless AUTHBROKER_ALLOW_LINK_LOCAL=1. Checked when a URL is saved (a 400 naming the field) and
when a worker connects, for names and IP literals alike: a request to a forbidden address never
leaves, whatever the stored URL says."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from authbroker import netguard
from authbroker.schemas import AppCreate
from services import apps as apps_service
from services.errors import Invalid
from services.refresh import refresh_one
from storage import connections
from tests.chaos_helpers import FakeProvider, open_stack, private_database, stack_settings
from tests.helpers import insert_app, insert_connection, resolve_as
from worker.context import WorkerContext, provider_session

PRODUCTION = netguard.Rules(refuse_private=True)
ALLOWING_TEN = netguard.Rules(
    refuse_private=True, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)
)
PRIVATE_TARGETS = [
    "https://10.0.0.5/token",
    "https://172.20.1.1/token",
    "https://192.168.1.1/token",
    "https://100.64.0.9/token",
    "https://127.0.0.1/token",
    "http://127.0.0.1:8080/token",
    "https://[::1]/token",
    "https://[fd12:3456::1]/token",
    "https://[::ffff:10.0.0.5]/token",
    "https://0x7f.0.0.1/token",
    "https://localhost/token",
]


def definition(token_url: str) -> dict[str, Any]:
    return {
        "name": f"out-{uuid.uuid4().hex[:8]}",
        "client_id": "client",
        "authorization_url": "https://provider.example/authorize",
        "token_url": token_url,
    }


async def refusal(token_url: str, rules: netguard.Rules, settings) -> str | None:
    """What saving an app with this token URL says: the validation error or the resolved
    host's refusal; None when it is accepted."""
    context = {"allow_http": False, "rules": rules}
    try:
        model = AppCreate.model_validate(definition(token_url), context=context)
    except ValueError as exc:
        return str(exc)
    deployment = settings.replace(
        env="production" if rules.refuse_private else "test",
        allowed_networks=rules.allowed_networks,
    )
    assert deployment.outbound == rules
    found = await apps_service.forbidden_hosts(model.model_dump(), deployment)
    return found[0]["message"] if found else None


# ------------------------------------------------------------------------------ when saved


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
async def test_production_refuses_private_targets_when_saved(settings, url):
    assert await refusal(url, PRODUCTION, settings) is not None
    assert await refusal(url, netguard.Rules(), settings) is None, "development allows it"


async def test_allowed_networks_let_one_through(settings):
    assert await refusal("https://10.0.0.5/token", ALLOWING_TEN, settings) is None
    assert await refusal("https://[::ffff:10.1.2.3]/token", ALLOWING_TEN, settings) is None
    assert await refusal("https://192.168.1.1/token", ALLOWING_TEN, settings) is not None
    assert await refusal("https://169.254.169.254/token", ALLOWING_TEN, settings) is not None


async def test_a_name_resolving_to_a_private_address_is_refused_in_production(
    settings, monkeypatch
):
    resolve_as(monkeypatch, "intranet.hostile.test", "10.9.8.7")
    url = "https://intranet.hostile.test/token"
    assert "resolves to 10.9.8.7" in (await refusal(url, PRODUCTION, settings) or "")
    assert await refusal(url, ALLOWING_TEN, settings) is None
    with pytest.raises(Invalid) as info:
        await apps_service.check_hosts({"token_url": url}, settings.replace(env="production"))
    assert info.value.details["fields"][0]["field"] == "token_url"


@pytest.fixture(scope="module")
async def production_api(admin_dsn, settings, ring) -> AsyncIterator[aiohttp.ClientSession]:
    """The API of a production deployment that allows 10.0.0.0/8."""
    async with private_database(admin_dsn, purpose="outbound") as database_url:
        own = stack_settings(
            settings, prefix=f"outbound-{uuid.uuid4().hex[:8]}", database_url=database_url
        ).replace(env="production", allowed_networks=ALLOWING_TEN.allowed_networks)
        async with open_stack(own, ring, worker=False) as stack:
            yield stack.api()


@pytest.mark.parametrize("field", ["token_url", "revoke_url", "probe_url"])
async def test_the_api_names_the_private_field_and_takes_an_allowed_one(production_api, field):
    body = {**definition("https://provider.example/token"), field: "https://192.168.0.10/x"}
    async with production_api.post("/v1/apps", json=body) as response:
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["fields"][0]["field"] == field
    assert "AUTHBROKER_ALLOWED_NETWORKS" in answer["fields"][0]["message"]
    body[field] = "https://10.0.0.10/x"
    async with production_api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()


# ------------------------------------------------------------------------------ when connecting


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = await FakeProvider().start()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    fake.handlers["/x"] = ok
    yield fake
    await fake.stop()


async def fetch(rules: netguard.Rules, url: str) -> int:
    async with provider_session(rules) as http, http.get(url) as response:
        return response.status


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_production_refuses_private_targets_when_connecting(provider, host):
    """An IP literal goes through the same rule as a name: the connector checks the address
    it is about to connect to, however it got it."""
    url = provider.url("/x").replace("127.0.0.1", host)
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await fetch(PRODUCTION, url)
    assert isinstance(info.value.os_error, netguard.ForbiddenAddress)
    assert provider.hits["/x"] == 0
    loopback = netguard.Rules(
        refuse_private=True, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),)
    )
    assert await fetch(loopback, url) == 200
    assert await fetch(netguard.Rules(), url) == 200
    assert provider.hits["/x"] == 2


async def test_a_link_local_literal_is_refused_when_connecting_without_a_packet_sent():
    """Before, literals skipped the guarded resolver: a stored metadata address was dialled."""
    for url in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]:9/"):
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await fetch(netguard.Rules(), url)
        assert isinstance(info.value.os_error, netguard.ForbiddenAddress), url


async def test_ipv6_loopback_keeps_working_in_development():
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/x", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"http://[::1]:{port}/x"
        context = {"allow_http": False, "rules": netguard.Rules()}
        assert AppCreate.model_validate(definition(url), context=context).token_url == url
        assert await fetch(netguard.Rules(), url) == 200
        with pytest.raises(aiohttp.ClientConnectorError):
            await fetch(PRODUCTION, url)
    finally:
        await runner.cleanup()


async def test_a_refresh_in_production_never_reaches_a_private_token_endpoint(
    admin_dsn, settings, ring, provider
):
    """An app stored before the rules (or by a DNS answer that changed) points at loopback:
    the worker refuses to connect, and says why."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "at-new", "expires_in": 3600})

    provider.handlers["/token"] = token
    async with private_database(admin_dsn, purpose="outbound") as database_url:
        own = stack_settings(
            settings, prefix=f"outbound-{uuid.uuid4().hex[:8]}", database_url=database_url
        ).replace(env="production")
        async with open_stack(own, ring, web_app=False, worker=False) as stack:
            res = stack.resources
            app = await insert_app(res, f"out-{uuid.uuid4().hex[:8]}", provider.url("/token"))
            cid = f"{app.name}-1"
            await insert_connection(res, app, cid, "rt-0")
            async with provider_session(own.outbound) as http:
                context = WorkerContext(resources=res, http=http)
                outcome = await refresh_one(context, cid, force=True)
            assert outcome == "retrying"
            assert provider.hits["/token"] == 0
            found = await connections.get(res.pool, cid)
            assert found is not None and found.last_error is not None
            assert found.last_error["error"] == "address_refused"
            assert "refusing to connect to 127.0.0.1" in found.last_error["description"]
