"""`/metrics` tells an operator what happened: token requests by app and outcome, HTTP traffic,
connections by status, the due backlog and the outbox lag."""

from __future__ import annotations

import re

from storage import gauges
from tests.helpers import create_oauth_app, follow_callback, start_connection


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_after_an_authorization(
    api, anonymous, oauth_server, worker, unique, monkeypatch
):
    monkeypatch.setattr(gauges, "SAMPLE_EVERY", 0.0)
    app = unique("metrics")
    await create_oauth_app(api, oauth_server, app)
    started = await start_connection(api, app)
    location = await oauth_server.approve(started["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded"

    async with anonymous.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert (
        sample(
            text,
            "authbroker_token_requests_total",
            app=app,
            grant="authorization_code",
            outcome="ok",
        )
        == 1.0
    )
    assert (sample(text, "authbroker_connections", status="active") or 0) >= 1
    assert sample(text, "authbroker_refresh_due_backlog") is not None
    assert sample(text, "authbroker_outbox_lag_seconds") is not None
    created = sample(
        text, "authbroker_http_requests_total", route="/v1/apps", method="POST", status="201"
    )
    assert created is not None and created >= 1
    # Routes are labelled by pattern, never by concrete ids.
    assert started["connection_id"] not in text
