"""Long-lived tokens the provider revoked, on connections without a refresh token (GitHub OAuth
Apps, Notion, Facebook): what runtimes report, what the probe URL confirms, what is counted, and
what the connection and its events say then. Driven through the API against the real OAuth
server, whose protected resource (its probe URL here) refuses a revoked token with a 401."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from authbroker.embedded import free_port
from authbroker.problems import Problem
from tests.helpers import (
    authorize,
    create_oauth_app,
    revoke_at_provider,
    serving,
    stored_tokens,
)
from tests.oauth_server import OAuthTestServer
from worker.jobs import probe_connection


async def long_lived(
    api, anonymous, server: OAuthTestServer, resources, name: str, **app_settings: Any
) -> tuple[str, str]:
    """A connection authorized through the real server, left as a provider that issues no
    refresh token and no expiry leaves it: its id and access token."""
    await create_oauth_app(api, server, name, **app_settings)
    cid = f"{name}-c"
    await authorize(api, anonymous, server, name, cid)
    await without_refresh_token(resources, cid)
    access, _ = await stored_tokens(resources, cid)
    return cid, access


async def without_refresh_token(resources, cid: str) -> None:
    await resources.pool.execute(
        "UPDATE connections SET refresh_token = NULL, expires_at = NULL, refresh_at = NULL "
        "WHERE id = $1",
        cid,
    )


async def report(api, cid: str, www_authenticate: str | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"status": 401}
    if www_authenticate is not None:
        body["www_authenticate"] = www_authenticate
    async with api.post(f"/v1/connections/{cid}/report", json=body) as response:
        return response.status, await response.json()


async def credentials(api, cid: str) -> tuple[int, Any]:
    async with api.get(f"/v1/connections/{cid}/credentials") as response:
        return response.status, await response.json()


async def check(api, cid: str, name: str) -> dict[str, Any]:
    async with api.get(f"/v1/connections/{cid}/diagnosis") as response:
        body = await response.json()
    return next(c for c in body["checks"] if c["name"] == name)


async def invalidations(resources, cid: str) -> list[dict[str, Any]]:
    """The connection's `connection.invalidated` events, as written with the change."""
    rows = await resources.pool.fetch(
        """SELECT event FROM outbox
           WHERE event->>'type' = 'connection.invalidated' AND event->>'connection_id' = $1""",
        cid,
    )
    return [row["event"] for row in rows]


async def on_stream(events, cid: str) -> list[dict[str, Any]]:
    """The connection's `connection.invalidated` events as a runtime reads them, once the relay
    has passed the first."""
    await events.wait_for(
        lambda e: e["type"] == "connection.invalidated" and e["connection_id"] == cid
    )
    return [
        e
        for e in await events.all()
        if e["type"] == "connection.invalidated" and e["connection_id"] == cid
    ]


async def counted(resources, cid: str) -> tuple[int, Any]:
    row = await resources.pool.fetchrow(
        "SELECT unconfirmed_401s, unconfirmed_401s_since FROM connections WHERE id = $1", cid
    )
    return row["unconfirmed_401s"], row["unconfirmed_401s_since"]


async def test_invalid_token_fails_the_connection_and_its_credentials_say_so(
    api, anonymous, oauth_server, worker, events, resources, unique
):
    cid, access = await long_lived(api, anonymous, oauth_server, resources, unique("revoked"))
    await revoke_at_provider(oauth_server, access, "access_token")
    status, _, headers = await oauth_server.call_resource_raw(access)
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]

    code, answer = await report(api, cid, headers["WWW-Authenticate"])
    assert code == 200, answer
    assert (answer["action"], answer["problem"], answer["confirmed_by"]) == (
        "invalidated",
        "token_revoked",
        "invalid_token",
    )
    assert (answer["connection"]["status"], answer["connection"]["problem"]) == (
        "failed",
        "token_revoked",
    )

    # The dead token is not handed out again: the problem and its remedy are.
    code, refused = await credentials(api, cid)
    assert code == 409 and refused["error"] == "connection_not_active"
    assert refused["problem"] == "token_revoked"
    assert refused["detail"] == Problem.TOKEN_REVOKED.remedy
    assert access not in json.dumps(refused)
    # A later report finds it failed; nothing more happens.
    code, again = await report(api, cid, headers["WWW-Authenticate"])
    assert code == 409 and again["problem"] == "token_revoked"

    (event,) = await on_stream(events, cid)
    assert (event["status"], event["problem"]) == ("failed", "token_revoked")
    assert event["data"]["reported_status"] == 401
    assert event["data"]["reported_error"] == "invalid_token"
    assert event["data"]["probe_status"] is None and event["data"]["reports"] is None
    assert access not in json.dumps(event)
    assert len(await invalidations(resources, cid)) == 1

    found = await check(api, cid, "authentication")
    assert found["status"] == "failing"
    assert "a runtime reported invalid_token" in found["summary"]
    assert found["evidence"]["event"]["data"]["reported_error"] == "invalid_token"
    assert found["remedy"] == Problem.TOKEN_REVOKED.remedy
    assert (await check(api, cid, "connection"))["status"] == "failing"


async def test_a_bare_401_is_checked_at_the_probe_url(
    api, anonymous, oauth_server, worker, events, resources, unique
):
    cid, access = await long_lived(
        api,
        anonymous,
        oauth_server,
        resources,
        unique("probed"),
        probe_url=oauth_server.resource_url,
    )
    # The provider still takes the token: the 401 was about something else.
    code, answer = await report(api, cid)
    assert code == 200 and answer["action"] == "none", answer
    assert "probe URL accepts this token (HTTP 200)" in answer["hint"]
    assert (await credentials(api, cid))[0] == 200
    assert (await counted(resources, cid))[0] == 0

    await revoke_at_provider(oauth_server, access, "access_token")
    code, answer = await report(api, cid)
    assert code == 200 and answer["action"] == "invalidated", answer
    assert answer["confirmed_by"] == "probe"
    (event,) = await on_stream(events, cid)
    assert event["data"]["probe_status"] == 401
    assert event["data"]["reported_status"] == 401 and event["data"]["reported_error"] is None
    found = await check(api, cid, "authentication")
    assert found["status"] == "failing" and "the probe URL answered 401" in found["summary"]


async def test_a_probe_that_fails_or_cannot_be_reached_confirms_nothing(
    api, anonymous, oauth_server, worker, resources, unique
):
    answers = [503]
    probe = web.Application()

    async def me(_request: web.Request) -> web.Response:
        return web.json_response({}, status=answers[-1])

    probe.router.add_get("/me", me)
    port = free_port()
    async with serving(probe, port) as base:
        cid, _ = await long_lived(
            api, anonymous, oauth_server, resources, unique("flaky"), probe_url=f"{base}/me"
        )
        code, answer = await report(api, cid)
        assert code == 200 and (answer["action"], answer["reports"]) == ("counted", 1), answer
        answers.append(401)
        code, answer = await report(api, cid)
        assert code == 200 and answer["action"] == "invalidated", answer
        assert answer["confirmed_by"] == "probe"

    # Nothing listens at the probe URL: counted as if there were none.
    nowhere = f"http://127.0.0.1:{free_port()}/me"
    cid, _ = await long_lived(
        api, anonymous, oauth_server, resources, unique("unreached"), probe_url=nowhere
    )
    code, answer = await report(api, cid)
    assert code == 200 and (answer["action"], answer["reports"]) == ("counted", 1), answer


async def test_bare_401s_without_a_probe_are_counted_within_an_hour(
    api, anonymous, oauth_server, worker, events, resources, unique
):
    name = unique("counted")
    cid, _ = await long_lived(api, anonymous, oauth_server, resources, name)
    async with api.get(f"/v1/apps/{name}") as response:
        assert (await response.json())["reports_to_invalidate"] == 3

    for reports in (1, 2):
        code, answer = await report(api, cid, 'Bearer realm="api"')  # a challenge, no error
        assert code == 200, answer
        assert (answer["action"], answer["reports"], answer["confirms_at"]) == (
            "counted",
            reports,
            3,
        )
    first_since = answer["since"]
    found = await check(api, cid, "authentication")
    assert found["status"] == "warning" and "2 bare 401s" in found["summary"]
    assert (found["evidence"]["unconfirmed_401s"], found["evidence"]["reports_to_invalidate"]) == (
        2,
        3,
    )
    assert (await credentials(api, cid))[0] == 200  # evidence only, so far

    # An hour on, the count starts again.
    await resources.pool.execute(
        "UPDATE connections SET unconfirmed_401s_since = now() - interval '61 minutes' "
        "WHERE id = $1",
        cid,
    )
    code, answer = await report(api, cid)
    assert (answer["action"], answer["reports"]) == ("counted", 1)
    assert answer["since"] > first_since
    assert (await report(api, cid))[1]["reports"] == 2
    code, answer = await report(api, cid)
    assert code == 200 and answer["action"] == "invalidated", answer
    assert answer["confirmed_by"] == "reports"
    (event,) = await on_stream(events, cid)
    assert event["data"]["reports"] == 3 and event["data"]["reported_status"] == 401
    found = await check(api, cid, "authentication")
    assert found["status"] == "failing" and "3 bare 401s within an hour" in found["summary"]


async def test_a_new_token_restarts_the_count(
    api, anonymous, oauth_server, worker, resources, unique
):
    name = unique("renewed")
    cid, _ = await long_lived(api, anonymous, oauth_server, resources, name)
    assert (await report(api, cid))[1]["reports"] == 1
    assert (await report(api, cid))[1]["reports"] == 2

    await authorize(api, anonymous, oauth_server, name, cid)
    assert await counted(resources, cid) == (0, None)
    await without_refresh_token(resources, cid)
    assert (await report(api, cid))[1]["reports"] == 1


async def test_concurrent_reports_each_count_and_invalidate_once(
    api, anonymous, oauth_server, worker, events, resources, unique
):
    cid, _ = await long_lived(
        api, anonymous, oauth_server, resources, unique("crowd"), reports_to_invalidate=20
    )
    answers = await asyncio.gather(*(report(api, cid) for _ in range(25)))

    by_action: dict[Any, list[Any]] = {}
    for code, answer in answers:
        by_action.setdefault(answer.get("action", code), []).append(answer)
    assert sorted(a["reports"] for a in by_action["counted"]) == list(range(1, 20))
    assert len(by_action["invalidated"]) == 1
    assert [a["problem"] for a in by_action[409]] == ["token_revoked"] * 5
    (event,) = await on_stream(events, cid)
    assert event["data"]["reports"] == 20
    assert len(await invalidations(resources, cid)) == 1


async def test_the_periodic_probe_fails_a_revoked_long_lived_token(
    api, anonymous, oauth_server, jobs_worker, events, resources, unique
):
    cid, access = await long_lived(
        api,
        anonymous,
        oauth_server,
        resources,
        unique("probe-ll"),
        probe_url=oauth_server.resource_url,
    )
    assert await probe_connection(jobs_worker.ctx, cid) == "ok (200)"
    await revoke_at_provider(oauth_server, access, "access_token")
    assert await probe_connection(jobs_worker.ctx, cid) == "invalidated"
    code, refused = await credentials(api, cid)
    assert code == 409 and refused["problem"] == "token_revoked"
    (event,) = await invalidations(resources, cid)
    assert event["data"]["probe_status"] == 401 and event["data"]["reported_status"] is None
