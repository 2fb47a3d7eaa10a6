"""Expiry: whether access tokens are refreshed in time, and why not when they are not."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase, ConnectionFacts
from authbroker.problems import Problem

# A due refresh that no worker has claimed after this long: workers claim due connections
# every second, so none is running (or none reaches the database).
REFRESH_OVERDUE = timedelta(minutes=1)

WORKER_RUNNING = "a worker is running (`authbroker worker` or `authbroker run`)"
RETRYING_REMEDY = (
    "authbroker keeps retrying with backoff. Check the provider's status page and the app's "
    "token URL."
)


def refreshing_now(case: ConnectionCase) -> bool:
    """Whether a worker holds the connection's refresh lease."""
    c = case.connection
    return c.lease_holder is not None and c.lease_until is not None and c.lease_until > case.now


def unclaimed(case: ConnectionCase) -> bool:
    """Whether the refresh has been due for longer than REFRESH_OVERDUE with no worker on it."""
    refresh_at = case.connection.refresh_at
    return (
        refresh_at is not None
        and case.now - refresh_at > REFRESH_OVERDUE
        and not refreshing_now(case)
    )


def connection_token_expiry(case: ConnectionCase) -> Check:
    c = case.connection
    evidence: dict[str, Any] = {
        "expires_at": c.expires_at,
        "refresh_at": c.refresh_at,
        "last_refresh_at": c.last_refresh_at,
        "failed_attempts": c.failed_attempts,
        "next_attempt_at": c.next_attempt_at,
    }
    history = case.events_of(
        "connection.refreshed", "connection.refresh_failed", "connection.expired"
    )
    if history:
        evidence["recent_refresh_events"] = [
            {"type": e.type, "occurred_at": e.occurred_at} for e in history[:10]
        ]
    if c.status == "expired" or (c.status != "active" and c.problem == Problem.TOKEN_EXPIRED):
        return check(
            "token_expiry",
            "failing",
            "The access token expired and cannot be refreshed.",
            evidence,
            Problem.TOKEN_EXPIRED.remedy,
        )
    if c.status != "active":
        return check(
            "token_expiry", "ok", f"Not refreshing: the connection is {c.status}.", evidence
        )
    if (
        c.expires_at is not None and c.expires_at <= case.now
    ) or c.problem == Problem.TOKEN_EXPIRED:
        return _expired_while_active(case, evidence)
    if c.failed_attempts > 0:
        evidence["last_error"] = c.last_error
        return check(
            "token_expiry",
            "warning",
            _retrying(c),
            evidence,
            "Nothing to do while it retries (timeouts, 5xx and 429 never mark a connection "
            "dead). If it goes on, check the provider's status and the app's token URL.",
        )
    held = case.endpoint is not None and not case.endpoint.available
    due = c.refresh_at is not None and c.refresh_at <= case.now
    if held and due:
        return check(
            "token_expiry",
            "warning",
            f"The refresh due at {iso(c.refresh_at)} waits for the token endpoint, which is "
            "unavailable (see token_endpoint).",
            evidence,
            Problem.PROVIDER_UNAVAILABLE.remedy,
        )
    if case.app.paused is None and c.has_refresh_token and unclaimed(case):
        return check(
            "token_expiry",
            "warning",
            f"The refresh due at {iso(c.refresh_at)} has not happened yet.",
            evidence,
            f"Check that {WORKER_RUNNING} and that it reaches the database and Redis.",
        )
    if c.expires_at is None:
        summary = "The access token does not expire."
    else:
        summary = f"The access token is valid until {iso(c.expires_at)}" + (
            f"; next refresh at {iso(c.refresh_at)}." if c.refresh_at else "."
        )
    return check("token_expiry", "ok", summary, evidence)


def _retrying(c: ConnectionFacts) -> str:
    what = c.last_error.brief if c.last_error else "error"
    return (
        f"{plural(c.failed_attempts, 'refresh attempt')} failed with transient errors ({what}); "
        f"next attempt at {iso(c.next_attempt_at) or 'soon'}."
    )


def _expired_while_active(case: ConnectionCase, evidence: dict[str, Any]) -> Check:
    """An active connection whose access token has expired: runtimes get 503 token_expired.
    Say why no refresh has replaced it, and what would."""
    c, app, endpoint = case.connection, case.app, case.endpoint
    expired = f"The access token expired at {iso(c.expires_at)} and has not been refreshed"
    evidence.update(
        problem=c.problem,
        lease_until=c.lease_until if refreshing_now(case) else None,
        app_paused=app.paused,
    )

    def verdict(reason: str, status: Any, summary: str, remedy: str) -> Check:
        evidence["reason"] = reason
        return check("token_expiry", status, summary, evidence, remedy)

    if app.paused is not None:
        return verdict(
            "app_paused",
            "warning",
            f"{expired}: refreshes are paused with the app ({app.paused}).",
            "Refreshes are paused with the app: fix its settings (see the settings check).",
        )
    if endpoint is not None and not endpoint.available:
        evidence["token_endpoint_unavailable_since"] = endpoint.unavailable_since
        return verdict(
            "provider_unavailable",
            "failing",
            f"{expired}: the token endpoint has been unavailable since "
            f"{iso(endpoint.unavailable_since)}, and refreshes wait for it"
            + (
                f" (next probe at {iso(endpoint.next_probe_at)})."
                if endpoint.next_probe_at
                else "."
            ),
            Problem.PROVIDER_UNAVAILABLE.remedy,
        )
    if c.failed_attempts > 0:
        evidence["last_error"] = c.last_error
        return verdict(
            "backing_off",
            "failing",
            _retrying(c) + " The access token has expired meanwhile: runtimes get 503 "
            "token_expired until a refresh succeeds.",
            RETRYING_REMEDY,
        )
    if not c.has_refresh_token:
        return verdict(
            "no_refresh_token",
            "failing",
            f"{expired}: there is no refresh token.",
            "Authorize the connection again (see the refresh_token check).",
        )
    if refreshing_now(case):
        return verdict(
            "refreshing",
            "warning",
            f"{expired}; a worker is refreshing it now.",
            "Look again in a few seconds.",
        )
    if unclaimed(case):
        return verdict(
            "not_claimed",
            "failing",
            f"{expired}: the refresh has been due since {iso(c.refresh_at)} and no worker has "
            "claimed it.",
            f"Check that {WORKER_RUNNING}.",
        )
    if c.refresh_at is None:
        return verdict(
            "not_scheduled",
            "failing",
            f"{expired}: no refresh is scheduled.",
            Problem.TOKEN_EXPIRED.remedy,
        )
    return verdict(
        "due",
        "warning",
        f"{expired}; the refresh is due since {iso(c.refresh_at)} and a worker should claim it "
        "within seconds.",
        f"Look again in a minute; if it has not happened, check that {WORKER_RUNNING}.",
    )


def app_token_expiry(case: AppCase) -> Check:
    expired = case.history.by_status.get("expired", 0)
    evidence = case.with_count(Problem.TOKEN_EXPIRED, expired_connections=expired)
    if case.count(Problem.TOKEN_EXPIRED) or expired:
        return check(
            "token_expiry",
            "warning",
            "Some access tokens expired and could not be refreshed.",
            evidence,
            Problem.TOKEN_EXPIRED.remedy,
        )
    return check("token_expiry", "ok", "No connection has expired.", evidence)
