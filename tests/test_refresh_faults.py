"""One refresh (services.refresh.refresh_one) against providers that misbehave, shaped with
aioresponses: 5xx, 429 with Retry-After, timeouts, garbage, refused grants, refused client
credentials, rotation, leases. The job is called directly, as the worker would call it; every
test checks what an operator or a runtime would see: the connection's row and its events.

A worker of the test session (other modules start one) may be running in this process: its
scheduler refreshes due connections every second. So connections here are created not due and
refreshed with `force=True` unless a test is about being due, each app has a token URL of its own
(the mock never answers for another test's app), and every connection is taken off the schedule
when its test ends.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from authbroker.logs import configure_logging
from authbroker.oauth import TokenResponse
from authbroker.schemas import AppCreate
from services.refresh import BACKOFF_BASE, BACKOFF_CAP, refresh_one
from storage import apps, connections, leases
from storage.apps import App
from storage.connections import Connection
from storage.resources import Resources
from worker.context import CTX_KEY, WorkerContext

PROVIDER = "https://provider.test"
OLD_REFRESH = "1//old-refresh-token-RT1"
OLD_ACCESS = "old-access-token-AT1"
SECRET = "client-secret-CS1"
TOLERANCE = timedelta(seconds=2)


# --------------------------------------------------------------------------------------------
# A made-up provider, its apps and connections, and the job
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def tokens(
    access_token: str = OLD_ACCESS,
    *,
    refresh_token: str | None = OLD_REFRESH,
    expires_in: int | None = 600,
    refresh_token_expires_in: int | None = None,
) -> TokenResponse:
    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",
        expires_in=expires_in,
        refresh_token=refresh_token,
        refresh_token_expires_in=refresh_token_expires_in,
        scopes=None,
        extra={},
        placement="body",
    )


@dataclass
class Broker:
    """What the tests drive: storage set-up, the job as a worker runs it, and the provider's mock."""

    resources: Resources
    session: aiohttp.ClientSession
    unique: Callable[[str], str]
    app_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def ctx(self) -> dict[str, Any]:
        return {
            CTX_KEY: WorkerContext(resources=self.resources, http=self.session),
            "job_id": "test",
        }

    async def app(self, **overrides: Any) -> App:
        name = self.unique("faults")
        values = AppCreate(
            name=name,
            client_id=f"{name}-client",
            client_secret=SECRET,
            authorization_url=f"{PROVIDER}/{name}/authorize",
            token_url=f"{PROVIDER}/{name}/token",
        ).model_dump()
        values.update(overrides)
        async with self.resources.pool.acquire() as conn:
            created = await apps.create(conn, self.resources.ring, values)
        self.app_ids.append(created.id)
        return created

    async def connection(
        self,
        app: App,
        *,
        refresh_token: str | None = OLD_REFRESH,
        expires_in: float | None = 600,
        refresh_at: datetime | None = None,
        due: bool = False,
    ) -> Connection:
        """An authorized connection. Not due unless `due` or `refresh_at` says otherwise."""
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=expires_in) if expires_in is not None else None
        if due:
            refresh_at = now
        elif refresh_at is None:
            refresh_at = now + timedelta(hours=1)
        cid = f"{app.name}-{uuid.uuid4().hex[:6]}"
        async with self.resources.pool.acquire() as conn, conn.transaction():
            await connections.start(
                conn, connection_id=cid, app_id=app.id, requested_scopes=[], metadata=None
            )
            stored = await connections.store_tokens(
                conn,
                self.resources.ring,
                cid,
                tokens(refresh_token=refresh_token, expires_in=None),
                expires_at=expires_at,
                refresh_at=refresh_at,
                refresh_token_expires_at=None,
                requested_scopes=[],
                granted_scopes=[],
                problem=None,
                authorized=True,
            )
        assert stored is not None and stored.status == "active"
        return stored

    async def refresh(self, connection_id: str, *, force: bool = True) -> str:
        return await refresh_one(self.ctx[CTX_KEY], connection_id, force=force)

    async def get(self, connection_id: str) -> Connection:
        found = await connections.get(self.resources.pool, connection_id)
        assert found is not None
        return found

    async def get_app(self, app: App) -> App:
        found = await apps.get_by_id(self.resources.pool, app.id)
        assert found is not None
        return found

    def refresh_token_of(self, connection: Connection) -> str | None:
        return connection.open_refresh_token(self.resources.ring)

    def access_token_of(self, connection: Connection) -> str | None:
        return connection.open_access_token(self.resources.ring)

    async def events(self, connection_id: str) -> list[dict[str, Any]]:
        rows = await self.resources.pool.fetch(
            "SELECT event FROM outbox WHERE event->>'connection_id' = $1 ORDER BY id",
            connection_id,
        )
        return [r["event"] for r in rows]

    async def app_events(self, app: App) -> list[dict[str, Any]]:
        rows = await self.resources.pool.fetch(
            "SELECT event FROM outbox WHERE event->>'app' = $1 ORDER BY id", app.name
        )
        return [r["event"] for r in rows]

    async def raw(self, sql: str, *args: Any) -> None:
        await self.resources.pool.execute(sql, *args)


@pytest.fixture
async def broker(resources: Resources, session, unique) -> AsyncIterator[Broker]:
    b = Broker(resources, session, unique)
    yield b
    # Off the schedule: a worker running elsewhere in this session must not pick these up.
    await resources.pool.execute(
        """UPDATE connections SET refresh_at = NULL, lease_holder = NULL, lease_until = NULL
           WHERE app_id = ANY($1::uuid[])""",
        b.app_ids,
    )


def requests_to(mock: aioresponses, url: str) -> list[dict[str, str]]:
    """The forms of the requests the provider received at `url`, in order."""
    forms = []
    for (_, seen_url), calls in mock.requests.items():
        if str(seen_url) == url:
            for call in calls:
                data = call.kwargs.get("data") or b""
                forms.append(dict(parse_qsl(data.decode(), keep_blank_values=True)))
    return forms


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def assert_retrying(
    broker: Broker,
    connection_id: str,
    *,
    before: datetime,
    attempt: int = 1,
    problem: str | None = None,
) -> Connection:
    """The shape of every transient failure: still active, nothing lost, retried later. An
    outage leaves no problem; an answer that is not a token response is named provider_error."""
    row = await broker.get(connection_id)
    assert row.status == "active"
    assert row.problem == problem
    assert row.failed_attempts == attempt
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > before
    assert row.refresh_at == row.next_attempt_at  # the scheduler picks it up then
    assert row.lease_holder is None  # released, or the retry would find it busy
    assert broker.refresh_token_of(row) == OLD_REFRESH
    assert broker.access_token_of(row) == OLD_ACCESS
    failed = of_type(await broker.events(connection_id), "connection.refresh_failed")
    assert failed, "no connection.refresh_failed event"
    last = failed[-1]
    assert last["status"] == "active"
    assert last["data"]["attempt"] == attempt
    # Events write times to the millisecond.
    assert abs(at(last["data"]["next_attempt_at"]) - row.next_attempt_at) < timedelta(
        milliseconds=1
    )
    assert of_type(await broker.events(connection_id), "connection.invalidated") == []
    return row


def backoff_ceiling(attempt: int) -> float:
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))


# --------------------------------------------------------------------------------------------
# Transient failures: retried with backoff, never a dead connection
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "answer", "asked"),
    [
        # A 5xx other than 503 may come after the provider acted: asked again at once.
        (500, {"payload": {"error": "server_error"}}, 2),
        (502, {"body": "<html>Bad Gateway</html>", "content_type": "text/html"}, 2),
        (503, {"body": ""}, 1),
    ],
)
async def test_server_errors_are_retried_with_backoff(
    broker: Broker, mock: aioresponses, status: int, answer: dict[str, Any], asked: int
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, status=status, repeat=True, **answer)
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await assert_retrying(broker, c.id, before=before)
    # Attempt 1: full jitter under BACKOFF_BASE, never sooner than a second.
    assert row.next_attempt_at is not None
    delay = row.next_attempt_at - before
    assert timedelta(seconds=1) - TOLERANCE <= delay <= timedelta(seconds=BACKOFF_BASE) + TOLERANCE
    assert row.last_error is not None and row.last_error["status"] == status
    (event,) = of_type(await broker.events(c.id), "connection.refresh_failed")
    assert event["data"]["provider_status"] == status
    # The provider was asked with the stored refresh token each time.
    forms = requests_to(mock, app.token_url)
    assert len(forms) == asked
    assert {(f["grant_type"], f["refresh_token"]) for f in forms} == {
        ("refresh_token", OLD_REFRESH)
    }
    # Whether the provider may have rotated the token is remembered for the next attempt.
    assert (row.answer_lost_at is not None) == (asked == 2)


async def test_429_retry_after_seconds_is_honoured(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(
        app.token_url,
        status=429,
        payload={"error": "rate_limited"},
        headers={"Retry-After": "120"},
    )
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await assert_retrying(broker, c.id, before=before)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at >= before + timedelta(seconds=119)
    # Not much later than asked either: the backoff of attempt 1 is far below 120 s.
    assert row.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=121)
    (event,) = of_type(await broker.events(c.id), "connection.refresh_failed")
    assert event["data"]["provider_status"] == 429


async def test_429_retry_after_http_date_is_honoured(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    when = datetime.now(UTC) + timedelta(seconds=300)
    mock.post(
        app.token_url,
        status=429,
        body="",
        headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)},
    )
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await assert_retrying(broker, c.id, before=before)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at >= before + timedelta(seconds=290)
    assert row.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=302)


@pytest.mark.parametrize(
    ("exception", "error", "sent"),
    [
        (TimeoutError(), "timeout", True),
        (aiohttp.ClientConnectionError(), "connection_error", True),
        (aiohttp.ServerDisconnectedError(), "connection_error", True),
        (aiohttp.ConnectionTimeoutError(), "connect_timeout", False),
    ],
    ids=["timeout", "connection-error", "disconnected", "never-connected"],
)
async def test_no_answer_is_transient(
    broker: Broker, mock: aioresponses, exception: Exception, error: str, sent: bool
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, exception=exception, repeat=True)
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await assert_retrying(broker, c.id, before=before)
    assert row.last_error is not None and row.last_error["error"] == error
    # A request that may have reached the provider is asked again at once with the same
    # token (its answer may have held a rotated one); one never sent is not.
    assert len(requests_to(mock, app.token_url)) == (2 if sent else 1)
    assert (row.answer_lost_at is not None) == sent


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>Sign in</body></html>", "text/html"),
        ('{"access_token": "abc', "application/json"),  # cut off mid-way
        ('{"token_type": "Bearer"}', "application/json"),  # no access_token
    ],
    ids=["html", "truncated-json", "no-access-token"],
)
async def test_a_200_that_is_not_a_token_response_is_transient(
    broker: Broker, mock: aioresponses, body: str, content_type: str
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, status=200, body=body, content_type=content_type)
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    await assert_retrying(broker, c.id, before=before, problem="provider_error")


async def test_repeated_failures_back_off_under_a_growing_capped_ceiling(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, status=503, repeat=True)

    for attempt in range(1, 6):
        before = datetime.now(UTC)
        assert await broker.refresh(c.id) == "retrying"
        row = await assert_retrying(broker, c.id, before=before, attempt=attempt)
        assert row.next_attempt_at is not None
        delay = (row.next_attempt_at - before).total_seconds()
        assert 1 - TOLERANCE.total_seconds() <= delay
        assert delay <= backoff_ceiling(attempt) + TOLERANCE.total_seconds()

    attempts = [
        e["data"]["attempt"]
        for e in of_type(await broker.events(c.id), "connection.refresh_failed")
    ]
    assert attempts == [1, 2, 3, 4, 5]
    assert len(requests_to(mock, app.token_url)) == 5

    # Long trouble: the wait stays under the cap.
    await broker.raw("UPDATE connections SET failed_attempts = 40 WHERE id = $1", c.id)
    before = datetime.now(UTC)
    assert await broker.refresh(c.id) == "retrying"
    row = await broker.get(c.id)
    assert row.failed_attempts == 41 and row.status == "active"
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - before <= timedelta(seconds=BACKOFF_CAP) + TOLERANCE


async def test_success_after_failures_clears_the_trouble(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, status=503)
    mock.post(app.token_url, status=503)
    mock.post(
        app.token_url,
        payload={"access_token": "AT2", "refresh_token": "RT2", "expires_in": 3600},
    )
    assert await broker.refresh(c.id) == "retrying"
    assert await broker.refresh(c.id) == "retrying"
    assert await broker.refresh(c.id) == "refreshed"

    row = await broker.get(c.id)
    assert row.status == "active" and row.problem is None
    assert row.failed_attempts == 0
    assert row.next_attempt_at is None
    assert row.last_error is None
    assert broker.access_token_of(row) == "AT2"
    assert broker.refresh_token_of(row) == "RT2"


async def test_backoff_survives_very_long_trouble(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    await broker.raw("UPDATE connections SET failed_attempts = 1100 WHERE id = $1", c.id)
    mock.post(app.token_url, status=503)
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await broker.get(c.id)
    assert row.failed_attempts == 1101 and row.lease_holder is None
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - before <= timedelta(seconds=BACKOFF_CAP) + TOLERANCE


async def test_a_retry_never_waits_past_the_tokens_expiry(
    broker: Broker, mock: aioresponses
) -> None:
    """Deep in its backoff (a ceiling of 15 minutes), a connection whose token expires in 40 s
    is still tried again before it expires; once expired, within a minute."""
    app = await broker.app()
    c = await broker.connection(app, expires_in=40)
    await broker.raw("UPDATE connections SET failed_attempts = 20 WHERE id = $1", c.id)
    mock.post(app.token_url, status=503, repeat=True)
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await broker.get(c.id)
    assert row.expires_at is not None and row.next_attempt_at is not None
    assert row.next_attempt_at < row.expires_at
    assert row.next_attempt_at >= before + timedelta(seconds=1) - TOLERANCE
    assert row.problem is None  # the token still works

    # The token has expired meanwhile: the connection says so, and tries again soon.
    await broker.raw(
        "UPDATE connections SET expires_at = now() - interval '1 minute' WHERE id = $1", c.id
    )
    before = datetime.now(UTC)
    assert await broker.refresh(c.id) == "retrying"
    row = await broker.get(c.id)
    assert row.status == "active" and row.problem == "token_expired"
    assert row.next_attempt_at is not None
    assert row.next_attempt_at <= before + timedelta(seconds=60) + TOLERANCE


async def test_retry_after_is_honoured_even_past_the_expiry(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app, expires_in=30)
    mock.post(app.token_url, status=429, headers={"Retry-After": "300"})
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "retrying"

    row = await broker.get(c.id)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at >= before + timedelta(seconds=299)


# --------------------------------------------------------------------------------------------
# A sent refresh whose answer is lost: asked again at once, and named if the grant is gone
# --------------------------------------------------------------------------------------------


async def test_a_lost_answer_is_asked_again_with_the_same_token_and_the_grant_kept(
    broker: Broker, mock: aioresponses
) -> None:
    """The provider rotated the token but the answer timed out; it still accepts the old one
    (a reuse grace, like Okta's, Atlassian's or Xero's): the retry at once keeps the grant."""
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, exception=TimeoutError())
    mock.post(
        app.token_url,
        payload={"access_token": "AT2", "refresh_token": "RT2", "expires_in": 3600},
    )

    assert await broker.refresh(c.id) == "refreshed"

    forms = requests_to(mock, app.token_url)
    assert [f["refresh_token"] for f in forms] == [OLD_REFRESH, OLD_REFRESH]
    row = await broker.get(c.id)
    assert row.status == "active" and row.problem is None
    assert broker.refresh_token_of(row) == "RT2"
    assert row.answer_lost_at is None and row.failed_attempts == 0
    assert of_type(await broker.events(c.id), "connection.refresh_failed") == []


@pytest.mark.parametrize(
    ("preset", "problem"),
    [
        ("zoom", "rotation_lost"),  # rotates, no reuse grace
        (None, "rotation_lost"),  # unknown: it may rotate
        ("google", "refresh_token_invalidated"),  # never rotates: the grant really is gone
    ],
)
async def test_a_lost_answer_then_a_refusal_is_named_rotation_lost(
    broker: Broker, mock: aioresponses, preset: str | None, problem: str
) -> None:
    app = await broker.app(preset=preset)
    c = await broker.connection(app)
    mock.post(app.token_url, status=502, body="<html>Bad Gateway</html>")
    mock.post(app.token_url, status=400, payload={"error": "invalid_grant"})

    assert await broker.refresh(c.id) == "invalidated"

    row = await broker.get(c.id)
    assert row.status == "failed" and row.problem == problem
    (event,) = of_type(await broker.events(c.id), "connection.invalidated")
    assert event["problem"] == problem
    if problem == "rotation_lost":
        assert "answer never reached authbroker" in event["detail"]
        assert "authorize the connection again" in event["detail"]
        assert event["data"]["answer_lost"] is True
    if preset == "zoom":
        assert "accepts a refresh token only once" in event["detail"]


async def test_a_lost_answer_is_remembered_until_the_next_attempt(
    broker: Broker, mock: aioresponses
) -> None:
    """The answer is lost and the retry meets an outage: the next attempt, later, still knows
    that the provider may have rotated the token."""
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, exception=aiohttp.ServerDisconnectedError())
    mock.post(app.token_url, status=503)

    assert await broker.refresh(c.id) == "retrying"
    row = await broker.get(c.id)
    assert row.answer_lost_at is not None and row.status == "active"

    mock.post(app.token_url, status=400, payload={"error": "invalid_grant"})
    assert await broker.refresh(c.id) == "invalidated"
    row = await broker.get(c.id)
    assert row.problem == "rotation_lost"


async def test_a_refresh_taken_over_from_a_dead_holder_may_have_lost_its_answer(
    broker: Broker, mock: aioresponses
) -> None:
    """A worker died holding the lease (its refresh may have reached the provider): the worker
    that takes over and is refused names rotation_lost; one that succeeds clears the doubt."""
    app = await broker.app()
    dead, alive = await broker.connection(app), await broker.connection(app)
    for c in (dead, alive):
        assert await leases.take_lease(broker.resources.pool, c.id, "dead-worker:1", 0.001)
    await asyncio.sleep(0.05)
    mock.post(app.token_url, status=400, payload={"error": "invalid_grant"})

    assert await broker.refresh(dead.id) == "invalidated"
    assert (await broker.get(dead.id)).problem == "rotation_lost"

    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600})
    assert await broker.refresh(alive.id) == "refreshed"
    assert (await broker.get(alive.id)).answer_lost_at is None


# --------------------------------------------------------------------------------------------
# The provider refuses the grant: the connection is dead, and says what to do
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, {"error": "invalid_grant", "error_description": "Token has been revoked."}),
        (200, {"error": "bad_refresh_token", "error_description": "The refresh token is bad."}),
    ],
    ids=["invalid_grant", "github-bad_refresh_token"],
)
async def test_refused_grant_invalidates_the_connection(
    broker: Broker, mock: aioresponses, status: int, payload: dict[str, str]
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, status=status, payload=payload)

    assert await broker.refresh(c.id) == "invalidated"

    row = await broker.get(c.id)
    assert row.status == "failed"
    assert row.problem == "refresh_token_invalidated"
    assert row.problem_detail and "authorize again" in row.problem_detail
    assert row.refresh_at is None  # no more attempts with a dead grant
    assert row.lease_holder is None
    events = await broker.events(c.id)
    (event,) = of_type(events, "connection.invalidated")
    assert event["status"] == "failed"
    assert event["problem"] == "refresh_token_invalidated"
    assert "Delete the connection and authorize again" in event["detail"]
    assert event["data"]["provider_error"] == payload["error"]
    assert of_type(events, "connection.refresh_failed") == []
    # The app is fine: nothing paused.
    assert (await broker.get_app(app)).paused_at is None

    # Dead means dead: the job leaves it alone afterwards.
    assert await broker.refresh(c.id) == "busy or not active"
    assert len(requests_to(mock, app.token_url)) == 1


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The process's structured logs, at debug level, into a buffer; restored afterwards."""
    restore = sys.stderr
    buffer = io.StringIO()
    sys.stderr = buffer  # configure_logging binds sys.stderr when called
    try:
        configure_logging("json", "debug")
    finally:
        sys.stderr = restore
    yield buffer
    configure_logging("json", os.environ.get("AUTHBROKER_TEST_LOG_LEVEL", "warning"))


@pytest.mark.parametrize(
    ("status", "error", "outcome", "log_event"),
    [
        (400, "invalid_grant", "invalidated", "connection_invalidated"),
        (503, "temporarily_unavailable", "retrying", "refresh_retry"),
    ],
)
async def test_echoed_secrets_reach_no_event_row_or_log(
    broker: Broker,
    mock: aioresponses,
    captured_logs: io.StringIO,
    status: int,
    error: str,
    outcome: str,
    log_event: str,
) -> None:
    """Providers quote what they were sent; none of it may reach events, the row or logs."""
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(
        app.token_url,
        status=status,
        payload={
            "error": error,
            "error_description": f"refresh_token={OLD_REFRESH} client_secret={SECRET} refused",
        },
    )

    assert await broker.refresh(c.id) == outcome

    row = await broker.get(c.id)
    events = json.dumps(await broker.events(c.id))
    logs = captured_logs.getvalue()
    assert log_event in logs  # the capture works: the job did log
    assert row.last_error is not None and "refused" in row.last_error["description"]
    for text in (events, json.dumps(row.last_error), row.problem_detail or "", logs):
        assert OLD_REFRESH not in text
        assert SECRET not in text
        assert OLD_ACCESS not in text


# --------------------------------------------------------------------------------------------
# The provider refuses the client: the app is paused, once, and resumed by an update
# --------------------------------------------------------------------------------------------


async def test_invalid_client_pauses_the_app_once_and_an_update_resumes_it(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    first = await broker.connection(app)
    second = await broker.connection(app)
    mock.post(app.token_url, status=401, payload={"error": "invalid_client"}, repeat=True)

    assert await broker.refresh(first.id) == "app paused"

    paused = await broker.get_app(app)
    assert paused.paused_at is not None
    assert paused.paused_problem == "invalid_settings"
    for cid in (first.id, second.id):
        row = await broker.get(cid)
        assert row.status == "active"  # the connections are fine; the settings are not
        assert row.problem is None
        assert row.refresh_at is None  # held: the scheduler leaves the app alone
        assert broker.refresh_token_of(row) == OLD_REFRESH

    # The second connection had been enqueued before the hold: its job asks nobody.
    await broker.raw("UPDATE connections SET refresh_at = now() WHERE id = $1", second.id)
    assert await broker.refresh(second.id, force=False) == "app paused"
    # Nor does a forced refresh of the first while the app stays paused.
    assert await broker.refresh(first.id) == "app paused"
    # One refresh asked: in the body, then once more with a Basic header (a refused placement
    # is tried in the other before the settings are declared wrong).
    asked = requests_to(mock, app.token_url)
    assert [("client_secret" in form) for form in asked] == [True, False]

    settings_invalid = of_type(await broker.app_events(app), "app.settings_invalid")
    assert len(settings_invalid) == 1
    assert settings_invalid[0]["problem"] == "invalid_settings"
    assert "client id and secret" in settings_invalid[0]["detail"]
    for cid in (first.id, second.id):
        row = await broker.get(cid)
        assert row.status == "active" and row.refresh_at is None and row.lease_holder is None
        events = await broker.events(cid)
        assert of_type(events, "connection.invalidated") == []
        assert of_type(events, "connection.refresh_failed") == []

    # The operator fixes the secret (what PATCH /v1/apps/{app} does).
    async with broker.resources.pool.acquire() as conn:
        updated = await apps.update(conn, broker.resources.ring, paused, {"client_secret": "new"})
    assert updated.paused_at is None and updated.paused_problem is None
    now = datetime.now(UTC)
    for cid in (first.id, second.id):
        row = await broker.get(cid)
        assert row.refresh_at is not None and row.refresh_at <= now  # due at once
    # ... and the next refresh goes out with the new secret and works.
    mock.clear()  # the provider now accepts the client; requests seen so far are kept
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600})
    assert await broker.refresh(first.id, force=False) == "refreshed"
    seen = requests_to(mock, app.token_url)
    assert len(seen) == 3  # the two refused (body, Basic), then the new secret in the body
    assert seen[0]["client_secret"] == SECRET and seen[2]["client_secret"] == "new"
    assert len(of_type(await broker.app_events(app), "app.settings_invalid")) == 1


async def test_previous_secret_is_tried_before_pausing(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app(client_secret="new", client_secrets_previous=["old"])
    c = await broker.connection(app)
    tried: list[str] = []

    def provider(url: URL, **kwargs: Any) -> CallbackResult:
        form = dict(parse_qsl(kwargs["data"].decode()))
        tried.append(form["client_secret"])
        if form["client_secret"] != "old":
            return CallbackResult(status=401, payload={"error": "invalid_client"})
        return CallbackResult(
            payload={"access_token": "AT2", "refresh_token": "RT2", "expires_in": 3600}
        )

    mock.post(app.token_url, callback=provider, repeat=True)

    assert await broker.refresh(c.id) == "refreshed"

    assert tried == ["new", "old"]
    assert (await broker.get_app(app)).paused_at is None
    assert of_type(await broker.app_events(app), "app.settings_invalid") == []
    row = await broker.get(c.id)
    assert row.status == "active"
    assert broker.access_token_of(row) == "AT2"
    assert broker.refresh_token_of(row) == "RT2"


# --------------------------------------------------------------------------------------------
# Success: what is stored, and when the next refresh is planned
# --------------------------------------------------------------------------------------------


async def test_rotated_refresh_token_replaces_the_old_one(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app(refresh_margin=300)
    c = await broker.connection(app)
    mock.post(
        app.token_url,
        payload={
            "access_token": "AT2",
            "refresh_token": "RT2",
            "expires_in": 3600,
            "token_type": "bearer",
        },
    )
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "refreshed"

    after = datetime.now(UTC)
    row = await broker.get(c.id)
    assert broker.access_token_of(row) == "AT2"
    assert broker.refresh_token_of(row) == "RT2"
    assert row.version > c.version
    assert row.lease_holder is None
    assert row.last_refresh_at is not None and before - TOLERANCE <= row.last_refresh_at
    assert row.expires_at is not None and row.refresh_at is not None
    assert before + timedelta(seconds=3600) - TOLERANCE <= row.expires_at
    assert row.expires_at <= after + timedelta(seconds=3600) + TOLERANCE
    # Margin: max(300 s, 20 % of 3600 s) = 720 s, plus up to 10 % of it as jitter.
    ahead = (row.expires_at - row.refresh_at).total_seconds()
    assert 720 - 0.01 <= ahead <= 792 + 0.01
    (form,) = requests_to(mock, app.token_url)
    assert form["refresh_token"] == OLD_REFRESH
    (event,) = of_type(await broker.events(c.id), "connection.refreshed")
    assert event["status"] == "active"
    assert event["data"]["refresh_token_rotated"] is True
    assert abs(at(event["data"]["expires_at"]) - row.expires_at) < timedelta(milliseconds=1)


async def test_absent_refresh_token_keeps_the_old_one(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600})

    assert await broker.refresh(c.id) == "refreshed"

    row = await broker.get(c.id)
    assert broker.access_token_of(row) == "AT2"
    assert broker.refresh_token_of(row) == OLD_REFRESH  # RFC 6749 §6
    (event,) = of_type(await broker.events(c.id), "connection.refreshed")
    assert event["data"]["refresh_token_rotated"] is False

    # And the kept one is what the next refresh sends.
    mock.post(app.token_url, payload={"access_token": "AT3", "expires_in": 3600})
    assert await broker.refresh(c.id) == "refreshed"
    assert requests_to(mock, app.token_url)[-1]["refresh_token"] == OLD_REFRESH


@pytest.mark.parametrize("key", ["refresh_token_expires_in", "x_refresh_token_expires_in"])
async def test_refresh_token_lifetime_brings_the_refresh_forward(
    broker: Broker, mock: aioresponses, key: str
) -> None:
    app = await broker.app(refresh_margin=300)
    c = await broker.connection(app)
    mock.post(
        app.token_url,
        payload={
            "access_token": "AT2",
            "refresh_token": "RT2",
            "expires_in": 86_400,
            key: 7200,
        },
    )
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "refreshed"

    after = datetime.now(UTC)
    row = await broker.get(c.id)
    assert row.refresh_token_expires_at is not None and row.refresh_at is not None
    assert before + timedelta(seconds=7200) - TOLERANCE <= row.refresh_token_expires_at
    assert row.refresh_token_expires_at <= after + timedelta(seconds=7200) + TOLERANCE
    # The refresh token dies first: refreshed before it, by its margin (20 % of 7200 s).
    assert row.refresh_at <= row.refresh_token_expires_at - timedelta(seconds=1440) + TOLERANCE
    assert row.refresh_at > after


async def test_app_default_lifetime_applies_without_expires_in(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app(default_token_lifetime=3600)
    c = await broker.connection(app)
    mock.post(app.token_url, payload={"access_token": "AT2", "refresh_token": "RT2"})
    before = datetime.now(UTC)

    assert await broker.refresh(c.id) == "refreshed"

    after = datetime.now(UTC)
    row = await broker.get(c.id)
    assert row.expires_at is not None and row.refresh_at is not None
    assert before + timedelta(seconds=3600) - TOLERANCE <= row.expires_at
    assert row.expires_at <= after + timedelta(seconds=3600) + TOLERANCE
    assert after < row.refresh_at <= row.expires_at - timedelta(seconds=720) + TOLERANCE


async def test_app_refresh_token_lifetime_keeps_a_rotating_token_alive(
    broker: Broker, mock: aioresponses
) -> None:
    """No expires_in and no default lifetime, but rotating refresh tokens that die unused after
    30 days: the connection is still refreshed before then."""
    thirty_days = 30 * 86_400
    app = await broker.app(refresh_token_lifetime=thirty_days)
    c = await broker.connection(app)
    mock.post(app.token_url, payload={"access_token": "AT2", "refresh_token": "RT2"})

    assert await broker.refresh(c.id) == "refreshed"

    after = datetime.now(UTC)
    row = await broker.get(c.id)
    assert row.expires_at is None
    assert row.refresh_token_expires_at is not None and row.refresh_at is not None
    assert row.refresh_token_expires_at <= after + timedelta(seconds=thirty_days) + TOLERANCE
    assert after < row.refresh_at < row.refresh_token_expires_at


async def test_a_zero_lifetime_never_leaves_an_expiring_connection_unscheduled(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(
        app.token_url,
        payload={"access_token": "AT2", "refresh_token": "RT2", "expires_in": 0},
    )

    assert await broker.refresh(c.id) == "refreshed"

    row = await broker.get(c.id)
    # Either the token does not expire, or there is a moment to refresh it.
    assert row.expires_at is None or row.refresh_at is not None


# --------------------------------------------------------------------------------------------
# Single flight: the lease
# --------------------------------------------------------------------------------------------


async def test_a_held_lease_keeps_the_job_off(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600}, repeat=True)
    pool = broker.resources.pool
    assert await leases.take_lease(pool, c.id, "someone-else", 60) is not None

    assert await broker.refresh(c.id) == "busy or not active"

    assert requests_to(mock, app.token_url) == []
    row = await broker.get(c.id)
    assert row.lease_holder == "someone-else"  # neither stolen nor released
    assert row.version == c.version
    assert broker.access_token_of(row) == OLD_ACCESS

    # Only the holder releases it.
    await leases.release_lease(pool, c.id, "not-the-holder")
    assert (await broker.get(c.id)).lease_holder == "someone-else"
    await leases.release_lease(pool, c.id, "someone-else")
    assert (await broker.get(c.id)).lease_holder is None
    assert await broker.refresh(c.id) == "refreshed"


async def test_a_lapsed_lease_is_taken_over(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600})
    assert await leases.take_lease(broker.resources.pool, c.id, "dead-worker", 0.001)
    await asyncio.sleep(0.05)

    assert await broker.refresh(c.id) == "refreshed"

    assert len(requests_to(mock, app.token_url)) == 1
    row = await broker.get(c.id)
    assert broker.access_token_of(row) == "AT2"
    assert row.lease_holder is None


async def test_only_the_holder_writes_tokens(broker: Broker) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    pool, ring = broker.resources.pool, broker.resources.ring

    async def write(access: str, **lease: Any) -> Connection | None:
        async with pool.acquire() as conn:
            return await connections.store_tokens(
                conn,
                ring,
                c.id,
                tokens(access, refresh_token=None),
                expires_at=None,
                refresh_at=None,
                refresh_token_expires_at=None,
                requested_scopes=None,
                granted_scopes=[],
                problem=None,
                authorized=False,
                **lease,
            )

    # Another writer (a re-authorization, or a refresh that took over) gets there first.
    other = await write("AT-other")
    assert other is not None and other.version == c.version + 1

    stale = await write("AT-stale", lease_holder="x", expected_version=c.version)
    assert stale is None
    row = await broker.get(c.id)
    assert broker.access_token_of(row) == "AT-other"
    assert row.version == c.version + 1

    # Someone else's live lease: a writer that saw the current version still may not write.
    assert await leases.take_lease(pool, c.id, "live-holder", 60)
    assert await write("AT-intruder", lease_holder="x", expected_version=row.version) is None
    assert broker.access_token_of(await broker.get(c.id)) == "AT-other"

    # A lapsed lease with nothing written since: the late answer is kept (a one-time refresh
    # token may already be consumed at the provider; these tokens are the only working ones).
    await leases.release_lease(pool, c.id, "live-holder")
    assert await leases.take_lease(pool, c.id, "x", 0.001)
    await asyncio.sleep(0.05)
    assert await leases.take_lease(pool, c.id, "y", 0.001)
    await asyncio.sleep(0.05)
    late = await write("AT-late", lease_holder="x", expected_version=row.version)
    assert late is not None and late.version == row.version + 1
    assert broker.access_token_of(await broker.get(c.id)) == "AT-late"


async def test_a_refusal_of_a_replaced_grant_does_not_kill_the_new_one(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    pool, ring = broker.resources.pool, broker.resources.ring

    async def provider(url: URL, **kwargs: Any) -> CallbackResult:
        # While the refresh is in flight the user authorizes the connection again; the
        # exchange stores the new grant (services/authorizations.py writes without a lease) and the
        # provider revokes the old grant, so it refuses the refresh.
        async with pool.acquire() as conn:
            stored = await connections.store_tokens(
                conn,
                ring,
                c.id,
                tokens("AT-new", refresh_token="RT-new", expires_in=3600),
                expires_at=datetime.now(UTC) + timedelta(seconds=3600),
                refresh_at=datetime.now(UTC) + timedelta(seconds=2880),
                refresh_token_expires_at=None,
                requested_scopes=[],
                granted_scopes=[],
                problem=None,
                authorized=True,
            )
            assert stored is not None
        return CallbackResult(status=400, payload={"error": "invalid_grant"})

    mock.post(app.token_url, callback=provider)

    assert await broker.refresh(c.id) != "invalidated"

    row = await broker.get(c.id)
    assert row.status == "active"
    assert row.problem is None
    assert broker.refresh_token_of(row) == "RT-new"
    assert of_type(await broker.events(c.id), "connection.invalidated") == []


async def test_a_transient_failure_after_losing_the_lease_reports_nothing(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    c = await broker.connection(app)
    pool, ring = broker.resources.pool, broker.resources.ring

    async def provider(url: URL, **kwargs: Any) -> CallbackResult:
        async with pool.acquire() as conn:
            await connections.store_tokens(
                conn,
                ring,
                c.id,
                tokens("AT-new", refresh_token="RT-new", expires_in=3600),
                expires_at=datetime.now(UTC) + timedelta(seconds=3600),
                refresh_at=datetime.now(UTC) + timedelta(seconds=2880),
                refresh_token_expires_at=None,
                requested_scopes=[],
                granted_scopes=[],
                problem=None,
                authorized=True,
            )
        return CallbackResult(status=503, body="")

    mock.post(app.token_url, callback=provider)

    await broker.refresh(c.id)

    row = await broker.get(c.id)
    assert row.status == "active" and row.failed_attempts == 0
    assert broker.refresh_token_of(row) == "RT-new"
    failed = of_type(await broker.events(c.id), "connection.refresh_failed")
    assert failed == [], failed


# --------------------------------------------------------------------------------------------
# Not due, no refresh token, never expiring
# --------------------------------------------------------------------------------------------


async def test_not_due_and_not_forced_does_nothing(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    c = await broker.connection(app, refresh_at=datetime.now(UTC) + timedelta(minutes=5))
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600}, repeat=True)

    assert await broker.refresh(c.id, force=False) == "not due"

    assert requests_to(mock, app.token_url) == []
    row = await broker.get(c.id)
    assert row.lease_holder is None  # released for the real refresh later
    assert row.version == c.version and row.refresh_at == c.refresh_at
    assert await broker.events(c.id) == []


async def test_due_and_not_forced_refreshes(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    mock.post(app.token_url, payload={"access_token": "AT2", "expires_in": 3600})
    c = await broker.connection(app, due=True)

    assert await broker.refresh(c.id, force=False) == "refreshed"

    row = await broker.get(c.id)
    assert broker.access_token_of(row) == "AT2"
    assert row.refresh_at is not None and row.refresh_at > datetime.now(UTC)


async def test_expired_without_refresh_token_says_so_once(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    past = datetime.now(UTC) - timedelta(seconds=5)
    mock.post(app.token_url, payload={"access_token": "AT2"}, repeat=True)
    c = await broker.connection(app, refresh_token=None, expires_in=-5, refresh_at=past)

    assert await broker.refresh(c.id, force=False) == "expired"

    row = await broker.get(c.id)
    assert row.status == "expired"
    assert row.problem == "token_expired"
    assert row.refresh_at is None
    (event,) = await broker.events(c.id)
    assert event["type"] == "connection.expired"
    assert event["status"] == "expired" and event["problem"] == "token_expired"
    assert "authorize the connection again" in event["detail"]
    assert requests_to(mock, app.token_url) == []

    assert await broker.refresh(c.id) == "busy or not active"
    assert len(await broker.events(c.id)) == 1


async def test_without_refresh_token_before_expiry_waits_for_expiry(
    broker: Broker, mock: aioresponses
) -> None:
    app = await broker.app()
    mock.post(app.token_url, payload={"access_token": "AT2"}, repeat=True)
    c = await broker.connection(app, refresh_token=None, expires_in=600)

    assert await broker.refresh(c.id) == "not expired yet"

    row = await broker.get(c.id)
    assert row.status == "active" and row.problem is None
    assert row.refresh_at == row.expires_at  # looked at again when it expires
    assert row.lease_holder is None
    assert await broker.events(c.id) == []
    assert requests_to(mock, app.token_url) == []


async def test_a_token_that_never_expires_gets_no_event(broker: Broker, mock: aioresponses) -> None:
    app = await broker.app()
    mock.post(app.token_url, payload={"access_token": "AT2"}, repeat=True)
    c = await broker.connection(app, refresh_token=None, expires_in=None, due=True)

    assert await broker.refresh(c.id, force=False) == "never expires"

    row = await broker.get(c.id)
    assert row.status == "active" and row.problem is None
    assert row.refresh_at is None  # nothing to look at, ever
    assert row.lease_holder is None
    assert broker.access_token_of(row) == OLD_ACCESS
    assert await broker.events(c.id) == []
    assert requests_to(mock, app.token_url) == []
