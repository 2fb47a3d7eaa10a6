"""Diagnosis: each check of the pure core flips between ok and failing (or warning) on the facts
that matter and shows its evidence; then the two endpoints through a real server, with states
set up in storage and one connection authorized for real at the django-oauth-toolkit server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authbroker.diagnosis import (
    AppFacts,
    AppHistory,
    Check,
    ConnectionFacts,
    EndpointAnswer,
    PausedError,
    RecentEvent,
    RecordedError,
    Report,
    TokenEndpoint,
    diagnose_app,
    diagnose_connection,
    worst,
)
from authbroker.problems import Problem
from handlers import diagnosis as diagnosis_routes
from handlers.app import create_app
from storage import api_keys, connections
from storage.resources import Resources
from tests.helpers import create_oauth_app, follow_callback, start_connection
from tests.oauth_server import basic_auth_header

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REDIRECT = "https://broker.example.com/oauth/callback"

CONNECTION_CHECKS = [
    "connection",
    "settings",
    "redirect_url",
    "client_auth",
    "scope_mismatch",
    "scopes_denied",
    "insufficient_scope",
    "authentication",
    "access_restrictions",
    "refresh_token",
    "refresh_token_invalidated",
    "rotation_lost",
    "token_endpoint",
    "token_expiry",
]
APP_CHECKS = [
    "connections",
    "settings",
    "authorization_url",
    "redirect_url",
    "client_auth",
    "scope_mismatch",
    "scopes_denied",
    "insufficient_scope",
    "access_restrictions",
    "refresh_token",
    "refresh_token_invalidated",
    "rotation_lost",
    "token_endpoint",
    "token_expiry",
    "revocation",
]


# ------------------------------------------------------------------------------ facts


def app_facts(**changes: Any) -> AppFacts:
    facts = AppFacts(
        name="crm",
        client_id="client-crm",
        authorization_url="https://auth.example.com/oauth/authorize",
        token_url="https://auth.example.com/oauth/token",
        revoke_url="https://auth.example.com/oauth/revoke",
        scopes=("read", "write"),
        client_auth="body",
        client_secret_set=True,
        updated_at=NOW - timedelta(days=30),
    )
    if "scopes" in changes:
        changes["scopes"] = tuple(changes["scopes"])
    return dataclasses.replace(facts, **changes)


def connection_facts(**changes: Any) -> ConnectionFacts:
    """A connection's facts; recorded errors and reports given as the JSON the row holds."""
    facts = ConnectionFacts(
        id="crm-1",
        app="crm",
        status="active",
        has_access_token=True,
        has_refresh_token=True,
        expires_at=NOW + timedelta(hours=1),
        refresh_at=NOW + timedelta(minutes=50),
        requested_scopes=("read", "write"),
        granted_scopes=("read", "write"),
        last_refresh_at=NOW - timedelta(minutes=10),
        authorized_at=NOW - timedelta(days=1),
        created_at=NOW - timedelta(days=1),
        updated_at=NOW - timedelta(minutes=10),
    )
    for key in ("requested_scopes", "granted_scopes"):
        if changes.get(key) is not None:
            changes[key] = tuple(changes[key])
    if "last_error" in changes:
        changes["last_error"] = RecordedError.of(changes["last_error"])
    if "last_report" in changes:
        changes["last_report"] = Report.of(changes["last_report"])
    return dataclasses.replace(facts, **changes)


def diagnose(
    connection: ConnectionFacts | None = None,
    app: AppFacts | None = None,
    events: list[dict[str, Any]] | None = None,
    **context: Any,
) -> dict[str, Check]:
    checks = diagnose_connection(
        connection or connection_facts(),
        app or app_facts(),
        redirect_url=REDIRECT,
        recent_events=[RecentEvent.of(e) for e in events or []],
        now=NOW,
        **context,
    )
    assert [c.name for c in checks] == CONNECTION_CHECKS
    json.dumps([c.as_dict() for c in checks])  # JSON-ready as it is
    return {c.name: c for c in checks}


def diagnose_the_app(
    app: AppFacts | None = None,
    by_status: dict[str, int] | None = None,
    problems: dict[str, int] | None = None,
    **context: Any,
) -> dict[str, Check]:
    history = context.pop("history", None) or AppHistory(
        by_status=by_status if by_status is not None else {"active": 3}, problems=problems or {}
    )
    checks = diagnose_app(
        app or app_facts(), redirect_url=REDIRECT, history=history, now=NOW, **context
    )
    assert [c.name for c in checks] == APP_CHECKS
    json.dumps([c.as_dict() for c in checks])
    return {c.name: c for c in checks}


def assert_only_failing(checks: dict[str, Check], *names: str) -> None:
    bad = {name: c.status for name, c in checks.items() if c.status != "ok"}
    assert set(bad) == set(names), bad


# ------------------------------------------------------------------------------ connections


def test_a_healthy_connection_passes_every_check():
    checks = diagnose()
    assert_only_failing(checks)
    assert worst(list(checks.values())) == "ok"
    assert checks["redirect_url"].evidence["redirect_url"] == REDIRECT
    assert checks["token_expiry"].evidence["expires_at"] == "2025-03-01T13:00:00Z"
    for check in checks.values():
        assert check.summary
        assert check.remedy is None or check.name == "client_auth"


def test_worst():
    ok = Check("a", "ok", "", {}, None)
    warning = Check("b", "warning", "", {}, "x")
    failing = Check("c", "failing", "", {}, "y")
    assert worst([]) == "ok"
    assert worst([ok, warning]) == "warning"
    assert worst([failing, ok, warning]) == "failing"


def test_settings_refused_pauses_the_app():
    checks = diagnose(app=app_facts(paused_at=NOW, paused_problem="invalid_settings"))
    settings = checks["settings"]
    assert settings.status == "failing"
    assert settings.evidence["paused_problem"] == "invalid_settings"
    assert settings.evidence["client_id"] == "client-crm"
    assert "client id and secret" in settings.remedy


def test_settings_invalid_client_at_the_exchange_then_app_updated():
    error = {"stage": "exchange", "error": "invalid_client", "description": None, "status": 401}
    failed = connection_facts(
        status="failed", problem="invalid_settings", last_error=error, has_access_token=False
    )
    checks = diagnose(failed)
    assert checks["settings"].status == "failing"
    assert checks["settings"].evidence["last_error"]["error"] == "invalid_client"
    assert checks["client_auth"].status == "ok"
    # The operator fixed the app after the failure: out of date, not refused any more.
    later = app_facts(updated_at=NOW)
    checks = diagnose(failed, later)
    assert checks["settings"].status == "warning"
    assert "authorize the connection again" in checks["settings"].remedy.lower()


def test_redirect_url_not_registered_shows_the_url_to_copy():
    checks = diagnose(
        connection_facts(
            status="failed",
            problem="redirect_mismatch",
            has_access_token=False,
            authorized_at=None,
            granted_scopes=None,
            last_error={
                "stage": "authorize",
                "error": "redirect_uri_mismatch",
                "description": None,
            },
        )
    )
    redirect = checks["redirect_url"]
    assert redirect.status == "failing"
    assert redirect.evidence["redirect_url"] == REDIRECT
    assert REDIRECT in redirect.remedy and REDIRECT in redirect.summary
    assert checks["connection"].status == "failing"


def test_redirect_url_suspected_when_authorizations_expire():
    checks = diagnose(
        connection_facts(
            status="failed",
            problem="authorization_expired",
            has_access_token=False,
            authorized_at=None,
            granted_scopes=None,
        )
    )
    assert checks["redirect_url"].status == "warning"
    assert REDIRECT in checks["redirect_url"].remedy


def test_insufficient_scope_reported_by_a_runtime():
    report = {
        "status": 403,
        "error": "insufficient_scope",
        "scope": ["admin"],
        "at": NOW.isoformat(),
    }
    checks = diagnose(connection_facts(problem="insufficient_scope", last_report=report))
    check = checks["insufficient_scope"]
    assert check.status == "failing"
    assert check.evidence["required_scopes"] == ["admin"]
    assert check.evidence["missing"] == ["admin"]
    assert check.evidence["last_report"]["status"] == 403
    assert "Add admin" in check.remedy
    # The app already requests it: only a new authorization is needed.
    checks = diagnose(
        connection_facts(problem="insufficient_scope", last_report=report),
        app_facts(scopes=["read", "write", "admin"]),
    )
    assert "already requests admin" in checks["insufficient_scope"].remedy
    # Authorized again with the scope: resolved.
    checks = diagnose(
        connection_facts(
            last_report=report,
            requested_scopes=["read", "write", "admin"],
            granted_scopes=["read", "write", "admin"],
        ),
        app_facts(scopes=["read", "write", "admin"]),
    )
    assert checks["insufficient_scope"].status == "ok"
    assert "resolved" in checks["insufficient_scope"].summary


def test_scopes_the_provider_application_does_not_allow():
    checks = diagnose(
        connection_facts(
            status="failed",
            problem="scope_mismatch",
            has_access_token=False,
            authorized_at=None,
            granted_scopes=None,
            last_error={
                "stage": "exchange",
                "error": "invalid_scope",
                "description": "scope admin not allowed",
                "status": 400,
            },
        )
    )
    check = checks["scope_mismatch"]
    assert check.status == "failing"
    assert check.evidence["requested_scopes"] == ["read", "write"]
    assert check.evidence["last_error"]["description"] == "scope admin not allowed"
    assert "Enable them at the provider" in check.remedy


def test_scopes_denied_at_login_lists_the_missing_ones():
    checks = diagnose(connection_facts(granted_scopes=["read"], problem="scopes_denied"))
    check = checks["scopes_denied"]
    assert check.status == "failing"
    assert check.evidence["missing"] == ["write"]
    assert check.evidence["granted_scopes"] == ["read"]
    assert "write" in check.summary
    # Granted more than asked: nothing missing.
    assert diagnose(connection_facts(granted_scopes=["read", "write", "x"]))[
        "scopes_denied"
    ].status == ("ok")


def test_authentication_not_used_on_requests():
    report = {
        "status": 403,
        "error": None,
        "scope": None,
        "at": (NOW - timedelta(hours=1)).isoformat(),
    }
    check = diagnose(connection_facts(last_report=report))["authentication"]
    assert check.status == "failing"
    assert check.evidence["last_report"]["status"] == 403
    assert "Authorization header" in check.remedy
    old = {**report, "at": (NOW - timedelta(days=3)).isoformat()}
    assert diagnose(connection_facts(last_report=old))["authentication"].status == "warning"
    # A 403 with a Bearer error is not this problem.
    scoped = {**report, "error": "insufficient_scope", "scope": ["admin"]}
    assert diagnose(connection_facts(last_report=scoped))["authentication"].status == "ok"


def test_ip_or_domain_restrictions():
    declined = connection_facts(
        status="failed",
        problem="access_denied",
        has_access_token=False,
        authorized_at=None,
        granted_scopes=None,
        last_error={"stage": "authorize", "error": "access_denied", "description": "IP blocked"},
    )
    check = diagnose(declined)["access_restrictions"]
    assert check.status == "failing"
    assert check.evidence["last_error"]["description"] == "IP blocked"
    assert "IP ranges" in check.summary
    probe = connection_facts(
        status="failed", problem="access_denied", last_error={"stage": "probe", "status": 401}
    )
    check = diagnose(probe)["access_restrictions"]
    assert check.status == "failing"
    assert "probe" in check.summary


def test_client_credentials_expected_elsewhere():
    checks = diagnose(app=app_facts(paused_at=NOW, paused_problem="client_auth_method"))
    assert_only_failing(checks, "client_auth")
    assert checks["client_auth"].evidence["client_auth"] == "body"
    # Both placements were tried and refused on the method: auto would try the same two.
    remedy = checks["client_auth"].remedy
    assert "in the body and in a Basic header" in remedy and "auto" not in remedy
    assert "private_key_jwt" in remedy and "client_secret_jwt" in remedy
    # Classified from the recorded provider error itself.
    error = {
        "stage": "exchange",
        "error": "invalid_client",
        "description": "client authentication method not supported",
        "status": 401,
    }
    checks = diagnose(
        connection_facts(status="failed", problem="client_auth_method", last_error=error)
    )
    assert checks["client_auth"].status == "failing"
    assert checks["settings"].status == "ok"


def test_client_auth_detected_is_informational():
    found = diagnose(app=app_facts(client_auth="auto", client_auth_detected="basic"))["client_auth"]
    assert found.status == "ok"
    assert found.evidence["client_auth_detected"] == "basic"
    assert "basic" in found.summary
    stale = diagnose(app=app_facts(client_auth="body", client_auth_detected="basic"))["client_auth"]
    assert stale.status == "warning"


def test_a_fixed_placement_refused_where_another_worked_names_the_change():
    app = app_facts(client_auth="body", client_auth_works="basic", client_auth_works_at=NOW)
    for checks in (diagnose(app=app), diagnose_the_app(app)):
        assert_only_failing(checks, "client_auth")
        found = checks["client_auth"]
        assert found.status == "failing"
        assert found.evidence["client_auth"] == "body"
        assert found.evidence["client_auth_works"] == "basic"
        assert found.evidence["client_auth_works_seen_at"] == "2025-03-01T12:00:00Z"
        assert "refused the client credentials in the body" in found.summary
        assert 'PATCH /v1/apps/crm {"client_auth": "basic"}' in found.remedy
        assert "authbroker apps update crm --client-auth basic" in found.remedy


def test_credentials_refused_in_every_placement_say_where():
    error = {
        "stage": "refresh",
        "error": "invalid_client",
        "description": "the client credentials were refused in every placement tried (…)",
        "status": 401,
        "placements": ["body", "basic"],
    }
    app = app_facts(
        paused_at=NOW, paused_problem="invalid_settings", paused_error=PausedError.of(error)
    )
    for checks in (diagnose(app=app), diagnose_the_app(app)):
        assert_only_failing(checks, "settings")
        found = checks["settings"]
        assert "in every placement tried (body, basic)" in found.summary
        assert found.evidence["paused_error"]["placements_refused"] == ["body", "basic"]
        assert found.evidence["paused_error"]["error"] == "invalid_client"


LONG_LIVED = {"has_refresh_token": False, "expires_at": None, "refresh_at": None}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"reported_status": 401, "reported_error": "invalid_token"}, "reported invalid_token"),
        ({"reported_status": 401, "probe_status": 401}, "the probe URL answered 401"),
        ({"reported_status": 401, "reports": 3}, "reported 3 bare 401s within an hour"),
    ],
)
def test_a_long_lived_token_the_provider_revoked(data, says):
    connection = connection_facts(status="failed", problem="token_revoked", **LONG_LIVED)
    event = {
        "type": "connection.invalidated",
        "occurred_at": "2025-03-01T11:00:00.000Z",
        "problem": "token_revoked",
        "connection_id": "crm-1",
        "data": data,
    }
    checks = diagnose(connection, events=[event])
    assert_only_failing(checks, "connection", "authentication")
    found = checks["authentication"]
    assert found.status == "failing" and says in found.summary
    assert found.evidence["event"]["data"] == data
    assert found.remedy == Problem.TOKEN_REVOKED.remedy


def test_bare_401s_being_counted_are_a_warning_for_an_hour():
    counting = connection_facts(
        unconfirmed_401s=2, unconfirmed_401s_since=NOW - timedelta(minutes=10), **LONG_LIVED
    )
    checks = diagnose(counting, app=app_facts(reports_to_invalidate=5))
    assert_only_failing(checks, "authentication")
    found = checks["authentication"]
    assert found.status == "warning" and "2 bare 401s" in found.summary
    assert (found.evidence["unconfirmed_401s"], found.evidence["reports_to_invalidate"]) == (2, 5)
    stale = dataclasses.replace(counting, unconfirmed_401s_since=NOW - timedelta(hours=2))
    assert diagnose(stale)["authentication"].status == "ok"


@pytest.mark.parametrize(
    ("app_changes", "scopes", "cause", "advice"),
    [
        (
            {"authorization_url": "https://accounts.google.com/o/oauth2/v2/auth"},
            ["email"],
            "refresh_not_enabled",
            "access_type=offline",
        ),
        (
            {
                "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
                "authorize_params": {"access_type": "offline"},
            },
            ["email"],
            "issued_once_per_user",
            "prompt=consent",
        ),
        (
            {"authorization_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"},
            ["User.Read"],
            "refresh_not_enabled",
            "offline_access",
        ),
        (
            {"authorization_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"},
            ["User.Read", "offline_access"],
            "unknown",
            "revoke the previous grant",
        ),
        (
            {"authorization_url": "https://www.dropbox.com/oauth2/authorize"},
            [],
            "refresh_not_enabled",
            "token_access_type=offline",
        ),
        ({}, ["read"], "unknown", "once per user"),
    ],
)
def test_refresh_token_missing_names_the_likely_case(app_changes, scopes, cause, advice):
    connection = connection_facts(
        has_refresh_token=False,
        problem="refresh_token_missing",
        requested_scopes=scopes,
        granted_scopes=scopes,
        refresh_at=NOW + timedelta(hours=1),
    )
    check = diagnose(connection, app_facts(**app_changes))["refresh_token"]
    assert check.status == "failing"
    assert check.evidence["likely_cause"] == cause
    assert check.evidence["has_refresh_token"] is False
    assert advice in check.remedy


def test_refresh_token_missing_for_a_non_expiring_token_is_fine():
    check = diagnose(connection_facts(has_refresh_token=False, expires_at=None, refresh_at=None))[
        "refresh_token"
    ]
    assert check.status == "ok"
    assert "nothing to refresh" in check.summary
    # Not authorized yet: nothing to say.
    pending = connection_facts(
        status="pending", has_access_token=False, has_refresh_token=False, authorized_at=None
    )
    assert diagnose(pending)["refresh_token"].status == "ok"


def test_refresh_token_invalidated_by_the_provider():
    error = {"stage": "refresh", "error": "invalid_grant", "description": "revoked", "status": 400}
    event = {
        "id": "e1",
        "type": "connection.invalidated",
        "occurred_at": "2025-03-01T11:00:00.000Z",
        "app": "crm",
        "connection_id": "crm-1",
        "status": "failed",
        "problem": "refresh_token_invalidated",
        "detail": "…",
        "data": {"provider_error": "invalid_grant"},
    }
    dead = connection_facts(
        status="failed",
        problem="refresh_token_invalidated",
        last_error=error,
        refresh_at=None,
        refresh_token_expires_at=NOW - timedelta(days=1),
    )
    checks = diagnose(dead, events=[event])
    check = checks["refresh_token_invalidated"]
    assert check.status == "failing"
    assert check.evidence["last_error"] == error
    assert check.evidence["events"][0]["data"] == {"provider_error": "invalid_grant"}
    assert "invalid_grant: revoked" in check.summary
    assert "expired at 2025-02-28T12:00:00Z" in check.summary
    assert "Delete the connection and authorize again" in check.remedy
    assert checks["connection"].status == "failing"
    # The same error seen as transient would not be this problem.
    assert diagnose()["refresh_token_invalidated"].status == "ok"


def test_transient_refresh_trouble_then_expiry():
    error = {"stage": "refresh", "error": "server_error", "description": None, "status": 503}
    retrying = connection_facts(
        failed_attempts=2,
        next_attempt_at=NOW + timedelta(minutes=1),
        last_error=error,
        refresh_at=NOW + timedelta(minutes=1),
    )
    check = diagnose(retrying)["token_expiry"]
    assert check.status == "warning"
    assert check.evidence["failed_attempts"] == 2
    assert check.evidence["next_attempt_at"] == "2025-03-01T12:01:00Z"
    assert "server_error, HTTP 503" in check.summary
    expired_meanwhile = dataclasses.replace(retrying, expires_at=NOW - timedelta(minutes=1))
    check = diagnose(expired_meanwhile)["token_expiry"]
    assert check.status == "failing"
    assert "503 token_expired" in check.summary


def test_expired_connection_and_overdue_refresh():
    expired = connection_facts(
        status="expired",
        problem="token_expired",
        has_refresh_token=False,
        expires_at=NOW - timedelta(hours=1),
        refresh_at=None,
    )
    checks = diagnose(expired)
    assert checks["token_expiry"].status == "failing"
    assert checks["token_expiry"].remedy
    overdue = connection_facts(refresh_at=NOW - timedelta(minutes=30))
    check = diagnose(overdue)["token_expiry"]
    assert check.status == "warning"
    assert "worker" in check.remedy


def test_pending_connections():
    fresh = connection_facts(
        status="pending",
        has_access_token=False,
        has_refresh_token=False,
        authorized_at=None,
        granted_scopes=None,
        expires_at=None,
        refresh_at=None,
        updated_at=NOW - timedelta(minutes=2),
    )
    checks = diagnose(fresh)
    assert_only_failing(checks)
    stale = dataclasses.replace(fresh, updated_at=NOW - timedelta(hours=1))
    assert diagnose(stale)["connection"].status == "warning"
    revoked = dataclasses.replace(fresh, status="revoked")
    assert diagnose(revoked)["connection"].status == "warning"


def test_evidence_never_carries_a_token_or_secret():
    """Facts have no field for a token or a secret, only whether one is set; what the JSON
    columns, settings and events hold besides what the checks read never reaches evidence."""
    names = {f.name for f in dataclasses.fields(ConnectionFacts)} | {
        f.name for f in dataclasses.fields(AppFacts)
    }
    assert not names & {"access_token", "refresh_token", "extra", "client_secret"}
    leaky = connection_facts(
        status="failed",
        problem="refresh_token_invalidated",
        last_error={
            "stage": "refresh",
            "error": "invalid_grant",
            "status": 400,
            "refresh_token": "SECRET-in-error",
        },
        last_report={"status": 403, "error": None, "at": NOW.isoformat(), "token": "SECRET-r"},
    )
    app = app_facts(authorize_params={"audience": "api", "client_secret_hint": "SECRET-param"})
    events = [
        {
            "type": "connection.invalidated",
            "occurred_at": NOW.isoformat(),
            "data": {"access_token": "SECRET-event", "provider_error": "invalid_grant"},
        }
    ]
    checks = diagnose(leaky, app, events)
    text = json.dumps([c.as_dict() for c in checks.values()])
    assert "SECRET" not in text
    assert checks["refresh_token"].evidence["has_refresh_token"] is True
    assert '"provider_error": "invalid_grant"' in text
    app_text = json.dumps([c.as_dict() for c in diagnose_the_app(app).values()])
    assert "SECRET" not in app_text


# ------------------------------------------------------------------------------ apps


def test_a_healthy_app_passes_every_check():
    checks = diagnose_the_app()
    assert_only_failing(checks)
    assert checks["redirect_url"].evidence["redirect_url"] == REDIRECT
    assert checks["connections"].evidence["connections_by_status"] == {"active": 3}


@pytest.mark.parametrize(
    ("problem", "check", "status"),
    [
        ("invalid_settings", "settings", "failing"),
        ("redirect_mismatch", "redirect_url", "failing"),
        ("authorization_expired", "redirect_url", "warning"),
        ("client_auth_method", "client_auth", "failing"),
        ("scope_mismatch", "scope_mismatch", "failing"),
        ("scopes_denied", "scopes_denied", "warning"),
        ("insufficient_scope", "insufficient_scope", "failing"),
        ("access_denied", "access_restrictions", "warning"),
        ("refresh_token_missing", "refresh_token", "failing"),
        ("refresh_token_invalidated", "refresh_token_invalidated", "warning"),
        ("token_expired", "token_expiry", "warning"),
    ],
)
def test_app_checks_count_the_problems_of_its_connections(problem, check, status):
    checks = diagnose_the_app(problems={problem: 2})
    assert_only_failing(checks, check)
    found = checks[check]
    assert found.status == status
    assert found.remedy
    key = "authorizations_expired" if problem == "authorization_expired" else None
    assert found.evidence[key or "connections_with_problem"] == 2
    if check == "redirect_url":
        assert REDIRECT in found.remedy


def test_app_paused_and_other_settings():
    checks = diagnose_the_app(app_facts(paused_at=NOW, paused_problem="invalid_settings"))
    assert_only_failing(checks, "settings")
    assert checks["settings"].evidence["paused_problem"] == "invalid_settings"
    checks = diagnose_the_app(app_facts(paused_at=NOW, paused_problem="client_auth_method"))
    assert_only_failing(checks, "client_auth")
    checks = diagnose_the_app(app_facts(awaiting_secret=True, client_secret_set=False))
    assert_only_failing(checks, "settings")
    assert "PATCH" in checks["settings"].remedy
    assert diagnose(app=app_facts(awaiting_secret=True))["settings"].status == "failing"
    checks = diagnose_the_app(app_facts(revoke_url=None))
    assert_only_failing(checks, "revocation")
    checks = diagnose_the_app(app_facts(client_secret_set=False, pkce=False))
    assert_only_failing(checks, "settings")
    checks = diagnose_the_app(
        app_facts(authorization_url="https://accounts.google.com/o/oauth2/v2/auth")
    )
    assert_only_failing(checks, "refresh_token")
    assert checks["refresh_token"].status == "warning"
    assert "access_type=offline" in checks["refresh_token"].remedy
    checks = diagnose_the_app(by_status={"active": 1, "failed": 2, "expired": 1})
    assert checks["connections"].status == "warning"
    assert "2 failed" in checks["connections"].summary
    assert checks["token_expiry"].status == "warning"
    checks = diagnose_the_app(app_facts(deleting=True))
    assert checks["connections"].status == "warning"


# ------------------------------------------------------------------------------ the refresh engine

DOWN = TokenEndpoint(
    url="https://auth.example.com/oauth/token",
    available=False,
    failures=10,
    failures_to_trip=10,
    last_failure_at=NOW - timedelta(minutes=1),
    last_error=RecordedError(stage="refresh", error="server_error", status=503),
    unavailable_since=NOW - timedelta(minutes=5),
    next_probe_at=NOW + timedelta(seconds=30),
)
FAILING = dataclasses.replace(DOWN, available=True, failures=3, unavailable_since=None)


def test_rotation_lost_says_the_answer_was_lost_not_that_the_grant_was_revoked():
    event = {
        "type": "connection.invalidated",
        "occurred_at": "2025-03-01T11:59:00.000Z",
        "problem": "rotation_lost",
        "data": {"provider_error": "invalid_grant", "answer_lost": True},
    }
    lost = connection_facts(
        status="failed",
        problem="rotation_lost",
        has_refresh_token=False,
        refresh_at=None,
        last_error={"stage": "refresh", "error": "invalid_grant", "status": 400},
    )
    checks = diagnose(lost, app_facts(preset="zoom"), [event], provider_timeout=15.0)
    assert_only_failing(checks, "connection", "rotation_lost")
    rotation = checks["rotation_lost"]
    assert rotation.status == "failing"
    assert "answer never reached authbroker" in rotation.summary
    assert "refused the old token on the retry (invalid_grant)" in rotation.summary
    assert rotation.evidence["events"][0]["data"]["answer_lost"] is True
    assert rotation.evidence["last_error"]["error"] == "invalid_grant"
    assert rotation.evidence["refresh_token_reuse_grace"] == 0
    assert rotation.evidence["provider_timeout"] == 15.0
    assert "authorize the connection again" in rotation.remedy
    assert "AUTHBROKER_PROVIDER_TIMEOUT" in rotation.remedy
    assert "reuse grace period" in rotation.remedy
    assert "accepts a refresh token only once" in rotation.remedy
    assert "lost in a rotation" in checks["refresh_token_invalidated"].summary
    assert "dropped" in checks["refresh_token"].summary

    # A lost answer not resolved yet: the next refresh tells.
    pending = connection_facts(
        answer_lost_at=NOW - timedelta(minutes=2),
        failed_attempts=1,
        next_attempt_at=NOW + timedelta(seconds=30),
        refresh_at=NOW + timedelta(seconds=30),
        last_error={"stage": "refresh", "error": "timeout"},
    )
    rotation = diagnose(pending)["rotation_lost"]
    assert rotation.status == "warning"
    assert rotation.evidence["answer_lost_at"] == "2025-03-01T11:58:00Z"
    assert "AUTHBROKER_PROVIDER_TIMEOUT" in rotation.remedy
    checks = diagnose_the_app(history=AppHistory(by_status={"active": 2}, answers_lost=1))
    assert_only_failing(checks, "rotation_lost")
    assert checks["rotation_lost"].evidence["answers_lost_pending"] == 1
    checks = diagnose_the_app(problems={"rotation_lost": 2})
    assert_only_failing(checks, "rotation_lost")
    assert checks["rotation_lost"].evidence["connections_with_problem"] == 2


def test_an_unavailable_token_endpoint_fails_the_app_and_each_connection():
    for checks in (diagnose(endpoint=DOWN), diagnose_the_app(endpoint=DOWN)):
        endpoint = checks["token_endpoint"]
        assert endpoint.status == "failing"
        assert endpoint.remedy == Problem.PROVIDER_UNAVAILABLE.remedy
        assert endpoint.evidence["unavailable_since"] == "2025-03-01T11:55:00Z"
        assert endpoint.evidence["next_probe_at"] == "2025-03-01T12:00:30Z"
        assert endpoint.evidence["last_error"] == {
            "stage": "refresh",
            "error": "server_error",
            "status": 503,
        }
        assert "server_error, HTTP 503" in endpoint.summary
    # Failures in a row below the threshold: a warning.
    for checks in (diagnose(endpoint=FAILING), diagnose_the_app(endpoint=FAILING)):
        assert checks["token_endpoint"].status == "warning"
        assert checks["token_endpoint"].evidence["failures"] == 3
        assert "after 10" in checks["token_endpoint"].summary


@pytest.mark.parametrize(
    ("changes", "context", "reason", "status", "words"),
    [
        (
            {"refresh_at": None},
            {"app": app_facts(paused_at=NOW, paused_problem="invalid_settings")},
            "app_paused",
            "warning",
            "fix its settings",
        ),
        ({}, {"endpoint": DOWN}, "provider_unavailable", "failing", "probes it"),
        (
            {
                "failed_attempts": 2,
                "next_attempt_at": NOW + timedelta(seconds=40),
                "last_error": {"stage": "refresh", "error": "server_error", "status": 502},
            },
            {},
            "backing_off",
            "failing",
            "retrying with backoff",
        ),
        ({"has_refresh_token": False}, {}, "no_refresh_token", "failing", "Authorize"),
        (
            {"lease_holder": "worker-1:7", "lease_until": NOW + timedelta(seconds=10)},
            {},
            "refreshing",
            "warning",
            "Look again",
        ),
        ({}, {}, "not_claimed", "failing", "worker is running"),
        ({"refresh_at": NOW - timedelta(seconds=10)}, {}, "due", "warning", "worker is running"),
        ({"refresh_at": None}, {}, "not_scheduled", "failing", "authorize the connection again"),
    ],
)
def test_an_active_connection_whose_token_expired_says_why(changes, context, reason, status, words):
    expired = connection_facts(
        **{
            "problem": "token_expired",
            "expires_at": NOW - timedelta(minutes=3),
            "refresh_at": NOW - timedelta(minutes=4),
            **changes,
        }
    )
    check = diagnose(expired, context.pop("app", None), **context)["token_expiry"]
    assert check.status == status
    assert check.evidence["reason"] == reason
    assert check.evidence["expires_at"] == "2025-03-01T11:57:00Z"
    assert words in check.remedy


def test_a_due_refresh_held_by_an_outage_or_claimed_is_no_missing_worker():
    due = connection_facts(refresh_at=NOW - timedelta(minutes=30))
    check = diagnose(due, endpoint=DOWN)["token_expiry"]
    assert check.status == "warning" and "token_endpoint" in check.summary
    leased = dataclasses.replace(
        due, lease_holder="worker-1:3", lease_until=NOW + timedelta(seconds=10)
    )
    assert diagnose(leased)["token_expiry"].status == "ok"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (EndpointAnswer("u", status=200), "ok"),
        (EndpointAnswer("u", status=302), "ok"),
        (EndpointAnswer("u", status=400), "ok"),
        (EndpointAnswer("u", status=401), "ok"),
        (EndpointAnswer("u", status=404), "failing"),
        (EndpointAnswer("u", status=410), "failing"),
        (EndpointAnswer("u", status=503), "warning"),
        (EndpointAnswer("u", error="unresolvable", detail="Name or service not known"), "failing"),
        (EndpointAnswer("u", error="refused", detail="Connect call failed"), "failing"),
        (EndpointAnswer("u", error="tls", detail="certificate verify failed"), "failing"),
        (EndpointAnswer("u", error="timeout", detail="no answer within 5 s"), "warning"),
        (EndpointAnswer("u", error="not_allowed", detail="must use https"), "failing"),
    ],
)
def test_what_the_authorization_url_answers(answer, status):
    checks = diagnose_the_app(authorization_answer=answer)
    found = checks["authorization_url"]
    assert found.status == status
    assert found.evidence["answer"]["url"] == "u"
    if status == "failing":
        assert "authorization_url" in found.remedy
        assert_only_failing(checks, "authorization_url")


def test_expired_authorizations_with_a_wrong_authorization_url_blame_it_too():
    wrong = EndpointAnswer("u", status=404)
    checks = diagnose_the_app(problems={"authorization_expired": 2}, authorization_answer=wrong)
    assert checks["authorization_url"].evidence["authorizations_expired"] == 2
    assert "authorization URL is wrong too" in checks["redirect_url"].summary
    checks = diagnose_the_app(
        problems={"authorization_expired": 2}, authorization_answer=EndpointAnswer("u", status=400)
    )
    assert "authorization URL" not in checks["redirect_url"].summary


def revoked(at: str, at_provider: bool | None, **data: Any) -> RecentEvent:
    return RecentEvent.of(
        {
            "type": "connection.revoked",
            "occurred_at": at,
            "connection_id": "crm-9",
            "data": {"revoked_at_provider": at_provider, **data},
        }
    )


def test_a_refused_revocation_fails_the_app_with_the_providers_answer():
    refused = revoked(
        "2025-03-01T11:00:00.000Z",
        False,
        provider_error="invalid_client",
        provider_status=401,
        provider_description="Client authentication failed",
    )
    history = AppHistory(by_status={"active": 1, "revoked": 2}, revocations=[refused])
    check = diagnose_the_app(history=history)["revocation"]
    assert check.status == "failing"
    assert "invalid_client, HTTP 401: Client authentication failed" in check.summary
    assert check.evidence["last_refused"] == {
        "connection_id": "crm-9",
        "occurred_at": "2025-03-01T11:00:00.000Z",
        "provider_error": "invalid_client",
        "provider_status": 401,
        "provider_description": "Client authentication failed",
    }
    assert "revoke_url (https://auth.example.com/oauth/revoke)" in check.remedy
    assert "client_auth body" in check.remedy
    assert "provider's settings" in check.remedy
    # The app was changed since: the next deletion tells.
    later = app_facts(updated_at=NOW)
    assert diagnose_the_app(later, history=history)["revocation"].status == "warning"
    # A later revocation went through: fixed.
    fixed = AppHistory(revocations=[revoked("2025-03-01T11:30:00.000Z", True), refused])
    check = diagnose_the_app(history=fixed)["revocation"]
    assert check.status == "ok" and check.evidence["recent_revocations_refused"] == 1
    # Revocations while the app had no revoke URL asked nobody.
    nobody = AppHistory(revocations=[revoked("2025-03-01T11:30:00.000Z", None), refused])
    assert diagnose_the_app(history=nobody)["revocation"].status == "failing"


def test_granted_scopes_the_provider_did_not_report_are_unknown():
    unknown = connection_facts(granted_scopes=None)
    check = diagnose(unknown)["scopes_denied"]
    assert check.status == "warning"
    assert "unknown" in check.summary
    assert check.evidence["granted_scopes"] is None
    assert "/v1/connections/crm-1/report" in check.remedy
    facebook = app_facts(
        authorization_url="https://www.facebook.com/dialog/oauth",
        token_url="https://graph.facebook.com/oauth/access_token",
    )
    assert "me/permissions" in diagnose(unknown, facebook)["scopes_denied"].remedy
    # Not authorized: nothing granted, nothing to say.
    pending = connection_facts(
        status="pending", granted_scopes=None, has_access_token=False, authorized_at=None
    )
    assert diagnose(pending)["scopes_denied"].status == "ok"


@pytest.mark.parametrize(
    ("preset", "words"),
    [
        ("facebook", "Facebook issues no refresh tokens"),
        ("linkedin", "only to approved partners"),
        ("github", "GitHub OAuth Apps get no refresh token"),
    ],
)
def test_providers_without_refresh_tokens_are_named(preset, words):
    app = app_facts(preset=preset)
    missing = connection_facts(has_refresh_token=False, problem="refresh_token_missing")
    check = diagnose(missing, app)["refresh_token"]
    assert check.status == "failing"
    assert check.evidence["likely_cause"] == "provider_without_refresh"
    assert words in check.remedy
    assert "cannot run unattended" in check.remedy
    check = diagnose_the_app(app)["refresh_token"]
    assert check.status == "warning"
    assert check.evidence["likely_cause"] == "provider_without_refresh"
    assert "issues no refresh tokens to apps like this one" in check.summary


# ------------------------------------------------------------------------------ the API


def add_missing_routes(app: web.Application, table: web.RouteTableDef) -> None:
    """Add a module's routes unless handlers/app.py already registers them."""
    present = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    missing = [
        route
        for route in table
        if isinstance(route, web.RouteDef) and (route.method, route.path) not in present
    ]
    app.add_routes(missing)


@pytest.fixture(scope="module")
async def client(resources: Resources) -> AsyncIterator[TestClient]:
    _, key = await api_keys.create(resources.pool, "diagnosis-tests")
    app = create_app(resources)
    add_missing_routes(app, diagnosis_routes.routes)
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


async def get(client: TestClient, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with client.get(path, **kwargs) as response:
        return response.status, await response.json()


def checks_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["checks"]}


async def plain_app(api: aiohttp.ClientSession, name: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "client_id": f"client-{name}",
        "client_secret": f"secret-{name}",
        "authorization_url": "http://127.0.0.1:9/authorize",
        "token_url": "http://127.0.0.1:9/token",
        "scopes": ["read", "write"],
        **overrides,
    }
    async with api.post("/v1/apps", json=body) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def test_unknown_names_and_missing_keys(client, resources):
    status, body = await get(client, "/v1/connections/nope-404/diagnosis")
    assert status == 404 and body["error"] == "connection_not_found"
    status, body = await get(client, "/v1/apps/nope-404/diagnosis")
    assert status == 404 and body["error"] == "app_not_found"
    status, body = await get(
        client, "/v1/apps/nope-404/diagnosis", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401 and body["error"] == "unauthorized"


async def test_connection_diagnosis_follows_the_recorded_state(
    client, api, resources, unique, settings
):
    name = unique("diag")
    await plain_app(api, name)
    started = await start_connection(api, name, connection_id=f"{name}-1")
    cid = started["connection_id"]

    status, body = await get(client, f"/v1/connections/{cid}/diagnosis")
    assert status == 200, body
    assert body["connection_id"] == cid and body["app"] == name
    assert body["status"] == "pending"
    assert body["summary"] == "ok"
    assert [c["name"] for c in body["checks"]] == CONNECTION_CHECKS
    assert checks_of(body)["redirect_url"]["evidence"]["redirect_url"] == settings.redirect_url

    # The provider refused the grant at a refresh; the event is in the outbox.
    error = {"stage": "refresh", "error": "invalid_grant", "description": "revoked", "status": 400}
    await resources.pool.execute(
        """UPDATE connections SET status = 'failed', problem = 'refresh_token_invalidated',
               last_error = $2, granted_scopes = ARRAY['read'], authorized_at = now(),
               last_report = $3
           WHERE id = $1""",
        cid,
        error,
        {
            "status": 403,
            "error": "insufficient_scope",
            "scope": ["admin"],
            "at": "2025-01-01T00:00:00Z",
        },
    )
    event = {
        "id": "00000000-0000-4000-8000-000000000000",
        "type": "connection.invalidated",
        "occurred_at": "2025-01-01T00:00:00.000Z",
        "app": name,
        "connection_id": cid,
        "status": "failed",
        "problem": "refresh_token_invalidated",
        "detail": "…",
        "data": {"provider_error": "invalid_grant"},
    }
    await resources.pool.execute("INSERT INTO outbox (event, relayed_at) VALUES ($1, now())", event)
    status, body = await get(client, f"/v1/connections/{cid}/diagnosis")
    assert status == 200
    assert body["status"] == "failed" and body["summary"] == "failing"
    checks = checks_of(body)
    invalidated = checks["refresh_token_invalidated"]
    assert invalidated["status"] == "failing"
    assert invalidated["evidence"]["last_error"] == error
    assert invalidated["evidence"]["events"][0]["data"] == {"provider_error": "invalid_grant"}
    assert checks["scopes_denied"]["status"] == "failing"
    assert checks["scopes_denied"]["evidence"]["missing"] == ["write"]
    assert checks["insufficient_scope"]["status"] == "failing"
    assert checks["insufficient_scope"]["evidence"]["required_scopes"] == ["admin"]
    assert checks["settings"]["status"] == "ok"


async def test_app_diagnosis_counts_connections_and_problems(
    client, api, resources, unique, settings
):
    name = unique("diagapp")
    await plain_app(api, name)
    ids = [(await start_connection(api, name))["connection_id"] for _ in range(3)]
    await resources.pool.execute(
        "UPDATE connections SET status = 'failed', problem = 'redirect_mismatch' WHERE id = $1",
        ids[0],
    )
    await resources.pool.execute(
        "UPDATE connections SET status = 'active', problem = 'scopes_denied' WHERE id = $1", ids[1]
    )
    status, body = await get(client, f"/v1/apps/{name}/diagnosis")
    assert status == 200, body
    assert body["app"] == name and body["status"] == "active"
    assert [c["name"] for c in body["checks"]] == APP_CHECKS
    checks = checks_of(body)
    assert checks["connections"]["evidence"]["connections_by_status"] == {
        "failed": 1,
        "active": 1,
        "pending": 1,
    }
    assert checks["redirect_url"]["status"] == "failing"
    assert checks["redirect_url"]["evidence"]["connections_with_problem"] == 1
    assert checks["redirect_url"]["evidence"]["redirect_url"] == settings.redirect_url
    assert settings.redirect_url in checks["redirect_url"]["remedy"]
    assert checks["scopes_denied"]["status"] == "warning"
    assert checks["revocation"]["status"] == "warning"  # no revoke URL
    assert body["summary"] == "failing"

    # Refused settings pause the app; an update resumes it.
    await resources.pool.execute(
        "UPDATE apps SET paused_at = now(), paused_problem = 'invalid_settings' WHERE name = $1",
        name,
    )
    status, body = await get(client, f"/v1/apps/{name}/diagnosis")
    assert body["status"] == "paused"
    assert checks_of(body)["settings"]["status"] == "failing"
    async with api.patch(f"/v1/apps/{name}", json={"client_secret": "new-secret"}) as response:
        assert response.status == 200
    status, body = await get(client, f"/v1/apps/{name}/diagnosis")
    assert body["status"] == "active"
    assert checks_of(body)["settings"]["status"] == "ok"
    assert checks_of(body)["settings"]["evidence"]["client_secret_set"] is True


async def test_a_real_connection_reported_and_invalidated(
    client, api, anonymous, oauth_server, worker, unique, resources
):
    name = unique("diagreal")
    await create_oauth_app(api, oauth_server, name)
    started = await start_connection(api, name, connection_id=f"{name}-1")
    cid = started["connection_id"]
    location = await oauth_server.approve(started["authorize_url"])
    _, outcome = await follow_callback(anonymous, location)
    assert outcome["status"] == "succeeded", outcome

    async with client.get(f"/v1/connections/{cid}/diagnosis") as response:
        text = await response.text()
    body = json.loads(text)
    assert body["status"] == "active"
    assert body["summary"] == "ok", [c for c in body["checks"] if c["status"] != "ok"]
    found = await connections.get(resources.pool, cid)
    assert found is not None
    access, refresh = (
        found.open_access_token(resources.ring),
        found.open_refresh_token(resources.ring),
    )
    assert access and refresh
    assert access not in text and refresh not in text
    assert "SELECT" not in text

    # A runtime reports the service wants a scope the token lacks.
    async with api.post(
        f"/v1/connections/{cid}/report",
        json={
            "status": 403,
            "www_authenticate": 'Bearer error="insufficient_scope", scope="admin"',
        },
    ) as response:
        assert response.status == 200
    _, body = await get(client, f"/v1/connections/{cid}/diagnosis")
    check = checks_of(body)["insufficient_scope"]
    assert check["status"] == "failing"
    assert check["evidence"]["required_scopes"] == ["admin"]
    _, app_body = await get(client, f"/v1/apps/{name}/diagnosis")
    assert checks_of(app_body)["insufficient_scope"]["status"] == "failing"

    # Then a 403 without any challenge.
    async with api.post(f"/v1/connections/{cid}/report", json={"status": 403}) as response:
        assert response.status == 200
    _, body = await get(client, f"/v1/connections/{cid}/diagnosis")
    assert checks_of(body)["authentication"]["status"] == "failing"

    # The user revokes the grant at the provider; the next refresh finds out.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            oauth_server.revoke_url,
            data={"token": refresh, "token_type_hint": "refresh_token"},
            headers={
                "Authorization": basic_auth_header(
                    oauth_server.client_id, oauth_server.client_secret
                )
            },
        ) as response,
    ):
        assert response.status == 200
    async with api.post(f"/v1/connections/{cid}/refresh") as response:
        assert (await response.json())["outcome"] == "failed"
    _, body = await get(client, f"/v1/connections/{cid}/diagnosis")
    assert body["status"] == "failed" and body["summary"] == "failing"
    check = checks_of(body)["refresh_token_invalidated"]
    assert check["status"] == "failing"
    assert check["evidence"]["last_error"]["stage"] == "refresh"
    assert check["evidence"]["last_error"]["error"] == "invalid_grant"
    assert any(e["type"] == "connection.invalidated" for e in check["evidence"]["events"])
