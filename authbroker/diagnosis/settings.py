"""The app's client credentials: refused by the provider, missing, or sent in the wrong place."""

from __future__ import annotations

from typing import Any

from authbroker.diagnosis.check import Check, check, plural
from authbroker.diagnosis.facts import AppCase, AppFacts, ConnectionCase
from authbroker.problems import Problem

AWAITING_SECRET_SUMMARY = (
    "The app was imported without its client secret: no authorization can start until it is set."
)
AWAITING_SECRET_REMEDY = "Set the client secret: PATCH /v1/apps/{app} with client_secret."


def _evidence(app: AppFacts, **extra: Any) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        **extra,
        "client_id": app.client_id,
        "token_url": app.token_url,
        "paused_at": app.paused_at,
        "paused_problem": app.paused_problem,
    }
    evidence["client_secret_set"] = app.client_secret_set
    if app.awaiting_secret:
        evidence["awaiting_secret"] = True
    return evidence


def _refused_or_missing(app: AppFacts, evidence: dict[str, Any], whose: str) -> Check | None:
    """What both diagnoses say of an app waiting for its secret or paused for refused ones."""
    if app.awaiting_secret:
        return check(
            "settings",
            "failing",
            AWAITING_SECRET_SUMMARY,
            evidence,
            AWAITING_SECRET_REMEDY.format(app=app.name),
        )
    if app.paused is not None and app.paused != Problem.CLIENT_AUTH_METHOD:
        return check(
            "settings",
            "failing",
            f"The provider refused the app's client credentials ({app.paused}): refreshes of "
            f"{whose} are paused until the app is updated.",
            evidence,
            Problem.INVALID_SETTINGS.remedy,
        )
    return None


def connection_settings(case: ConnectionCase) -> Check:
    app, c = case.app, case.connection
    evidence = _evidence(app)
    evidence["last_error"] = c.last_error
    found = _refused_or_missing(app, evidence, f"every connection of {app.name}")
    if found is not None:
        return found
    if case.has(Problem.INVALID_SETTINGS):
        error = (c.last_error.error if c.last_error else None) or "invalid_client"
        if app.updated_at and c.updated_at and app.updated_at > c.updated_at:
            return check(
                "settings",
                "warning",
                f"The provider refused the client credentials ({error}); the app has been "
                "updated since, so the new settings have not been tried yet.",
                evidence,
                "Authorize the connection again to try the updated settings.",
            )
        return check(
            "settings",
            "failing",
            f"The provider refused the client credentials ({error}): the client id, secret or "
            "URLs differ from the provider's application.",
            evidence,
            Problem.INVALID_SETTINGS.remedy,
        )
    return check(
        "settings", "ok", "The provider has not refused the app's client credentials.", evidence
    )


def app_settings(case: AppCase) -> Check:
    app = case.app
    evidence = _evidence(app, **case.with_count(Problem.INVALID_SETTINGS))
    found = _refused_or_missing(app, evidence, "every connection")
    if found is not None:
        return found
    refused = case.count(Problem.INVALID_SETTINGS)
    if refused:
        return check(
            "settings",
            "failing",
            f"{plural(refused, 'connection')} failed because the provider refused the client "
            "credentials.",
            evidence,
            Problem.INVALID_SETTINGS.remedy,
        )
    if not app.client_secret_set and not app.pkce:
        return check(
            "settings",
            "warning",
            "No client secret is set and PKCE is off: only a provider that accepts public "
            "clients without PKCE will issue tokens.",
            evidence,
            f"Set the client secret (PATCH /v1/apps/{app.name}) or turn PKCE on.",
        )
    return check(
        "settings", "ok", "The provider has not refused the app's client credentials.", evidence
    )


def connection_client_auth(case: ConnectionCase) -> Check:
    refused = case.app.paused == Problem.CLIENT_AUTH_METHOD or case.has(Problem.CLIENT_AUTH_METHOD)
    return _client_auth(case.app, refused, {"last_error": case.connection.last_error})


def app_client_auth(case: AppCase) -> Check:
    refused = (
        case.app.paused == Problem.CLIENT_AUTH_METHOD or case.count(Problem.CLIENT_AUTH_METHOD) > 0
    )
    return _client_auth(case.app, refused, case.with_count(Problem.CLIENT_AUTH_METHOD))


def _client_auth(app: AppFacts, refused: bool, extra: dict[str, Any]) -> Check:
    configured, detected = app.client_auth or "body", app.client_auth_detected
    evidence = {"client_auth": configured, "client_auth_detected": detected, **extra}
    if refused:
        if configured == "auto":
            remedy = (
                "client_auth is auto and no placement worked: the provider refuses the client "
                "credentials themselves. Check the client id and secret."
            )
        else:
            remedy = (
                "Set the app's client_auth to auto so authbroker tries the body, the Basic "
                "header and the query in turn and remembers what works, or to the placement the "
                "provider documents (client_secret_post = body, client_secret_basic = basic)."
            )
        return check(
            "client_auth",
            "failing",
            f"The provider wants the client credentials elsewhere than the {configured} placement.",
            evidence,
            remedy,
        )
    if detected and configured == "auto":
        return check(
            "client_auth",
            "ok",
            f"client_auth is auto and found that the provider accepts the credentials in the "
            f"{detected} placement.",
            evidence,
            f"Optionally set client_auth to {detected} to skip the search after a change of "
            "settings.",
        )
    if detected and detected != configured:
        return check(
            "client_auth",
            "warning",
            f"The credentials were detected to work in the {detected} placement but the app is "
            f"set to {configured}.",
            evidence,
            f"Set client_auth to {detected} or auto.",
        )
    return check(
        "client_auth",
        "ok",
        f"The provider has not refused the {configured} placement of the client credentials.",
        evidence,
    )
