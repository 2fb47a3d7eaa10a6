"""The refresh engine (worker/engine.py) as an operator would watch it: batches of due
connections claimed and refreshed once each across engines, leases that outlive a slow
provider, and a token endpoint that fails for every connection: held back, probed one
connection at a time, and released at full speed when it answers again.

Each test runs on a database of its own, so no other worker claims its connections; the
provider's answers are shaped with aioresponses (an outage cannot be ordered from a real
server), and passes of the engine are driven one at a time where a test counts requests.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from services import refresh as refresh_module
from storage import apps, connections, endpoints
from storage.resources import Resources
from tests.chaos_helpers import aioresponses_compat, open_stack, private_database, stack_settings
from tests.helpers import insert_app, insert_connection
from worker import engine as engine_module
from worker.context import WorkerContext
from worker.engine import RefreshEngine

PROVIDER = "https://engine.provider.test"


@dataclass
class Provider:
    """One token endpoint: rotating refresh tokens (each works once), or an outage, as the test
    sets `mode`; every request is counted by what it got."""

    mode: str = "ok"  # ok | 503 | 503-retry-after | slow
    delay: float = 0.0
    valid: set[str] = field(default_factory=set)
    served: Counter[str] = field(default_factory=Counter)
    refreshed: Counter[str] = field(default_factory=Counter)  # by the token presented

    def grant(self) -> str:
        token = f"rt-{secrets.token_hex(8)}"
        self.valid.add(token)
        return token

    async def respond(self, url: Any, **kwargs: Any) -> CallbackResult:
        form = dict(parse_qsl((kwargs.get("data") or b"").decode()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode.startswith("503"):
            self.served["503"] += 1
            headers = {"Retry-After": "20"} if self.mode == "503-retry-after" else {}
            return CallbackResult(status=503, body="", headers=headers)
        token = form.get("refresh_token", "")
        if token not in self.valid:
            self.served["invalid_grant"] += 1
            return CallbackResult(status=400, payload={"error": "invalid_grant"})
        self.valid.discard(token)
        self.served["ok"] += 1
        self.refreshed[token] += 1
        return CallbackResult(
            payload={
                "access_token": f"at-{secrets.token_hex(8)}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": self.grant(),
            }
        )


@dataclass
class Rig:
    resources: Resources
    http: aiohttp.ClientSession
    mock: aioresponses
    unique: Callable[[str], str]
    admin_key: str

    def engine(self, concurrency: int = 20) -> RefreshEngine:
        wc = WorkerContext(resources=self.resources, http=self.http)
        return RefreshEngine(
            wc, concurrency=concurrency, dsn=self.resources.settings.database_url or ""
        )

    async def app(self, provider: Provider, **values: Any) -> apps.App:
        name = self.unique("engine")
        token_url = f"{PROVIDER}/{name}/token"
        self.mock.post(token_url, callback=provider.respond, repeat=True)
        return await insert_app(self.resources, name, token_url, **values)

    async def connections(
        self, app: apps.App, provider: Provider, count: int, *, due: bool = True
    ) -> list[str]:
        ids = [f"{app.name}-{secrets.token_hex(4)}" for _ in range(count)]
        for cid in ids:
            await insert_connection(self.resources, app, cid, provider.grant())
        if due:
            await self.make_due(ids)
        return ids

    async def make_due(self, ids: list[str]) -> None:
        await self.resources.pool.execute(
            "UPDATE connections SET refresh_at = now() - interval '1 second' WHERE id = ANY($1)",
            ids,
        )

    async def refreshed(self, ids: list[str]) -> int:
        return await self.resources.pool.fetchval(
            "SELECT count(*) FROM connections WHERE id = ANY($1) AND last_refresh_at IS NOT NULL",
            ids,
        )

    async def app_events(self, app: apps.App, kind: str) -> list[dict[str, Any]]:
        rows = await self.resources.pool.fetch(
            "SELECT event FROM outbox WHERE event->>'app' = $1 AND event->>'type' = $2 ORDER BY id",
            app.name,
            kind,
        )
        return [r["event"] for r in rows]

    async def endpoint(self, app: apps.App) -> endpoints.Endpoint:
        found = await endpoints.get(self.resources.pool, app.token_url)
        assert found is not None
        return found

    async def probe_now(self, app: apps.App) -> None:
        await self.resources.pool.execute(
            "UPDATE token_endpoints SET next_probe_at = now() WHERE url = $1", app.token_url
        )


@pytest.fixture
async def rig(admin_dsn, settings, ring, unique) -> AsyncIterator[Rig]:
    async with private_database(admin_dsn) as database_url:
        s = stack_settings(settings, prefix=unique("engine"), database_url=database_url)
        async with (
            open_stack(s, ring, web_app=True, worker=False) as stack,
            aiohttp.ClientSession() as http,
        ):
            with aioresponses_compat(), aioresponses(passthrough_unmatched=True) as mock:
                yield Rig(stack.resources, http, mock, unique, stack.admin_key)


async def one_pass(engine: RefreshEngine, free: int | None = None) -> int:
    """One claim pass, and the refreshes it started run to their end."""
    started = await engine.dispatch(free or engine.concurrency)
    await engine.idle()
    return started


# --------------------------------------------------------------------------------------------
# Batches and single flight
# --------------------------------------------------------------------------------------------


async def test_engines_side_by_side_refresh_each_due_connection_once(rig: Rig) -> None:
    """Three engines claim from the same due set at the same time: every due connection is
    refreshed exactly once (a one-time refresh token presented twice would be refused), the
    connections not due and those of a paused app are left alone."""
    provider = Provider()
    app = await rig.app(provider)
    due = await rig.connections(app, provider, 60)
    later = await rig.connections(app, provider, 5, due=False)
    paused_app = await rig.app(provider)
    paused = await rig.connections(paused_app, provider, 5)
    await rig.resources.pool.execute(
        "UPDATE apps SET paused_at = now(), paused_problem = 'invalid_settings' WHERE id = $1",
        paused_app.id,
    )
    engines = [rig.engine(concurrency=8) for _ in range(3)]

    while await rig.refreshed(due) < len(due):
        started = await asyncio.gather(*(one_pass(e) for e in engines))
        assert sum(started) > 0, "due connections left that no engine claims"

    assert provider.served == Counter({"ok": len(due)})
    assert all(count == 1 for count in provider.refreshed.values())
    assert await rig.refreshed(later) == 0
    assert await rig.refreshed(paused) == 0
    rows = await rig.resources.pool.fetch(
        "SELECT lease_holder, status FROM connections WHERE id = ANY($1)", due
    )
    assert {(r["lease_holder"], r["status"]) for r in rows} == {(None, "active")}


async def test_a_lease_outlives_a_slow_answer_while_its_holder_lives(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases of half a second, renewed every 0.1 s, and a provider that answers after 1.5 s:
    no other engine takes the connection meanwhile, so the one-time token is sent once."""
    monkeypatch.setattr(engine_module, "LEASE_SECONDS", 0.5)
    monkeypatch.setattr(engine_module, "RENEW_EVERY", 0.1)
    monkeypatch.setattr(refresh_module, "LEASE_SECONDS", 0.5)
    provider = Provider(delay=1.5)
    app = await rig.app(provider)
    (cid,) = await rig.connections(app, provider, 1)
    slow, other = rig.engine(), rig.engine()
    slow.start()
    try:
        async with asyncio.timeout(60):
            while (await connections.get(rig.resources.pool, cid)).lease_holder is None:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
        for _ in range(5):  # three lease lengths and more
            await asyncio.sleep(0.25)
            assert await other.dispatch(10) == 0
        await slow.idle()
    finally:
        await slow.stop(grace=30)
    assert provider.served == Counter({"ok": 1})
    row = await connections.get(rig.resources.pool, cid)
    assert row is not None and row.status == "active" and row.lease_holder is None


# --------------------------------------------------------------------------------------------
# A token endpoint down for everyone
# --------------------------------------------------------------------------------------------


async def test_an_outage_holds_refreshes_back_probes_and_releases_the_backlog(rig: Rig) -> None:
    down, healthy = Provider(mode="503"), Provider()
    app = await rig.app(down)
    other = await rig.app(healthy)
    waiting = await rig.connections(app, down, 25)
    fine = await rig.connections(other, healthy, 3)
    engine = rig.engine(concurrency=25)

    # The first pass meets the outage: after ten failures in a row the endpoint is unavailable,
    # once, with one event; the other app's endpoint is not touched by it.
    await one_pass(engine)
    assert down.served["503"] == 25
    state = await rig.endpoint(app)
    assert state.available is False and state.failures >= endpoints.FAILURES_TO_TRIP
    (event,) = await rig.app_events(app, "app.provider_unavailable")
    assert event["problem"] == "provider_unavailable"
    assert event["data"]["token_endpoint"] == app.token_url
    assert await rig.app_events(other, "app.provider_unavailable") == []

    # Due again (their backoff passed): held back, while the other app is refreshed.
    await rig.make_due(waiting)
    await one_pass(engine)
    assert down.served["503"] == 25
    assert await rig.refreshed(fine) == len(fine)

    # One probe at a time, each failure putting the next one further off (2 s, then 4 s).
    for probes, interval in ((1, 2.0), (2, 4.0)):
        await rig.probe_now(app)
        before = datetime.now(UTC)
        assert await one_pass(engine) == 1
        assert down.served["503"] == 25 + probes
        state = await rig.endpoint(app)
        assert state.available is False and state.probes == probes
        assert state.next_probe_at is not None
        wait = (state.next_probe_at - before).total_seconds()
        assert interval - 1 <= wait <= interval + 1, (probes, wait)
    assert await one_pass(engine) == 0  # not before its time

    # The provider is back: the next probe succeeds, the endpoint is available again, one
    # event says so, and every waiting connection goes at once, backoff or not.
    down.mode = "ok"
    await rig.probe_now(app)
    assert await one_pass(engine) == 1
    assert (await rig.endpoint(app)).available is True
    (recovered,) = await rig.app_events(app, "app.provider_recovered")
    assert recovered["data"]["unavailable_seconds"] >= 0
    backing_off = await rig.resources.pool.fetchval(
        """SELECT count(*) FROM connections
           WHERE id = ANY($1) AND status = 'active' AND refresh_at > now()
             AND last_refresh_at IS NULL""",
        waiting,
    )
    assert backing_off == 0
    await one_pass(engine)
    assert await rig.refreshed(waiting) == len(waiting)
    assert down.served["invalid_grant"] == 0
    statuses = await rig.resources.pool.fetch(
        "SELECT DISTINCT status, problem FROM connections WHERE id = ANY($1)", waiting
    )
    assert [(r["status"], r["problem"]) for r in statuses] == [("active", None)]


async def test_probes_stay_frequent_while_tokens_are_dying(rig: Rig) -> None:
    """Waiting connections whose tokens have expired: every second of the outage is a second
    of dead tokens, so probes do not back off."""
    down = Provider(mode="503")
    app = await rig.app(down)
    waiting = await rig.connections(app, down, 12)
    engine = rig.engine(concurrency=12)
    await one_pass(engine)
    assert (await rig.endpoint(app)).available is False
    await rig.resources.pool.execute(
        """UPDATE connections SET expires_at = now() - interval '1 second',
               refresh_at = now() - interval '1 second' WHERE id = ANY($1)""",
        waiting,
    )
    for _ in range(4):
        await rig.probe_now(app)
        before = datetime.now(UTC)
        assert await one_pass(engine) == 1
        state = await rig.endpoint(app)
        assert state.next_probe_at is not None
        assert state.next_probe_at - before <= timedelta(seconds=3)
    assert (await rig.endpoint(app)).probes == 4


async def test_a_probe_honours_retry_after(rig: Rig) -> None:
    down = Provider(mode="503")
    app = await rig.app(down)
    await rig.connections(app, down, 12)
    engine = rig.engine(concurrency=12)
    await one_pass(engine)
    down.mode = "503-retry-after"  # Retry-After: 20
    await rig.probe_now(app)
    before = datetime.now(UTC)
    assert await one_pass(engine) == 1
    state = await rig.endpoint(app)
    assert state.next_probe_at is not None
    assert state.next_probe_at >= before + timedelta(seconds=19)


async def test_a_runtime_is_told_the_provider_is_down_and_when_to_come_back(rig: Rig) -> None:
    """While the endpoint is unavailable an expired token is not handed out: 503 naming the
    provider's outage with Retry-After at the next probe; the connection itself names the
    expired token (the sweep), and stays active."""
    down = Provider(mode="503")
    app = await rig.app(down)
    waiting = await rig.connections(app, down, 12)
    await one_pass(rig.engine(concurrency=12))
    cid = waiting[0]
    await rig.resources.pool.execute(
        "UPDATE connections SET expires_at = now() - interval '1 second' WHERE id = $1", cid
    )
    await rig.resources.pool.execute(
        "UPDATE connections SET refresh_at = now() - interval '1 second' WHERE id = ANY($1)",
        waiting,
    )
    assert await connections.mark_tokens_expired(rig.resources.pool) == 1
    settings = rig.resources.settings
    async with aiohttp.ClientSession(
        base_url=settings.public_url, headers={"Authorization": f"Bearer {rig.admin_key}"}
    ) as api:
        async with api.get(f"/v1/connections/{cid}/credentials") as response:
            assert response.status == 503
            body = await response.json()
            retry_after = int(response.headers["Retry-After"])
        assert body["problem"] == "provider_unavailable"
        assert "probes" in body["detail"]
        assert retry_after >= 1
        async with api.get(f"/v1/connections/{cid}") as response:
            shown = await response.json()
        assert shown["status"] == "active" and shown["problem"] == "token_expired"
        async with api.post(f"/v1/connections/{cid}/refresh") as response:
            assert response.status == 503
            assert (await response.json())["problem"] == "provider_unavailable"
    assert down.served["503"] == 12  # no request reached the provider for any of this


async def test_one_tenants_outage_holds_back_only_that_tenants_connections(rig: Rig) -> None:
    """An app with a host per tenant (`{tenant}.…`): its endpoint health is that of each
    connection's own token URL, so one tenant's outage is held back and probed on its own while
    the other tenants' connections go on being refreshed."""
    down, healthy = Provider(mode="503"), Provider()
    template = "https://{tenant}.engine.provider.test/oauth/token"
    app = await insert_app(
        rig.resources, rig.unique("tenants"), template, connection_settings=["tenant"]
    )
    urls = {t: template.replace("{tenant}", t) for t in ("acme", "globex")}
    rig.mock.post(urls["acme"], callback=down.respond, repeat=True)
    rig.mock.post(urls["globex"], callback=healthy.respond, repeat=True)
    failing = await rig.connections(app, down, 12)
    fine = await rig.connections(app, healthy, 4)
    for ids, tenant in ((failing, "acme"), (fine, "globex")):
        await rig.resources.pool.execute(
            "UPDATE connections SET settings = $2 WHERE id = ANY($1)", ids, {"tenant": tenant}
        )
    engine = rig.engine(concurrency=16)

    await one_pass(engine)
    assert down.served["503"] == 12 and await rig.refreshed(fine) == len(fine)
    acme = await endpoints.get(rig.resources.pool, urls["acme"])
    assert acme is not None and acme.available is False
    assert await endpoints.get(rig.resources.pool, template) is None
    (event,) = await rig.app_events(app, "app.provider_unavailable")
    assert event["data"]["token_endpoint"] == urls["acme"]

    # Due again: acme's wait for their probe, globex's are refreshed.
    await rig.make_due(failing + fine)
    await one_pass(engine)
    assert down.served["503"] == 12 and healthy.served["ok"] == 2 * len(fine)

    # The probe is one of acme's connections, never a globex one that would pass for it.
    await rig.resources.pool.execute(
        "UPDATE token_endpoints SET next_probe_at = now() WHERE url = $1", urls["acme"]
    )
    assert await one_pass(engine) == 1
    assert down.served["503"] == 13 and healthy.served["ok"] == 2 * len(fine)
    down.mode = "ok"
    await rig.resources.pool.execute(
        "UPDATE token_endpoints SET next_probe_at = now() WHERE url = $1", urls["acme"]
    )
    await one_pass(engine)
    recovered = await endpoints.get(rig.resources.pool, urls["acme"])
    assert recovered is not None and recovered.available is True
    await one_pass(engine)
    assert await rig.refreshed(failing) == len(failing)
