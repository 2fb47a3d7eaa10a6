"""Access: requests that reach the web service without the token, and providers or users that
refuse access."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authbroker import states
from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase
from authbroker.problems import Problem

# A 403 reported longer ago than this may have been fixed since (nothing reports success).
REPORT_FRESH = timedelta(hours=24)
REPORT_WINDOW = timedelta(seconds=states.UNCONFIRMED_401_WINDOW)


def authentication(case: ConnectionCase) -> Check:
    """What runtimes reported of the web service's answers: a token refused for good (no
    refresh token to replace it), 401s being counted as evidence of that, or a 403 without a
    Bearer challenge (the token may not have been sent)."""
    c, report = case.connection, case.connection.last_report
    evidence: dict[str, Any] = {"last_report": report}
    if c.problem == Problem.TOKEN_REVOKED:
        return _token_revoked(case, evidence)
    if _counting(case):
        evidence.update(
            unconfirmed_401s=c.unconfirmed_401s,
            unconfirmed_401s_since=c.unconfirmed_401s_since,
            reports_to_invalidate=case.app.reports_to_invalidate,
        )
        return check(
            "authentication",
            "warning",
            f"Runtimes reported {plural(c.unconfirmed_401s, 'bare 401')} since "
            f"{iso(c.unconfirmed_401s_since)} for a token that has no refresh token; "
            f"{case.app.reports_to_invalidate} within an hour mark it token_revoked.",
            evidence,
            "If the provider revoked the token, authorize the connection again. Give the app a "
            "probe_url (a cheap authenticated GET) so that one report is confirmed at once.",
        )
    if report is not None and report.status == 403 and not report.error:
        fresh = report.at is None or case.now - report.at <= REPORT_FRESH
        return check(
            "authentication",
            "failing" if fresh else "warning",
            "A runtime reported a 403 without a Bearer error"
            + (f" at {iso(report.at)}" if report.at else "")
            + ": the request may have been sent without the Authorization header.",
            evidence,
            "Check that the runtime sends the `authorization` value from "
            f"/v1/connections/{case.connection.id}/credentials as the Authorization header of "
            "every request (some HTTP clients drop it on redirects to another host). If it "
            "does, the provider may restrict access (IP ranges, domains, plan).",
        )
    return check(
        "authentication", "ok", "No runtime reported a 403 without a Bearer challenge.", evidence
    )


def connection_access_restrictions(case: ConnectionCase) -> Check:
    error = case.connection.last_error
    evidence = {"last_error": error, "problem": case.connection.problem}
    if not case.has(Problem.ACCESS_DENIED):
        return check("access_restrictions", "ok", "The provider has not denied access.", evidence)
    if error is not None and error.stage == "probe":
        summary = (
            "The web service refuses even a freshly refreshed token (probe answered 401): the "
            "grant was revoked or access is restricted at the provider."
        )
    else:
        summary = (
            "The provider answered access_denied: the user declined, or the provider restricts "
            "access (IP ranges, domains, admin consent)."
        )
    return check("access_restrictions", "failing", summary, evidence, Problem.ACCESS_DENIED.remedy)


def app_access_restrictions(case: AppCase) -> Check:
    denied = case.count(Problem.ACCESS_DENIED)
    evidence = case.with_count(Problem.ACCESS_DENIED)
    if denied:
        return check(
            "access_restrictions",
            "warning",
            f"The provider denied access on {plural(denied, 'connection')}: users declined, or "
            "the provider restricts access (IP ranges, domains, admin consent).",
            evidence,
            Problem.ACCESS_DENIED.remedy,
        )
    return check("access_restrictions", "ok", "The provider has not denied access.", evidence)


def _counting(case: ConnectionCase) -> bool:
    """Whether bare 401s are being counted against the token within the current hour."""
    c = case.connection
    return (
        c.status == "active"
        and not c.has_refresh_token
        and c.unconfirmed_401s > 0
        and c.unconfirmed_401s_since is not None
        and case.now - c.unconfirmed_401s_since < REPORT_WINDOW
    )


def _token_revoked(case: ConnectionCase, evidence: dict[str, Any]) -> Check:
    """The provider no longer accepts the access token and there is no refresh token: say what
    confirmed it (the `connection.invalidated` event's data)."""
    found = case.events_of("connection.invalidated")
    said = found[0].data if found else {}
    if found:
        evidence["event"] = found[0]
    if said.get("reported_error") == "invalid_token":
        why = "a runtime reported invalid_token"
    elif said.get("probe_status") == 401:
        why = "the probe URL answered 401" + (
            " to the token a runtime reported" if said.get("reported_status") else ""
        )
    elif said.get("reports"):
        why = f"runtimes reported {plural(int(said['reports']), 'bare 401')} within an hour"
    else:
        why = "the web service refused it"
    at = f" at {found[0].occurred_at}" if found and found[0].occurred_at else ""
    return check(
        "authentication",
        "failing",
        f"The provider no longer accepts the access token and there is no refresh token: {why}"
        f"{at}.",
        evidence,
        Problem.TOKEN_REVOKED.remedy,
    )
