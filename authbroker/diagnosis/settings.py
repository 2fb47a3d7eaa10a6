"""The app's client credentials: refused by the provider, missing, or sent in the wrong place."""

from __future__ import annotations

from typing import Any

from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, AppFacts, ConnectionCase
from authbroker.problems import PLACEMENT_NAMES, Problem, mismatch_summary, placement_remedy

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
    if app.paused_error is not None:
        evidence["paused_error"] = app.paused_error
    return evidence


def _where_refused(app: AppFacts) -> str:
    """Where the provider refused the credentials when it paused the app, for summaries."""
    placements = app.paused_error.placements if app.paused_error else ()
    if len(placements) > 1:
        return f" in every placement tried ({', '.join(placements)})"
    return ""


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
            f"The provider refused the app's client credentials{_where_refused(app)} "
            f"({app.paused}): refreshes of {whose} are paused until the app is updated.",
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
    """Where the client credentials go against where the provider takes them. After a
    client-authentication refusal authbroker tries the body and a Basic header (a query setting
    the query first; `auto` Basic first): a placement that worked where a fixed one was refused
    is recorded on the app (`client_auth_works`), and a refusal everywhere on the method pauses
    the app with client_auth_method."""
    configured, detected = app.client_auth or "body", app.client_auth_detected
    evidence: dict[str, Any] = {
        "client_auth": configured,
        "client_auth_detected": detected,
        "client_auth_works": app.client_auth_works,
        "client_auth_works_seen_at": app.client_auth_works_at,
        **extra,
    }
    if refused:
        if configured == "auto":
            remedy = (
                "client_auth is auto and the provider refused the credentials in a Basic header "
                "and in the body: check the client id and secret, or, if the provider wants a "
                "signed JWT, set client_auth to private_key_jwt or client_secret_jwt."
            )
        elif not app.client_secret_set and configured != "private_key_jwt":
            remedy = (
                "The app has no client secret, so it sent its client id alone in the body and "
                "the provider wants the client authenticated: set the client secret, or set "
                "client_auth to private_key_jwt (register the app's public key, GET "
                f"/v1/apps/{app.name}/jwks)."
            )
        elif configured in PLACEMENT_NAMES:
            remedy = (
                "authbroker sent the credentials in the body and in a Basic header"
                + (" after the query" if configured == "query" else "")
                + " and the provider refused the method each time: it wants a signed JWT. Set "
                "client_auth to private_key_jwt (register the app's public key, GET "
                f"/v1/apps/{app.name}/jwks) or client_secret_jwt, as the provider's application "
                "is registered (token_endpoint_auth_method)."
            )
        else:
            remedy = (
                f"The provider refused the {configured} assertion's method: set client_auth to "
                "the method the provider's application is registered with "
                "(token_endpoint_auth_method: client_secret_post = body, client_secret_basic = "
                "basic, private_key_jwt, client_secret_jwt)."
            )
        return check(
            "client_auth",
            "failing",
            f"The provider wants the client credentials elsewhere than the {configured} placement.",
            evidence,
            remedy,
        )
    if app.client_auth_works and configured in PLACEMENT_NAMES:
        seen = f" (first seen {iso(app.client_auth_works_at)})" if app.client_auth_works_at else ""
        return check(
            "client_auth",
            "failing",
            mismatch_summary(configured, app.client_auth_works) + seen,
            evidence,
            placement_remedy(app.name, app.client_auth_works),
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
