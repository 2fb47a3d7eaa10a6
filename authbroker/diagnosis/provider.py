"""The provider's health: whether the app's token endpoint answers. An outage is one fact about
one URL, shared by every app and connection that uses it (`storage.endpoints`)."""

from __future__ import annotations

from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase, TokenEndpoint
from authbroker.problems import Problem


def connection_token_endpoint(case: ConnectionCase) -> Check:
    return token_endpoint(case.app.token_url, case.endpoint)


def app_token_endpoint(case: AppCase) -> Check:
    return token_endpoint(case.app.token_url, case.endpoint)


def token_endpoint(url: str, endpoint: TokenEndpoint | None) -> Check:
    """Failing while the endpoint is unavailable, a warning while failures add up to that."""
    if endpoint is None or (endpoint.available and endpoint.failures == 0):
        return check(
            "token_endpoint",
            "ok",
            "The token endpoint has not failed lately.",
            {"token_url": url, "available": True, "failures": 0},
        )
    evidence = {
        "token_url": url,
        "available": endpoint.available,
        "failures": endpoint.failures,
        "failures_to_trip": endpoint.failures_to_trip,
        "last_failure_at": endpoint.last_failure_at,
        "last_error": endpoint.last_error,
        "unavailable_since": endpoint.unavailable_since,
        "next_probe_at": endpoint.next_probe_at,
    }
    what = endpoint.last_error.brief if endpoint.last_error else "an error"
    if not endpoint.available:
        return check(
            "token_endpoint",
            "failing",
            f"The token endpoint has been unavailable since {iso(endpoint.unavailable_since)} "
            f"after {plural(endpoint.failures, 'failure')} in a row (last: {what}): every "
            "refresh waits, and one connection at a time probes it"
            + (f", next at {iso(endpoint.next_probe_at)}." if endpoint.next_probe_at else "."),
            evidence,
            Problem.PROVIDER_UNAVAILABLE.remedy,
        )
    return check(
        "token_endpoint",
        "warning",
        f"The token endpoint failed {plural(endpoint.failures, 'time')} in a row (last: {what} "
        f"at {iso(endpoint.last_failure_at)}); after {endpoint.failures_to_trip} it is held "
        "as unavailable.",
        evidence,
        "Nothing to do while it retries (timeouts, 5xx and 429 never mark a connection dead). "
        "If it goes on, check the provider's status and the app's token URL.",
    )
