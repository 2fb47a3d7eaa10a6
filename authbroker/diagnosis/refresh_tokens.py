"""Refresh tokens: never issued, refused by the provider, or lost in a rotation whose answer
never arrived."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authbroker import presets
from authbroker.diagnosis.check import Check, check, iso, plural
from authbroker.diagnosis.facts import AppCase, AppFacts, ConnectionCase
from authbroker.problems import Problem

GRANT_REFUSED = (Problem.REFRESH_TOKEN_INVALIDATED, Problem.ROTATION_LOST)


def _cause(app: AppFacts, scopes: list[str]) -> tuple[presets.RefreshTokenCause, dict[str, Any]]:
    """What the provider needs before it issues refresh tokens, and the settings judged."""
    found = presets.refresh_token_cause(
        preset=app.preset,
        authorization_url=app.authorization_url,
        token_url=app.token_url,
        authorize_params=app.authorize_params,
        scopes=scopes,
    )
    evidence = {
        "authorization_host": (urlsplit(app.authorization_url).hostname or "").lower(),
        "authorize_params": presets.authorize_params_of(
            app.authorization_url, app.authorize_params
        ),
    }
    return found, evidence


def connection_refresh_token(case: ConnectionCase) -> Check:
    c = case.connection
    evidence: dict[str, Any] = {
        "has_refresh_token": c.has_refresh_token,
        "expires_at": c.expires_at,
        "refresh_token_expires_at": c.refresh_token_expires_at,
    }
    if c.status in ("revoking", "revoked") or not c.authorized:
        return check(
            "refresh_token",
            "ok",
            "Not authorized (or deleted): no refresh token expected.",
            evidence,
        )
    if c.has_refresh_token:
        evidence["last_refresh_at"] = c.last_refresh_at
        return check("refresh_token", "ok", "A refresh token is stored.", evidence)
    if c.service:
        evidence["last_refresh_at"] = c.last_refresh_at
        return check(
            "refresh_token",
            "ok",
            "A service connection (client credentials) needs no refresh token: each next token "
            "is requested the same way before the current one expires.",
            evidence,
        )
    if c.status == "failed" and c.problem in GRANT_REFUSED:
        return check(
            "refresh_token",
            "ok",
            f"The provider refused the refresh token, which was dropped ({c.problem}).",
            evidence,
        )
    if c.expires_at is None:
        return check(
            "refresh_token",
            "ok",
            "No refresh token, and the access token does not expire: nothing to refresh. (If the "
            "provider does expire its tokens without saying so, set the app's "
            "default_token_lifetime.)",
            evidence,
        )
    requested = list(c.requested_scopes)
    found, settings = _cause(case.app, requested)
    evidence.update(likely_cause=found.cause, **settings, requested_scopes=requested)
    return check(
        "refresh_token",
        "failing",
        f"The provider issued no refresh token and the access token expires at "
        f"{iso(c.expires_at)}: the connection will stop working then.",
        evidence,
        found.advice,
    )


def app_refresh_token(case: AppCase) -> Check:
    scopes = list(case.app.scopes)
    found, settings = _cause(case.app, scopes)
    missing = case.count(Problem.REFRESH_TOKEN_MISSING)
    evidence = case.with_count(Problem.REFRESH_TOKEN_MISSING, **settings, scopes=scopes)
    if missing:
        evidence["likely_cause"] = found.cause
        return check(
            "refresh_token",
            "failing",
            f"The provider issued no refresh token to {plural(missing, 'connection')} whose "
            "access tokens expire.",
            evidence,
            found.advice,
        )
    if found.cause != "unknown":
        evidence["likely_cause"] = found.cause
        summary = (
            "The provider issues no refresh tokens to apps like this one."
            if found.cause == "provider_without_refresh"
            else "With these settings the provider will probably issue no refresh token."
        )
        return check("refresh_token", "warning", summary, evidence, found.advice)
    return check("refresh_token", "ok", "No connection is missing a refresh token.", evidence)


def connection_invalidated(case: ConnectionCase) -> Check:
    c, error = case.connection, case.connection.last_error
    evidence: dict[str, Any] = {
        "status": c.status,
        "problem": c.problem,
        "last_error": error,
        "last_refresh_at": c.last_refresh_at,
        "refresh_token_expires_at": c.refresh_token_expires_at,
    }
    if c.problem == Problem.ROTATION_LOST:
        return check(
            "refresh_token_invalidated",
            "ok",
            "The refresh token was not revoked: it was lost in a rotation (see rotation_lost).",
            evidence,
        )
    invalidated = c.problem == Problem.REFRESH_TOKEN_INVALIDATED or (
        c.status == "failed"
        and error is not None
        and error.stage == "refresh"
        and error.problem == Problem.REFRESH_TOKEN_INVALIDATED
    )
    if not invalidated:
        return check(
            "refresh_token_invalidated",
            "ok",
            "The provider has not refused the stored refresh token.",
            evidence,
        )
    events = case.events_of("connection.invalidated")
    if events:
        evidence["events"] = events[:3]
    reasons = []
    if c.refresh_token_expires_at is not None and c.refresh_token_expires_at <= case.now:
        reasons.append(f"the refresh token expired at {iso(c.refresh_token_expires_at)}")
    if error is not None and error.problem == Problem.SCOPE_MISMATCH:
        reasons.append("the provider's application no longer allows the granted scopes")
    reasons.append(
        "it was revoked by the user or an administrator, or used by another system (rotating "
        "refresh tokens are single use)"
    )
    return check(
        "refresh_token_invalidated",
        "failing",
        f"The provider no longer accepts the stored refresh token ({_said(case)}). Likely: "
        + "; or ".join(reasons)
        + ".",
        evidence,
        Problem.REFRESH_TOKEN_INVALIDATED.remedy,
    )


def _said(case: ConnectionCase) -> str:
    """What the provider said when it refused the refresh token."""
    error = case.connection.last_error
    said = (error.error if error else None) or "invalid_grant"
    if error is not None and error.description:
        said += f": {error.description}"
    return said


def app_invalidated(case: AppCase) -> Check:
    refused = case.count(Problem.REFRESH_TOKEN_INVALIDATED)
    evidence = case.with_count(
        Problem.REFRESH_TOKEN_INVALIDATED, refresh_token_lifetime=case.app.refresh_token_lifetime
    )
    if refused:
        return check(
            "refresh_token_invalidated",
            "warning",
            f"The provider no longer accepts the refresh token of {plural(refused, 'connection')}.",
            evidence,
            Problem.REFRESH_TOKEN_INVALIDATED.remedy
            + " Many at once suggests rotating refresh tokens used by another system too, or "
            "refresh tokens that expire unused (set refresh_token_lifetime).",
        )
    return check(
        "refresh_token_invalidated",
        "ok",
        "The provider has not refused any stored refresh token.",
        evidence,
    )


def _rotation(app: AppFacts, provider_timeout: float | None) -> tuple[dict[str, Any], str]:
    """What is known of the provider's rotation, as evidence, and the remedy it makes."""
    rotation = presets.rotation(app.preset)
    evidence = {
        "preset": app.preset,
        "refresh_token_rotates": rotation.rotates,
        "refresh_token_reuse_grace": rotation.reuse_grace,
        "provider_timeout": provider_timeout,
    }
    remedy = Problem.ROTATION_LOST.remedy
    if rotation.reuse_grace is not None:
        remedy += (
            f" (This provider accepts a replaced refresh token for {rotation.reuse_grace} s.)"
            if rotation.reuse_grace
            else " (This provider accepts a refresh token only once.)"
        )
    return evidence, remedy


def connection_rotation_lost(case: ConnectionCase) -> Check:
    c = case.connection
    known, remedy = _rotation(case.app, case.provider_timeout)
    evidence: dict[str, Any] = {
        "answer_lost_at": c.answer_lost_at,
        "last_error": c.last_error,
        **known,
    }
    lost = [e for e in case.events_of("connection.invalidated") if e.data.get("answer_lost")]
    if lost:
        evidence["events"] = lost[:3]
    if c.problem == Problem.ROTATION_LOST:
        return check(
            "rotation_lost",
            "failing",
            "The provider rotated the refresh token, but its answer never reached authbroker (a "
            "timeout, a dropped connection or a worker that stopped mid-refresh), and it "
            f"refused the old token on the retry ({_said(case)}).",
            evidence,
            remedy,
        )
    if c.answer_lost_at is not None and c.status == "active":
        return check(
            "rotation_lost",
            "warning",
            f"A refresh reached the provider at {iso(c.answer_lost_at)} but its answer was lost: "
            "if the provider rotated the refresh token then, the stored one no longer works. "
            "The next refresh tells; a refusal fails the connection with rotation_lost.",
            evidence,
            "Nothing to do until the next refresh. If it is refused, authorize the connection "
            "again; if answers are lost often, raise AUTHBROKER_PROVIDER_TIMEOUT.",
        )
    return check("rotation_lost", "ok", "No refresh answer was lost.", evidence)


def app_rotation_lost(case: AppCase) -> Check:
    known, remedy = _rotation(case.app, case.provider_timeout)
    lost, pending = case.count(Problem.ROTATION_LOST), case.history.answers_lost
    evidence = case.with_count(Problem.ROTATION_LOST, answers_lost_pending=pending, **known)
    if lost:
        return check(
            "rotation_lost",
            "warning",
            f"{plural(lost, 'connection')} lost the grant in a rotation: the provider rotated "
            "the refresh token but its answer never arrived, then refused the old one.",
            evidence,
            remedy,
        )
    if pending:
        return check(
            "rotation_lost",
            "warning",
            f"{plural(pending, 'connection')} lost a refresh answer not yet resolved: the next "
            "refresh tells whether the provider rotated the refresh token meanwhile.",
            evidence,
            "If answers are lost often, raise AUTHBROKER_PROVIDER_TIMEOUT.",
        )
    return check("rotation_lost", "ok", "No refresh answer was lost.", evidence)
