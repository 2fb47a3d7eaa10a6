"""Access: requests that reach the web service without the token, and providers or users that
refuse access."""

from __future__ import annotations

from datetime import timedelta

from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase
from authbroker.problems import Problem

# A 403 reported longer ago than this may have been fixed since (nothing reports success).
REPORT_FRESH = timedelta(hours=24)


def authentication(case: ConnectionCase) -> Check:
    report = case.connection.last_report
    evidence = {"last_report": report}
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
