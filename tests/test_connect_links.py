"""Connect links: a URL the end user opens to authorize a connection again, without an API key.
Driven through the API against the real OAuth server: a link opened in a browser-like session
authorizes and lands on the result page; used, expired and unknown links are refused with a page
that says so; a link grants nothing else; apps with `reconnect_links` put a working link in the
events whose remedy is to authorize again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from authbroker.embedded import free_port
from storage import connect_links
from tests.helpers import (
    create_oauth_app,
    follow_callback,
    revoke_at_provider,
    serving,
    start_connection,
    stored_tokens,
)
from tests.oauth_server import OAuthTestServer
from worker.jobs import probe_connection

DAY = 86_400


async def make_link(api: aiohttp.ClientSession, app: str, **body: Any) -> tuple[int, Any]:
    async with api.post(f"/v1/apps/{app}/connect-links", json=body) as response:
        return response.status, await response.json()


async def open_link(
    session: aiohttp.ClientSession, url: str, *, accept: str = "text/html"
) -> tuple[int, str, aiohttp.ClientResponse]:
    """What a browser gets when it opens `url` (redirects not followed)."""
    async with session.get(url, headers={"Accept": accept}, allow_redirects=False) as response:
        return response.status, await response.text(), response


async def authorize_through(
    server: OAuthTestServer, anonymous: aiohttp.ClientSession, url: str, **how: Any
) -> tuple[int, str]:
    """Open the link like a browser: on to the provider, sign in, approve, back to the
    callback, whose result page is returned."""
    location = await server.approve(url, **how)
    return await follow_callback(anonymous, location, json_answer=False)


async def connection(api: aiohttp.ClientSession, cid: str) -> dict[str, Any]:
    async with api.get(f"/v1/connections/{cid}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def authorized(api, anonymous, server: OAuthTestServer, app: str, cid: str) -> None:
    started = await start_connection(api, app, connection_id=cid)
    location = await server.approve(started["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded", outcome


async def authorizations_of(resources, cid: str) -> int:
    return await resources.pool.fetchval(
        "SELECT count(*) FROM authorizations WHERE connection_id = $1", cid
    )


# ------------------------------------------------------------------------------ opening a link


async def test_a_link_for_a_new_connection_authorizes_it_in_a_browser(
    api, anonymous, oauth_server, worker, unique, settings
):
    app = unique("link")
    await create_oauth_app(api, oauth_server, app)
    before = datetime.now(UTC)
    status, link = await make_link(api, app)
    assert status == 201, link
    assert set(link) == {"url", "expires_at", "connection_id"}
    cid = link["connection_id"]
    assert cid.startswith("conn_")  # made now, so the runtime knows it
    token = link["url"].rsplit("/", 1)[1]
    assert link["url"].startswith(f"{settings.public_url}/connect/") and len(token) == 43
    expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=7) - timedelta(minutes=5) < expires - before <= timedelta(days=7, hours=1)

    status, page = await authorize_through(oauth_server, anonymous, link["url"])
    assert status == 200 and "Connected" in page and app in page
    shown = await connection(api, cid)
    assert shown["status"] == "active" and shown["requested_scopes"] == ["read", "write"]

    # Used: refused, as a page and as JSON, saying so; nothing more is started.
    status, page, response = await open_link(anonymous, link["url"])
    assert status == 410 and response.content_type == "text/html"
    assert "already used" in page and cid not in page and app not in page
    status, answer, _ = await open_link(anonymous, link["url"], accept="application/json")
    assert status == 410 and '"error":"link_used"' in answer.replace(" ", "")


async def test_a_link_authorizes_an_existing_connection_again(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    app = unique("relink")
    await create_oauth_app(api, oauth_server, app)
    cid = f"{app}-1"
    await authorized(api, anonymous, oauth_server, app, cid)
    old_access, _ = await stored_tokens(resources, cid)

    status, link = await make_link(api, app, connection_id=cid, scopes=["read"], expires_in=3600)
    assert status == 201 and link["connection_id"] == cid
    # Opening starts a fresh authorization: its own state and PKCE challenge.
    status, _, response = await open_link(anonymous, link["url"])
    assert status == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert response.headers["Location"].startswith(oauth_server.authorization_url)
    assert query["scope"] == ["read"] and query["code_challenge_method"] == ["S256"]
    location = await oauth_server.approve(response.headers["Location"])
    status, page = await follow_callback(anonymous, location, json_answer=False)
    assert status == 200 and "Connected" in page

    event = await events.wait_for(
        lambda e: (
            e["type"] == "connection.authorized"
            and e["connection_id"] == cid
            and e["data"]["reauthorization"]
        )
    )
    assert event["data"]["granted_scopes"] == ["read"]
    new_access, _ = await stored_tokens(resources, cid)
    assert new_access != old_access


async def test_expired_and_unknown_links_are_refused_with_a_page(
    api, anonymous, oauth_server, unique, resources
):
    app = unique("expired")
    await create_oauth_app(api, oauth_server, app)
    _, link = await make_link(api, app, connection_id=f"{app}-1", expires_in=60)
    token = link["url"].rsplit("/", 1)[1]
    await resources.pool.execute(
        "UPDATE connect_links SET expires_at = now() - interval '1 second' WHERE connection_id = $1",
        f"{app}-1",
    )
    status, page, response = await open_link(anonymous, link["url"])
    assert status == 410 and response.content_type == "text/html" and "expired" in page
    status, answer, _ = await open_link(anonymous, link["url"], accept="application/json")
    assert status == 410 and "link_expired" in answer
    assert await authorizations_of(resources, f"{app}-1") == 0

    # A wrong token, and one that cannot be a token at all: the same answer, naming nothing.
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for path in (f"/connect/{wrong}", "/connect/not-a-token", "/connect/" + "x" * 300):
        status, page, _ = await open_link(anonymous, path)
        assert status == 404 and "not valid" in page, (path, page)
        status, answer, _ = await open_link(anonymous, path, accept="application/json")
        assert status == 404 and "link_unknown" in answer


async def test_a_link_grants_nothing_else(api, anonymous, oauth_server, unique, resources):
    """The token is no API key, no state, and a HEAD (a mail scanner's) does not use it up."""
    app = unique("nothing")
    await create_oauth_app(api, oauth_server, app)
    _, link = await make_link(api, app)
    token = link["url"].rsplit("/", 1)[1]
    async with anonymous.get("/v1/apps", headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 401
    async with anonymous.get(
        f"/oauth/callback?state={token}&code=x", headers={"Accept": "application/json"}
    ) as response:
        assert response.status == 400 and (await response.json())["error"] == "invalid_state"
    async with anonymous.head(link["url"], allow_redirects=False) as response:
        assert response.status == 405
    assert await authorizations_of(resources, link["connection_id"]) == 0
    status, _, _ = await open_link(anonymous, link["url"])
    assert status == 302  # still unused


async def test_a_link_waits_while_its_app_cannot_authorize(
    api, anonymous, oauth_server, unique, resources
):
    """Opened while the app cannot start an authorization: refused, and still usable after."""
    app = unique("notnow")
    await create_oauth_app(api, oauth_server, app)
    _, link = await make_link(api, app)
    await resources.pool.execute("UPDATE apps SET awaiting_secret = true WHERE name = $1", app)
    status, page, _ = await open_link(anonymous, link["url"])
    assert status == 409 and "not ready" in page and app not in page
    await resources.pool.execute("UPDATE apps SET awaiting_secret = false WHERE name = $1", app)
    status, _, _ = await open_link(anonymous, link["url"])
    assert status == 302


async def test_making_a_link_refuses_what_cannot_work(api, oauth_server, unique, resources):
    app, other = unique("refuse"), unique("refuse2")
    await create_oauth_app(api, oauth_server, app)
    await create_oauth_app(api, oauth_server, other)
    await start_connection(api, other, connection_id=f"{other}-1")
    status, answer = await make_link(api, app, connection_id=f"{other}-1")
    assert status == 409 and answer["error"] == "connection_exists"
    status, answer = await make_link(api, unique("nope"))
    assert status == 404 and answer["error"] == "app_not_found"
    for body, field in (
        ({"expires_in": 30 * DAY + 1}, "expires_in"),
        ({"expires_in": 59}, "expires_in"),
        ({"connection_id": "bad id!"}, "connection_id"),
        ({"scopes": ["a b"]}, "scopes.0"),
        ({"token": "x"}, "token"),
    ):
        status, answer = await make_link(api, app, **body)
        assert status == 400 and [f["field"] for f in answer["fields"]] == [field], answer
    status, answer = await make_link(api, app, expires_in=30 * DAY)
    assert status == 201
    await resources.pool.execute("UPDATE apps SET awaiting_secret = true WHERE name = $1", app)
    status, answer = await make_link(api, app)
    assert status == 409 and answer["error"] == "app_awaiting_secret"
    assert (
        await resources.pool.fetchval(
            """SELECT count(*) FROM connect_links l JOIN apps a ON a.id = l.app_id
               WHERE a.name = $1""",
            app,
        )
        == 1
    )


async def test_links_are_forgotten_a_week_after_they_expire(api, oauth_server, unique, resources):
    app = unique("purge")
    await create_oauth_app(api, oauth_server, app)
    for cid in (f"{app}-old", f"{app}-fresh"):
        assert (await make_link(api, app, connection_id=cid))[0] == 201
    await resources.pool.execute(
        "UPDATE connect_links SET expires_at = now() - interval '8 days' WHERE connection_id = $1",
        f"{app}-old",
    )
    assert await connect_links.purge(resources.pool) >= 1
    left = await resources.pool.fetch(
        "SELECT connection_id FROM connect_links WHERE connection_id LIKE $1", f"{app}-%"
    )
    assert [r["connection_id"] for r in left] == [f"{app}-fresh"]


# ------------------------------------------------------------------------------ reconnect_url


async def reconnect_url(events, kind: str, cid: str) -> str | None:
    """The `reconnect_url` of the connection's event of `kind`, once it is on the stream (some
    come from the worker's engine or sweeps, on their own schedule: waited for generously)."""
    event = await events.wait_for(
        lambda e: e["type"] == kind and e["connection_id"] == cid, timeout=90
    )
    return event["data"]["reconnect_url"]


async def test_an_invalidated_connection_carries_a_working_reconnect_url(
    api, anonymous, oauth_server, worker, events, unique, resources, settings
):
    app, plain = unique("reconnect"), unique("plain")
    await create_oauth_app(api, oauth_server, app, reconnect_links=True)
    await create_oauth_app(api, oauth_server, plain)
    for name in (app, plain):
        cid = f"{name}-1"
        await authorized(api, anonymous, oauth_server, name, cid)
        _, refresh = await stored_tokens(resources, cid)
        await revoke_at_provider(oauth_server, refresh)
        async with api.post(f"/v1/connections/{cid}/refresh") as response:
            assert (await response.json())["outcome"] == "failed"
    assert await reconnect_url(events, "connection.invalidated", f"{plain}-1") is None

    url = await reconnect_url(events, "connection.invalidated", f"{app}-1")
    assert url and url.startswith(f"{settings.public_url}/connect/")
    status, page = await authorize_through(oauth_server, anonymous, url)
    assert status == 200 and "Connected" in page
    assert (await connection(api, f"{app}-1"))["status"] == "active"
    status, _, _ = await open_link(anonymous, url)
    assert status == 410


async def test_failed_denied_and_expired_events_carry_a_reconnect_url(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    app = unique("remedy")
    await create_oauth_app(api, oauth_server, app, reconnect_links=True)
    declined, denied, expired, abandoned = (
        f"{app}-{what}" for what in ("declined", "denied", "expired", "abandoned")
    )
    started = await start_connection(api, app, connection_id=declined)
    await follow_callback(
        anonymous, await oauth_server.approve(started["authorize_url"], allow=False)
    )
    started = await start_connection(api, app, connection_id=denied)
    await follow_callback(
        anonymous, await oauth_server.approve(started["authorize_url"], scopes=["read"])
    )
    await authorized(api, anonymous, oauth_server, app, expired)
    await resources.pool.execute(
        """UPDATE connections SET refresh_token = NULL,
               expires_at = now() - interval '1 second', refresh_at = now()
           WHERE id = $1""",
        expired,
    )
    await start_connection(api, app, connection_id=abandoned)
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' "
        "WHERE connection_id = $1",
        abandoned,
    )
    found = {
        declined: await reconnect_url(events, "connection.authorization_failed", declined),
        denied: await reconnect_url(events, "connection.scopes_denied", denied),
        expired: await reconnect_url(events, "connection.expired", expired),
        abandoned: await reconnect_url(events, "connection.authorization_failed", abandoned),
    }
    asked: dict[str, list[str]] = {}
    for cid, url in found.items():
        assert url, cid
        status, _, response = await open_link(anonymous, url)
        assert status == 302, (cid, status)
        location = response.headers["Location"]
        assert location.startswith(oauth_server.authorization_url)
        asked[cid] = parse_qs(urlsplit(location).query)["scope"]
    # Each asks again for what its connection asked for.
    assert set(map(tuple, asked.values())) == {("read write",)}
    assert len(set(found.values())) == 4


async def test_a_probe_that_invalidates_carries_a_reconnect_url(
    api, anonymous, oauth_server, jobs_worker, events, unique
):
    refusing = web.Application()

    async def always_401(_request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_token"}, status=401)

    refusing.router.add_get("/me", always_401)
    async with serving(refusing, free_port()) as base:
        app = unique("probe-link")
        await create_oauth_app(api, oauth_server, app, probe_url=f"{base}/me", reconnect_links=True)
        cid = f"{app}-1"
        await authorized(api, anonymous, oauth_server, app, cid)
        assert await probe_connection(jobs_worker.ctx, cid) == "invalidated"
    url = await reconnect_url(events, "connection.invalidated", cid)
    assert url
    status, _, _ = await open_link(anonymous, url)
    assert status == 302
