"""Where a connection stands, and how an app's connections stand together."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authbroker import states
from authbroker.diagnosis.check import Check, check, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase
from authbroker.problems import Problem

# An authorization link lives ten minutes; a connection pending longer saw no callback.
AUTHORIZATION_LIFETIME = timedelta(seconds=states.AUTHORIZATION_LIFETIME)


def connection(case: ConnectionCase) -> Check:
    """Waiting for the user, working, failed, deleted."""
    c = case.connection
    evidence: dict[str, Any] = {
        "status": c.status,
        "problem": c.problem,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "authorized_at": c.authorized_at,
        "last_error": c.last_error,
    }
    if c.status in ("revoking", "revoked"):
        return check(
            "connection",
            "warning",
            "The connection was deleted"
            + (" and is being revoked at the provider." if c.status == "revoking" else "."),
            evidence,
            "Start a new authorization if the integration still needs this account.",
        )
    if c.status == "pending":
        started = c.updated_at or c.created_at
        if started is not None and case.now - started > AUTHORIZATION_LIFETIME:
            return check(
                "connection",
                "warning",
                "The authorization was started more than ten minutes ago and the browser never "
                "came back to the callback.",
                evidence,
                "Start the authorization again. If it happens again, the provider probably "
                "showed the user an error page (most often: the redirect URL is not registered, "
                "or the authorization URL is wrong).",
            )
        return check(
            "connection", "ok", "Waiting for the user to finish the authorization.", evidence
        )
    if c.status == "active":
        return check("connection", "ok", "The connection is active.", evidence)
    remedy = Problem.remedy_of(c.problem) or "Authorize the connection again."
    return check(
        "connection",
        "failing",
        f"The connection is {c.status}" + (f": {c.problem}." if c.problem else "."),
        evidence,
        remedy,
    )


def connections(case: AppCase) -> Check:
    """The app's connections by status, and the problems they have."""
    by_status = {k: v for k, v in case.history.by_status.items() if v}
    problems = {k: v for k, v in case.history.problems.items() if v}
    evidence = {"connections_by_status": by_status, "problems": problems}
    troubled = {s: by_status[s] for s in ("failed", "expired") if by_status.get(s)}
    if case.app.deleting:
        return check(
            "connections",
            "warning",
            "The app is being deleted: its connections are being revoked.",
            evidence,
        )
    if troubled:
        return check(
            "connections",
            "warning",
            "Some connections no longer work: "
            + ", ".join(f"{v} {k}" for k, v in troubled.items())
            + ".",
            evidence,
            "See each connection's diagnosis; most need to be authorized again.",
        )
    total = sum(by_status.values())
    return check(
        "connections", "ok", f"{plural(total, 'connection')}, none failed or expired.", evidence
    )
