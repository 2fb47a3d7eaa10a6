"""Scopes: refused by the provider's application, denied by the user, not said at all, or
missing for what the web service wants."""

from __future__ import annotations

from typing import Any

from authbroker import presets
from authbroker.diagnosis.check import Check, check, join, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase
from authbroker.problems import Problem

UNKNOWN_SCOPES_REMEDY = (
    "Check at the provider which scopes the token carries: its token introspection or "
    "token-info endpoint, or the user's list of connected apps. A web service refusing a "
    "request for a missing scope shows up here when the runtime reports it "
    "(POST /v1/connections/{id}/report)."
)


def connection_scope_mismatch(case: ConnectionCase) -> Check:
    app_scopes, requested = list(case.app.scopes), list(case.connection.requested_scopes)
    evidence: dict[str, Any] = {
        "app_scopes": app_scopes,
        "requested_scopes": requested,
        "last_error": case.connection.last_error,
    }
    if case.has(Problem.SCOPE_MISMATCH):
        return check(
            "scope_mismatch",
            "failing",
            "The provider refused the requested scopes (invalid_scope): the app asks for "
            f"{join(requested or app_scopes)}, which its application at the provider does "
            "not allow.",
            evidence,
            Problem.SCOPE_MISMATCH.remedy,
        )
    not_requested = [s for s in app_scopes if s not in requested]
    if not_requested and case.connection.authorized:
        evidence["app_scopes_not_requested"] = not_requested
        return check(
            "scope_mismatch",
            "ok",
            "The provider accepted the requested scopes; the app now also lists "
            f"{join(not_requested)}, which this connection never requested (authorize again "
            "to get them).",
            evidence,
        )
    return check("scope_mismatch", "ok", "The provider accepted the requested scopes.", evidence)


def connection_scopes_denied(case: ConnectionCase) -> Check:
    c = case.connection
    requested, granted = list(c.requested_scopes), c.granted_scopes
    evidence: dict[str, Any] = {"requested_scopes": requested, "granted_scopes": granted}
    if granted is None:
        if c.authorized and c.status not in ("revoking", "revoked"):
            app = case.app
            where = presets.granted_scopes_at(
                presets.matching(app.preset, app.token_url, app.authorization_url)
            )
            return check(
                "scopes_denied",
                "warning",
                "The provider did not say which scopes it granted (its token response had no "
                "scope): the granted scopes are unknown, not necessarily those requested.",
                evidence,
                (where + " " if where else "") + UNKNOWN_SCOPES_REMEDY.replace("{id}", c.id),
            )
        return check("scopes_denied", "ok", "No scopes granted yet: not authorized.", evidence)
    missing = [s for s in requested if s not in granted]
    evidence["missing"] = missing
    denied_events = case.events_of("connection.scopes_denied")
    if denied_events:
        evidence["events"] = denied_events[:3]
    if missing or c.problem == Problem.SCOPES_DENIED:
        return check(
            "scopes_denied",
            "failing",
            f"The user granted fewer scopes than requested: missing {join(missing)}.",
            evidence,
            Problem.SCOPES_DENIED.remedy,
        )
    return check("scopes_denied", "ok", "Every requested scope was granted.", evidence)


def connection_insufficient_scope(case: ConnectionCase) -> Check:
    c, report = case.connection, case.connection.last_report
    reported = report is not None and report.error == "insufficient_scope"
    required = list(report.scope or []) if report is not None and reported else []
    granted = list(c.granted_scopes or [])
    lacking = [s for s in required if s not in granted]
    app_scopes = list(case.app.scopes)
    evidence = {
        "last_report": report,
        "required_scopes": required,
        "granted_scopes": c.granted_scopes,
        "app_scopes": app_scopes,
        "missing": lacking,
    }
    resolved = False
    if report is not None and reported and c.problem != Problem.INSUFFICIENT_SCOPE:
        if required:
            resolved = not lacking
        else:
            resolved = bool(c.authorized_at and report.at and c.authorized_at > report.at)
    if c.problem == Problem.INSUFFICIENT_SCOPE or (reported and not resolved):
        if lacking and all(s in app_scopes for s in lacking):
            remedy = (
                f"The app already requests {join(lacking)}: authorize the connection again so "
                "the token carries them."
            )
        elif lacking:
            remedy = (
                f"Add {join([s for s in lacking if s not in app_scopes])} to the app's scopes "
                "(and allow them in the provider's application), then authorize the connection "
                "again."
            )
        else:
            remedy = Problem.INSUFFICIENT_SCOPE.remedy
        needed = f" {join(required)}" if required else " a scope"
        return check(
            "insufficient_scope",
            "failing",
            f"A runtime reported that the web service needs{needed} the token does not have.",
            evidence,
            remedy,
        )
    if reported:
        return check(
            "insufficient_scope",
            "ok",
            "An earlier report of a missing scope is resolved: the connection was authorized "
            "again since.",
            evidence,
        )
    return check("insufficient_scope", "ok", "No runtime reported a missing scope.", evidence)


def app_scope_mismatch(case: AppCase) -> Check:
    scopes = list(case.app.scopes)
    refused = case.count(Problem.SCOPE_MISMATCH)
    evidence = case.with_count(Problem.SCOPE_MISMATCH, scopes=scopes)
    if refused:
        return check(
            "scope_mismatch",
            "failing",
            f"The provider refused the scopes of {plural(refused, 'connection')} "
            f"(invalid_scope): the app asks for {join(scopes)}, not all allowed by its "
            "application at the provider.",
            evidence,
            Problem.SCOPE_MISMATCH.remedy,
        )
    return check("scope_mismatch", "ok", "The provider accepted the app's scopes.", evidence)


def app_scopes_denied(case: AppCase) -> Check:
    denied = case.count(Problem.SCOPES_DENIED)
    evidence = case.with_count(Problem.SCOPES_DENIED, scopes=list(case.app.scopes))
    if denied:
        return check(
            "scopes_denied",
            "warning",
            f"Users granted fewer scopes than requested on {plural(denied, 'connection')}.",
            evidence,
            Problem.SCOPES_DENIED.remedy,
        )
    return check("scopes_denied", "ok", "No user denied a requested scope.", evidence)


def app_insufficient_scope(case: AppCase) -> Check:
    reported = case.count(Problem.INSUFFICIENT_SCOPE)
    evidence = case.with_count(Problem.INSUFFICIENT_SCOPE, scopes=list(case.app.scopes))
    if reported:
        return check(
            "insufficient_scope",
            "failing",
            f"Runtimes reported missing scopes on {plural(reported, 'connection')}: the web "
            "service needs a scope the app does not request.",
            evidence,
            Problem.INSUFFICIENT_SCOPE.remedy
            + " Each connection's diagnosis names the required scopes.",
        )
    return check("insufficient_scope", "ok", "No runtime reported a missing scope.", evidence)
