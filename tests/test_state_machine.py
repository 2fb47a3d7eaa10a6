"""Every change of a connection's status (and of an app's refreshes) is exactly one event, in
order, with the status the connection has after it: a consumer can mirror the state machine
from the stream alone. Driven through the API against the real OAuth server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.helpers import (
    create_oauth_app,
    follow_callback,
    revoke_at_provider,
    start_connection,
    stored_tokens,
)
from tests.oauth_server import OAuthTestServer


async def history(events, subject: str, *, key: str = "connection_id") -> list[tuple[str, Any]]:
    return [(e["type"], e["status"]) for e in await events.all() if e.get(key) == subject]


async def settle(events, subject: str, count: int, *, key: str = "connection_id") -> None:
    """Wait until `subject` has `count` events on the stream (and give a straggler a moment)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(await history(events, subject, key=key)) >= count:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


async def approve(api, anonymous, server: OAuthTestServer, app: str, cid: str, **how) -> Any:
    started = await start_connection(api, app, connection_id=cid)
    location = await server.approve(started["authorize_url"], **how)
    _, outcome = await follow_callback(anonymous, location)
    return outcome


async def status_of(api, cid: str) -> str:
    async with api.get(f"/v1/connections/{cid}") as response:
        return (await response.json())["status"]


async def test_a_connection_from_start_to_revocation(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    app = unique("life")
    await create_oauth_app(api, oauth_server, app)
    cid = f"{app}-1"

    assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    # The user revokes the grant at the provider: the next refresh is refused.
    _, refresh = await stored_tokens(resources, cid)
    await revoke_at_provider(oauth_server, refresh)
    async with api.post(f"/v1/connections/{cid}/refresh") as response:
        assert (await response.json())["outcome"] == "failed"
    # Authorized again, then deleted.
    assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    async with api.delete(f"/v1/connections/{cid}") as response:
        assert response.status == 202
    await settle(events, cid, 7)

    assert await history(events, cid) == [
        ("connection.authorization_started", "pending"),
        ("connection.authorized", "active"),
        ("connection.invalidated", "failed"),
        ("connection.authorization_started", "failed"),
        ("connection.authorized", "active"),
        ("connection.revoking", "revoking"),
        ("connection.revoked", "revoked"),
    ]
    assert await status_of(api, cid) == "revoked"


async def test_authorizations_that_end_without_a_grant(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    app = unique("end")
    await create_oauth_app(api, oauth_server, app)
    declined, abandoned = f"{app}-declined", f"{app}-abandoned"

    outcome = await approve(api, anonymous, oauth_server, app, declined, allow=False)
    assert outcome["status"] == "failed"
    await start_connection(api, app, connection_id=abandoned)
    await resources.pool.execute(
        "UPDATE authorizations SET expires_at = now() - interval '1 second' "
        "WHERE connection_id = $1",
        abandoned,
    )
    await settle(events, abandoned, 2)
    await settle(events, declined, 2)

    for cid in (declined, abandoned):
        assert await history(events, cid) == [
            ("connection.authorization_started", "pending"),
            ("connection.authorization_failed", "failed"),
        ]
        assert await status_of(api, cid) == "failed"


async def test_a_token_without_refresh_token_expires_once(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    app = unique("expire")
    await create_oauth_app(api, oauth_server, app)
    cid = f"{app}-1"
    assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    await resources.pool.execute(
        """UPDATE connections SET refresh_token = NULL,
               expires_at = now() - interval '1 second', refresh_at = now()
           WHERE id = $1""",
        cid,
    )
    await settle(events, cid, 3)
    assert await history(events, cid) == [
        ("connection.authorization_started", "pending"),
        ("connection.authorized", "active"),
        ("connection.expired", "expired"),
    ]


async def test_an_apps_refreshes_pause_and_resume_once_each(
    api, anonymous, oauth_server, worker, events, unique
):
    """Its client secret refused: settings_invalid and refreshes_paused, once however many
    connections meet it; changed: refreshes_resumed."""
    app = unique("pause")
    await create_oauth_app(api, oauth_server, app)
    ids = [f"{app}-{i}" for i in range(3)]
    for cid in ids:
        assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    async with api.patch(f"/v1/apps/{app}", json={"client_secret": "not-the-secret"}) as response:
        assert response.status == 200
    for cid in ids:
        async with api.post(f"/v1/connections/{cid}/refresh") as response:
            assert response.status in (200, 503), await response.text()
    async with api.patch(
        f"/v1/apps/{app}", json={"client_secret": oauth_server.client_secret}
    ) as response:
        assert response.status == 200
    await settle(events, app, 3, key="app")

    app_events = [
        (e["type"], e["problem"]) for e in await events.all() if e["app"] == app and e["type"]
    ]
    assert [t for t in app_events if t[0].startswith("app.")] == [
        ("app.settings_invalid", "invalid_settings"),
        ("app.refreshes_paused", "invalid_settings"),
        ("app.refreshes_resumed", None),
    ]


async def test_a_long_lived_token_revoked_at_the_provider(
    api, anonymous, oauth_server, worker, events, unique, resources
):
    """No refresh token (GitHub OAuth Apps, Notion): the web service's invalid_token fails the
    connection once; authorizing again brings it back."""
    app = unique("longlived")
    await create_oauth_app(api, oauth_server, app)
    cid = f"{app}-1"
    assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    await resources.pool.execute(
        "UPDATE connections SET refresh_token = NULL, expires_at = NULL, refresh_at = NULL "
        "WHERE id = $1",
        cid,
    )
    access, _ = await stored_tokens(resources, cid)
    await revoke_at_provider(oauth_server, access, "access_token")
    challenge = 'Bearer realm="api", error="invalid_token"'
    for expected in (200, 409):  # the second report finds it failed already
        async with api.post(
            f"/v1/connections/{cid}/report", json={"status": 401, "www_authenticate": challenge}
        ) as response:
            assert response.status == expected, await response.text()
    assert (await approve(api, anonymous, oauth_server, app, cid))["status"] == "succeeded"
    await settle(events, cid, 5)

    assert await history(events, cid) == [
        ("connection.authorization_started", "pending"),
        ("connection.authorized", "active"),
        ("connection.invalidated", "failed"),
        ("connection.authorization_started", "failed"),
        ("connection.authorized", "active"),
    ]
