"""Diagnosis: the common failures of OAuth integrations, checked against what authbroker recorded.

Pure functions over plain facts (mappings of a connection's and an app's recorded state, recent
events, counts), so the core stays free of storage and I/O. Each check answers ok, warning or
failing, with the evidence it used and, when something is wrong, the remedy in plain words.

Evidence is built only from what was recorded: provider error codes and descriptions (already
redacted when they were stored), scopes, times, counts. Inputs never hold a token or a secret; even
so, no field named like one is ever copied into evidence (see `_clean`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from authbroker import oauth, states
from authbroker.problems import Problem

Status = Literal["ok", "warning", "failing"]
SEVERITY: dict[str, int] = {"ok": 0, "warning": 1, "failing": 2}

# An authorization link lives ten minutes; a connection pending longer saw no callback.
AUTHORIZATION_LIFETIME = timedelta(seconds=states.AUTHORIZATION_LIFETIME)
# A due refresh not started after this long means no worker is picking it up.
REFRESH_OVERDUE = timedelta(minutes=5)
# A 403 reported longer ago than this may have been fixed since (nothing reports success).
REPORT_FRESH = timedelta(hours=24)

AWAITING_SECRET_SUMMARY = (
    "The app was imported without its client secret: no authorization can start until it is set."
)
AWAITING_SECRET_REMEDY = "Set the client secret: PATCH /v1/apps/{app} with client_secret."

_ERROR_KEYS = ("stage", "error", "description", "status")
_REPORT_KEYS = ("status", "error", "scope", "at")
_SECRET_KEY = re.compile(
    r"secret|password|verifier|assertion|^(code|token|access_token|refresh_token|id_token)$"
    r"|_(access|refresh|id)_token$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str
    evidence: dict[str, Any]
    remedy: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "evidence": self.evidence,
            "remedy": self.remedy,
        }


def worst(checks: Sequence[Check]) -> Status:
    """The most severe status among the checks ("ok" when there are none)."""
    result: Status = "ok"
    for check in checks:
        if SEVERITY[check.status] > SEVERITY[result]:
            result = check.status
    return result


# ------------------------------------------------------------------------------------ helpers


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _iso(value: Any) -> Any:
    moment = _time(value)
    if moment is None:
        return value if isinstance(value, str) else None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    """Evidence as JSON-ready values, without any field named like a token or a secret (a
    boolean such as `client_secret_set` says nothing secret and stays)."""
    if isinstance(value, Mapping):
        return {
            str(k): _clean(v)
            for k, v in value.items()
            if not (_SECRET_KEY.search(str(k)) and not isinstance(v, bool | None))
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    return value


def _check(
    name: str, status: Status, summary: str, evidence: dict[str, Any], remedy: str | None = None
) -> Check:
    return Check(name, status, summary, _clean(evidence), remedy)


def _pick(record: Any, keys: Sequence[str]) -> dict[str, Any] | None:
    if not isinstance(record, Mapping):
        return None
    return {k: record.get(k) for k in keys if record.get(k) is not None}


def _scopes(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.split()
    return [str(s) for s in value]


def _problem_of_error(error: Mapping[str, Any] | None) -> Problem | None:
    """The Problem a recorded provider error stands for, classified as when it happened."""
    if not error:
        return None
    stage = error.get("stage")
    code = error.get("error")
    status = error.get("status") if isinstance(error.get("status"), int) else None
    if not code:
        if stage == "probe" and status == 401:
            return Problem.ACCESS_DENIED
        return None
    description = error.get("description")
    if stage == "authorize":
        return oauth.callback_problem(str(code), description)
    grant: Any = {"exchange": "authorization_code", "refresh": "refresh_token"}.get(
        str(stage), "revoke"
    )
    return oauth.classify(str(code), description, grant=grant, status=status)


def _host(url: Any) -> str:
    try:
        return (urlsplit(str(url or "")).hostname or "").lower()
    except ValueError:
        return ""


def _authorize_params(app: Mapping[str, Any]) -> dict[str, str]:
    """The parameters the authorize URL carries: those fixed in its query, then the app's."""
    url = str(app.get("authorization_url") or "")
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    params.update({str(k): str(v) for k, v in (app.get("authorize_params") or {}).items()})
    return params


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _join(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "(none)"


# ------------------------------------------------------------ refresh tokens, per provider

# Where a provider wants something extra before it issues refresh tokens.
# (host suffixes, provider, kind of requirement, what is needed)
_REFRESH_REQUIREMENTS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("microsoftonline.com", "login.live.com", "login.windows.net"), "Microsoft", "scope", "offline_access"),
    (("salesforce.com", "force.com"), "Salesforce", "scope", "refresh_token"),
    (("auth.atlassian.com",), "Atlassian", "scope", "offline_access"),
    (("login.xero.com",), "Xero", "scope", "offline_access"),
    (("okta.com", "oktapreview.com"), "Okta", "scope", "offline_access"),
    (("auth0.com",), "Auth0", "scope", "offline_access"),
    (("dropbox.com",), "Dropbox", "param", "token_access_type=offline"),
)  # fmt: skip


def refresh_token_cause(
    app: Mapping[str, Any], requested_scopes: Sequence[str] | None = None
) -> tuple[str, str]:
    """The likely reason a provider issued no refresh token for an expiring access token:
    `(cause, advice)`, cause one of `refresh_not_enabled`, `issued_once_per_user`,
    `provider_without_refresh`, `unknown`."""
    host = _host(app.get("authorization_url"))
    params = _authorize_params(app)
    scopes = list(requested_scopes or []) or _scopes(app.get("scopes")) or []
    if host.endswith(("google.com", "googleapis.com")):
        if params.get("access_type") != "offline":
            return (
                "refresh_not_enabled",
                "Google issues refresh tokens only when the authorize URL carries "
                "access_type=offline: add authorize_params access_type=offline and "
                "prompt=consent to the app, then authorize the connection again.",
            )
        if "consent" not in params.get("prompt", "").split():
            return (
                "issued_once_per_user",
                "Google issues the refresh token only at a user's first consent: add "
                "authorize_params prompt=consent, or have the user remove the app's access at "
                "https://myaccount.google.com/permissions, then authorize again.",
            )
    for suffixes, provider, kind, needed in _REFRESH_REQUIREMENTS:
        if not host.endswith(suffixes):
            continue
        if kind == "scope" and needed not in scopes:
            return (
                "refresh_not_enabled",
                f"{provider} issues refresh tokens only with the {needed} scope: add it to the "
                "app's scopes (and allow it in the provider's application), then authorize the "
                "connection again.",
            )
        key, _, value = needed.partition("=")
        if kind == "param" and params.get(key) != value:
            return (
                "refresh_not_enabled",
                f"{provider} issues refresh tokens only with {needed} on the authorize URL: add "
                "it to the app's authorize_params, then authorize the connection again.",
            )
    if host == "github.com":
        return (
            "refresh_not_enabled",
            "GitHub issues expiring tokens with refresh tokens only to GitHub Apps with "
            "'user-to-server token expiration' enabled: enable it in the GitHub App's settings, "
            "then authorize again.",
        )
    return (
        "unknown",
        "The provider may not support refresh tokens, refresh may need enabling in its "
        "application settings (often an 'offline access' scope or option), or it issues a refresh "
        "token once per user: revoke the previous grant in the user's account settings at the "
        "provider, then authorize the connection again.",
    )


# --------------------------------------------------------------------------- connections


@dataclass(frozen=True)
class _Facts:
    connection: Mapping[str, Any]
    app: Mapping[str, Any]
    redirect_url: str
    events: Sequence[Mapping[str, Any]]
    now: datetime
    status: str
    problem: str | None
    error: dict[str, Any] | None
    error_problem: Problem | None
    report: dict[str, Any] | None
    requested: list[str]
    granted: list[str] | None
    has_access_token: bool
    has_refresh_token: bool
    expires_at: datetime | None
    authorized: bool

    def has(self, problem: Problem) -> bool:
        return self.problem == problem or self.error_problem == problem

    @property
    def app_paused(self) -> str | None:
        if self.app.get("paused_at") is None:
            return None
        return str(self.app.get("paused_problem") or Problem.INVALID_SETTINGS)

    def events_of(self, *types: str) -> list[dict[str, Any]]:
        found = []
        for event in self.events:
            if event.get("type") in types:
                found.append(
                    {
                        "type": event.get("type"),
                        "occurred_at": event.get("occurred_at"),
                        "problem": event.get("problem"),
                        "data": event.get("data") or {},
                    }
                )
        return found


def _facts(
    connection: Mapping[str, Any],
    app: Mapping[str, Any],
    redirect_url: str,
    events: Sequence[Mapping[str, Any]],
    now: datetime | None,
) -> _Facts:
    error = _pick(connection.get("last_error"), _ERROR_KEYS)
    report = _pick(connection.get("last_report"), _REPORT_KEYS)
    if report is not None and "scope" in report:
        report["scope"] = _scopes(report["scope"])
    if report is not None and "at" in report:
        report["at"] = _iso(report["at"])

    def present(flag: str, sealed: str) -> bool:
        # Prefer the boolean the caller computed; else only look whether the field is set.
        if flag in connection:
            return bool(connection[flag])
        return connection.get(sealed) is not None

    has_access = present("has_access_token", "access_token")
    return _Facts(
        connection=connection,
        app=app,
        redirect_url=redirect_url,
        events=list(events),
        now=now or datetime.now(UTC),
        status=str(connection.get("status") or "pending"),
        problem=connection.get("problem"),
        error=error or None,
        error_problem=_problem_of_error(error),
        report=report or None,
        requested=_scopes(connection.get("requested_scopes")) or [],
        granted=_scopes(connection.get("granted_scopes")),
        has_access_token=has_access,
        has_refresh_token=present("has_refresh_token", "refresh_token"),
        expires_at=_time(connection.get("expires_at")),
        authorized=has_access or connection.get("authorized_at") is not None,
    )


def _connection_state(f: _Facts) -> Check:
    """Where the connection stands: waiting for the user, working, failed, deleted."""
    evidence: dict[str, Any] = {
        "status": f.status,
        "problem": f.problem,
        "created_at": f.connection.get("created_at"),
        "updated_at": f.connection.get("updated_at"),
        "authorized_at": f.connection.get("authorized_at"),
        "last_error": f.error,
    }
    if f.status in ("revoking", "revoked"):
        return _check(
            "connection",
            "warning",
            "The connection was deleted"
            + (" and is being revoked at the provider." if f.status == "revoking" else "."),
            evidence,
            "Start a new authorization if the integration still needs this account.",
        )
    if f.status == "pending":
        started = _time(f.connection.get("updated_at")) or _time(f.connection.get("created_at"))
        if started is not None and f.now - started > AUTHORIZATION_LIFETIME:
            return _check(
                "connection",
                "warning",
                "The authorization was started more than ten minutes ago and the browser never "
                "came back to the callback.",
                evidence,
                "Start the authorization again. If it happens again, the provider probably "
                "showed the user an error page (most often: the redirect URL is not registered).",
            )
        return _check(
            "connection", "ok", "Waiting for the user to finish the authorization.", evidence
        )
    if f.status == "active":
        return _check("connection", "ok", "The connection is active.", evidence)
    problem = f.problem
    known = problem in Problem.__members__.values()
    remedy = Problem(problem).remedy if known else "Authorize the connection again."
    return _check(
        "connection",
        "failing",
        f"The connection is {f.status}" + (f": {problem}." if problem else "."),
        evidence,
        remedy,
    )


def _settings(f: _Facts) -> Check:
    paused = f.app_paused
    evidence: dict[str, Any] = {
        "client_id": f.app.get("client_id"),
        "token_url": f.app.get("token_url"),
        "paused_at": f.app.get("paused_at"),
        "paused_problem": f.app.get("paused_problem"),
        "last_error": f.error,
    }
    if "client_secret_set" in f.app:
        evidence["client_secret_set"] = bool(f.app["client_secret_set"])
    remedy = Problem.INVALID_SETTINGS.remedy
    if f.app.get("awaiting_secret"):
        evidence["awaiting_secret"] = True
        return _check(
            "settings",
            "failing",
            AWAITING_SECRET_SUMMARY,
            evidence,
            AWAITING_SECRET_REMEDY.format(app=f.app.get("name", "{name}")),
        )
    if paused is not None and paused != Problem.CLIENT_AUTH_METHOD:
        return _check(
            "settings",
            "failing",
            f"The provider refused the app's client credentials ({paused}): refreshes of every "
            f"connection of {f.app.get('name')} are paused until the app is updated.",
            evidence,
            remedy,
        )
    if f.has(Problem.INVALID_SETTINGS):
        app_updated = _time(f.app.get("updated_at"))
        connection_updated = _time(f.connection.get("updated_at"))
        error = (f.error or {}).get("error", "invalid_client")
        if app_updated and connection_updated and app_updated > connection_updated:
            return _check(
                "settings",
                "warning",
                f"The provider refused the client credentials ({error}); the app has been "
                "updated since, so the new settings have not been tried yet.",
                evidence,
                "Authorize the connection again to try the updated settings.",
            )
        return _check(
            "settings",
            "failing",
            f"The provider refused the client credentials ({error}): the client id, secret or "
            "URLs differ from the provider's application.",
            evidence,
            remedy,
        )
    return _check(
        "settings", "ok", "The provider has not refused the app's client credentials.", evidence
    )


def _redirect_url(f: _Facts) -> Check:
    evidence = {"redirect_url": f.redirect_url, "last_error": f.error}
    remedy = (
        f"Copy {f.redirect_url} exactly (scheme, host, port and path, no trailing slash) into the "
        "redirect/callback URLs of the provider's application, then authorize again."
    )
    if f.has(Problem.REDIRECT_MISMATCH):
        return _check(
            "redirect_url",
            "failing",
            "The provider refused the redirect URL: its application does not list "
            f"{f.redirect_url}.",
            evidence,
            remedy,
        )
    if f.problem == Problem.AUTHORIZATION_EXPIRED:
        return _check(
            "redirect_url",
            "warning",
            "The authorization expired without the browser coming back: providers usually show "
            "their own error page, not a redirect, when the redirect URL is not registered.",
            evidence,
            remedy,
        )
    return _check(
        "redirect_url",
        "ok",
        f"No redirect error recorded; the provider must list {f.redirect_url}.",
        evidence,
    )


def _insufficient_scope(f: _Facts) -> Check:
    report = f.report or {}
    reported = report.get("error") == "insufficient_scope"
    required = list(report.get("scope") or []) if reported else []
    granted = f.granted if f.granted is not None else []
    lacking = [s for s in required if s not in granted]
    app_scopes = _scopes(f.app.get("scopes")) or []
    evidence = {
        "last_report": f.report,
        "required_scopes": required,
        "granted_scopes": f.granted,
        "app_scopes": app_scopes,
        "missing": lacking,
    }
    resolved = False
    if reported and f.problem != Problem.INSUFFICIENT_SCOPE:
        if required:
            resolved = not lacking
        else:
            authorized_at = _time(f.connection.get("authorized_at"))
            at = _time(report.get("at"))
            resolved = bool(authorized_at and at and authorized_at > at)
    if f.problem == Problem.INSUFFICIENT_SCOPE or (reported and not resolved):
        if lacking and all(s in app_scopes for s in lacking):
            remedy = (
                f"The app already requests {_join(lacking)}: authorize the connection again so "
                "the token carries them."
            )
        elif lacking:
            remedy = (
                f"Add {_join([s for s in lacking if s not in app_scopes])} to the app's scopes "
                "(and allow them in the provider's application), then authorize the connection "
                "again."
            )
        else:
            remedy = Problem.INSUFFICIENT_SCOPE.remedy
        needed = f" {_join(required)}" if required else " a scope"
        return _check(
            "insufficient_scope",
            "failing",
            f"A runtime reported that the web service needs{needed} the token does not have.",
            evidence,
            remedy,
        )
    if reported:
        return _check(
            "insufficient_scope",
            "ok",
            "An earlier report of a missing scope is resolved: the connection was authorized "
            "again since.",
            evidence,
        )
    return _check("insufficient_scope", "ok", "No runtime reported a missing scope.", evidence)


def _scope_mismatch(f: _Facts) -> Check:
    app_scopes = _scopes(f.app.get("scopes")) or []
    evidence = {
        "app_scopes": app_scopes,
        "requested_scopes": f.requested,
        "last_error": f.error,
    }
    if f.has(Problem.SCOPE_MISMATCH):
        return _check(
            "scope_mismatch",
            "failing",
            "The provider refused the requested scopes (invalid_scope): the app asks for "
            f"{_join(f.requested or app_scopes)}, which its application at the provider does "
            "not allow.",
            evidence,
            Problem.SCOPE_MISMATCH.remedy,
        )
    not_requested = [s for s in app_scopes if s not in f.requested]
    if not_requested and f.authorized:
        evidence["app_scopes_not_requested"] = not_requested
        return _check(
            "scope_mismatch",
            "ok",
            "The provider accepted the requested scopes; the app now also lists "
            f"{_join(not_requested)}, which this connection never requested (authorize again "
            "to get them).",
            evidence,
        )
    return _check("scope_mismatch", "ok", "The provider accepted the requested scopes.", evidence)


def _scopes_denied(f: _Facts) -> Check:
    evidence: dict[str, Any] = {"requested_scopes": f.requested, "granted_scopes": f.granted}
    if f.granted is None:
        return _check("scopes_denied", "ok", "No scopes granted yet: not authorized.", evidence)
    missing = [s for s in f.requested if s not in f.granted]
    evidence["missing"] = missing
    denied_events = f.events_of("connection.scopes_denied")
    if denied_events:
        evidence["events"] = denied_events[:3]
    if missing or f.problem == Problem.SCOPES_DENIED:
        return _check(
            "scopes_denied",
            "failing",
            f"The user granted fewer scopes than requested: missing {_join(missing)}.",
            evidence,
            Problem.SCOPES_DENIED.remedy,
        )
    return _check("scopes_denied", "ok", "Every requested scope was granted.", evidence)


def _authentication(f: _Facts) -> Check:
    report = f.report or {}
    evidence = {"last_report": f.report}
    if report.get("status") == 403 and not report.get("error"):
        at = _time(report.get("at"))
        fresh = at is None or f.now - at <= REPORT_FRESH
        return _check(
            "authentication",
            "failing" if fresh else "warning",
            "A runtime reported a 403 without a Bearer error"
            + (f" at {_iso(at)}" if at else "")
            + ": the request may have been sent without the Authorization header.",
            evidence,
            "Check that the runtime sends the `authorization` value from "
            f"/v1/connections/{f.connection.get('id', '{id}')}/credentials as the Authorization "
            "header of every request "
            "(some HTTP clients drop it on redirects to another host). If it does, the provider "
            "may restrict access (IP ranges, domains, plan).",
        )
    return _check(
        "authentication",
        "ok",
        "No runtime reported a 403 without a Bearer challenge.",
        evidence,
    )


def _access_restrictions(f: _Facts) -> Check:
    evidence = {"last_error": f.error, "problem": f.problem}
    if not f.has(Problem.ACCESS_DENIED):
        return _check(
            "access_restrictions",
            "ok",
            "The provider has not denied access.",
            evidence,
        )
    stage = (f.error or {}).get("stage")
    if stage == "probe":
        summary = (
            "The web service refuses even a freshly refreshed token (probe answered 401): the "
            "grant was revoked or access is restricted at the provider."
        )
    else:
        summary = (
            "The provider answered access_denied: the user declined, or the provider restricts "
            "access (IP ranges, domains, admin consent)."
        )
    return _check("access_restrictions", "failing", summary, evidence, Problem.ACCESS_DENIED.remedy)


def _client_auth(f: _Facts) -> Check:
    return _client_auth_check(
        f.app,
        refused=f.app_paused == Problem.CLIENT_AUTH_METHOD or f.has(Problem.CLIENT_AUTH_METHOD),
        evidence={"last_error": f.error},
    )


def _client_auth_check(app: Mapping[str, Any], *, refused: bool, evidence: dict[str, Any]) -> Check:
    configured = str(app.get("client_auth") or "body")
    detected = app.get("client_auth_detected")
    evidence = {"client_auth": configured, "client_auth_detected": detected, **evidence}
    if refused:
        if configured == "auto":
            remedy = (
                "client_auth is auto and no placement worked: the provider refuses the client "
                "credentials themselves. Check the client id and secret."
            )
        else:
            remedy = (
                "Set the app's client_auth to the method the provider documents "
                "(client_secret_post = body, client_secret_basic = basic, private_key_jwt, "
                "client_secret_jwt), or to auto, which tries a Basic header, then the body, and "
                "remembers what works. A body or basic setting already tries the other of the "
                "two when the provider refuses it."
            )
        return _check(
            "client_auth",
            "failing",
            f"The provider wants the client credentials elsewhere than the {configured} placement.",
            evidence,
            remedy,
        )
    if detected and configured == "auto":
        return _check(
            "client_auth",
            "ok",
            f"client_auth is auto and found that the provider accepts the credentials in the "
            f"{detected} placement.",
            evidence,
            f"Optionally set client_auth to {detected} to skip the search after a change of "
            "settings.",
        )
    if detected and detected != configured:
        return _check(
            "client_auth",
            "warning",
            f"The credentials were detected to work in the {detected} placement but the app is "
            f"set to {configured}.",
            evidence,
            f"Set client_auth to {detected} or auto.",
        )
    return _check(
        "client_auth",
        "ok",
        f"The provider has not refused the {configured} placement of the client credentials.",
        evidence,
    )


def _refresh_token_missing(f: _Facts) -> Check:
    evidence: dict[str, Any] = {
        "has_refresh_token": f.has_refresh_token,
        "expires_at": f.expires_at,
        "refresh_token_expires_at": f.connection.get("refresh_token_expires_at"),
    }
    if f.status in ("revoking", "revoked") or not f.authorized:
        return _check(
            "refresh_token",
            "ok",
            "Not authorized (or deleted): no refresh token expected.",
            evidence,
        )
    if f.has_refresh_token:
        evidence["last_refresh_at"] = f.connection.get("last_refresh_at")
        return _check("refresh_token", "ok", "A refresh token is stored.", evidence)
    if f.expires_at is None:
        return _check(
            "refresh_token",
            "ok",
            "No refresh token, and the access token does not expire: nothing to refresh. (If the "
            "provider does expire its tokens without saying so, set the app's "
            "default_token_lifetime.)",
            evidence,
        )
    cause, advice = refresh_token_cause(f.app, f.requested)
    evidence.update(
        likely_cause=cause,
        authorization_host=_host(f.app.get("authorization_url")),
        authorize_params=_authorize_params(f.app),
        requested_scopes=f.requested,
    )
    return _check(
        "refresh_token",
        "failing",
        "The provider issued no refresh token and the access token expires"
        + (f" at {_iso(f.expires_at)}" if f.expires_at else "")
        + ": the connection will stop working then.",
        evidence,
        advice,
    )


def _refresh_token_invalidated(f: _Facts) -> Check:
    evidence: dict[str, Any] = {
        "status": f.status,
        "problem": f.problem,
        "last_error": f.error,
        "last_refresh_at": f.connection.get("last_refresh_at"),
        "refresh_token_expires_at": f.connection.get("refresh_token_expires_at"),
    }
    invalidated = f.problem == Problem.REFRESH_TOKEN_INVALIDATED or (
        f.status == "failed"
        and (f.error or {}).get("stage") == "refresh"
        and f.error_problem == Problem.REFRESH_TOKEN_INVALIDATED
    )
    if not invalidated:
        return _check(
            "refresh_token_invalidated",
            "ok",
            "The provider has not refused the stored refresh token.",
            evidence,
        )
    events = f.events_of("connection.invalidated")
    if events:
        evidence["events"] = events[:3]
    error = f.error or {}
    reasons = []
    token_expiry = _time(f.connection.get("refresh_token_expires_at"))
    if token_expiry is not None and token_expiry <= f.now:
        reasons.append(f"the refresh token expired at {_iso(token_expiry)}")
    if f.error_problem == Problem.SCOPE_MISMATCH:
        reasons.append("the provider's application no longer allows the granted scopes")
    reasons.append(
        "it was revoked by the user or an administrator, or used by another system (rotating "
        "refresh tokens are single use)"
    )
    detail = error.get("error") or "invalid_grant"
    if error.get("description"):
        detail += f": {error['description']}"
    return _check(
        "refresh_token_invalidated",
        "failing",
        f"The provider no longer accepts the stored refresh token ({detail}). Likely: "
        + "; or ".join(reasons)
        + ".",
        evidence,
        Problem.REFRESH_TOKEN_INVALIDATED.remedy,
    )


def _token_expiry(f: _Facts) -> Check:
    refresh_at = _time(f.connection.get("refresh_at"))
    next_attempt = _time(f.connection.get("next_attempt_at"))
    attempts = int(f.connection.get("failed_attempts") or 0)
    evidence: dict[str, Any] = {
        "expires_at": f.expires_at,
        "refresh_at": refresh_at,
        "last_refresh_at": f.connection.get("last_refresh_at"),
        "failed_attempts": attempts,
        "next_attempt_at": next_attempt,
    }
    history = f.events_of("connection.refreshed", "connection.refresh_failed", "connection.expired")
    if history:
        evidence["recent_refresh_events"] = [
            {"type": e["type"], "occurred_at": e["occurred_at"]} for e in history[:10]
        ]
    expired = f.expires_at is not None and f.expires_at <= f.now
    if f.status == "expired" or f.problem == Problem.TOKEN_EXPIRED:
        return _check(
            "token_expiry",
            "failing",
            "The access token expired and cannot be refreshed.",
            evidence,
            Problem.TOKEN_EXPIRED.remedy,
        )
    if f.status != "active":
        return _check(
            "token_expiry", "ok", f"Not refreshing: the connection is {f.status}.", evidence
        )
    if attempts > 0:
        evidence["last_error"] = f.error
        error = f.error or {}
        what = str(error.get("error") or "error") + (
            f", HTTP {error['status']}" if error.get("status") else ""
        )
        summary = (
            f"{_plural(attempts, 'refresh attempt')} failed with transient errors ({what}); "
            f"next attempt at {_iso(next_attempt) or 'soon'}."
        )
        if expired:
            return _check(
                "token_expiry",
                "failing",
                summary + " The access token has expired meanwhile: runtimes get 503 "
                "token_expired until a refresh succeeds.",
                evidence,
                "authbroker keeps retrying with backoff. Check the provider's status page and "
                "the app's token URL.",
            )
        return _check(
            "token_expiry",
            "warning",
            summary,
            evidence,
            "Nothing to do while it retries (timeouts, 5xx and 429 never mark a connection "
            "dead). If it goes on, check the provider's status and the app's token URL.",
        )
    if expired and f.has_refresh_token:
        return _check(
            "token_expiry",
            "failing" if f.app_paused is None else "warning",
            f"The access token expired at {_iso(f.expires_at)} and has not been refreshed.",
            evidence,
            "Check that a worker is running (`authbroker worker` or `authbroker run`)."
            if f.app_paused is None
            else "Refreshes are paused with the app: fix its settings (see the settings check).",
        )
    if (
        refresh_at is not None
        and f.app_paused is None
        and f.has_refresh_token
        and f.now - refresh_at > REFRESH_OVERDUE
    ):
        return _check(
            "token_expiry",
            "warning",
            f"The refresh due at {_iso(refresh_at)} has not happened yet.",
            evidence,
            "Check that a worker is running (`authbroker worker` or `authbroker run`) and that "
            "it reaches Redis.",
        )
    if f.expires_at is None:
        summary = "The access token does not expire."
    else:
        summary = f"The access token is valid until {_iso(f.expires_at)}" + (
            f"; next refresh at {_iso(refresh_at)}." if refresh_at else "."
        )
    return _check("token_expiry", "ok", summary, evidence)


_CONNECTION_CHECKS = (
    _connection_state,
    _settings,
    _redirect_url,
    _client_auth,
    _scope_mismatch,
    _scopes_denied,
    _insufficient_scope,
    _authentication,
    _access_restrictions,
    _refresh_token_missing,
    _refresh_token_invalidated,
    _token_expiry,
)


def diagnose_connection(
    connection: Mapping[str, Any],
    app: Mapping[str, Any],
    *,
    redirect_url: str,
    recent_events: Sequence[Mapping[str, Any]] = (),
    now: datetime | None = None,
) -> list[Check]:
    """Every check of one connection, in the order an operator would look."""
    facts = _facts(connection, app, redirect_url, recent_events, now)
    return [check(facts) for check in _CONNECTION_CHECKS]


# ---------------------------------------------------------------------------------- apps


def diagnose_app(
    app: Mapping[str, Any],
    *,
    redirect_url: str,
    connections_by_status: Mapping[str, int],
    recent_problems: Mapping[str, int],
) -> list[Check]:
    """Every check of an application's settings, with the problems its connections have."""
    count = {str(k): int(v) for k, v in recent_problems.items() if v}
    by_status = {str(k): int(v) for k, v in connections_by_status.items() if v}
    paused = (
        str(app.get("paused_problem") or Problem.INVALID_SETTINGS)
        if app.get("paused_at") is not None
        else None
    )
    scopes = _scopes(app.get("scopes")) or []

    def n(problem: Problem) -> int:
        return count.get(str(problem), 0)

    def with_count(problem: Problem, **extra: Any) -> dict[str, Any]:
        return {"connections_with_problem": n(problem), **extra}

    checks: list[Check] = []

    # Connections overview.
    troubled = {s: by_status[s] for s in ("failed", "expired") if by_status.get(s)}
    overview = {"connections_by_status": by_status, "problems": count}
    if app.get("deleting"):
        checks.append(
            _check(
                "connections",
                "warning",
                "The app is being deleted: its connections are being revoked.",
                overview,
                None,
            )
        )
    elif troubled:
        checks.append(
            _check(
                "connections",
                "warning",
                "Some connections no longer work: "
                + ", ".join(f"{v} {k}" for k, v in troubled.items())
                + ".",
                overview,
                "See each connection's diagnosis; most need to be authorized again.",
            )
        )
    else:
        total = sum(by_status.values())
        checks.append(
            _check(
                "connections",
                "ok",
                f"{_plural(total, 'connection')}, none failed or expired.",
                overview,
            )
        )

    # Settings.
    evidence: dict[str, Any] = with_count(
        Problem.INVALID_SETTINGS,
        client_id=app.get("client_id"),
        token_url=app.get("token_url"),
        paused_at=app.get("paused_at"),
        paused_problem=app.get("paused_problem"),
    )
    if "client_secret_set" in app:
        evidence["client_secret_set"] = bool(app["client_secret_set"])
    if app.get("awaiting_secret"):
        evidence["awaiting_secret"] = True
        checks.append(
            _check(
                "settings",
                "failing",
                AWAITING_SECRET_SUMMARY,
                evidence,
                AWAITING_SECRET_REMEDY.format(app=app.get("name", "{name}")),
            )
        )
    elif paused is not None and paused != Problem.CLIENT_AUTH_METHOD:
        checks.append(
            _check(
                "settings",
                "failing",
                f"The provider refused the app's client credentials ({paused}): refreshes of "
                "every connection are paused until the app is updated.",
                evidence,
                Problem.INVALID_SETTINGS.remedy,
            )
        )
    elif n(Problem.INVALID_SETTINGS):
        checks.append(
            _check(
                "settings",
                "failing",
                f"{_plural(n(Problem.INVALID_SETTINGS), 'connection')} failed because the "
                "provider refused the client credentials.",
                evidence,
                Problem.INVALID_SETTINGS.remedy,
            )
        )
    elif app.get("client_secret_set") is False and not app.get("pkce", True):
        checks.append(
            _check(
                "settings",
                "warning",
                "No client secret is set and PKCE is off: only a provider that accepts public "
                "clients without PKCE will issue tokens.",
                evidence,
                f"Set the client secret (PATCH /v1/apps/{app.get('name')}) or turn PKCE on.",
            )
        )
    else:
        checks.append(
            _check(
                "settings",
                "ok",
                "The provider has not refused the app's client credentials.",
                evidence,
            )
        )

    # Redirect URL.
    evidence = with_count(
        Problem.REDIRECT_MISMATCH,
        redirect_url=redirect_url,
        authorizations_expired=n(Problem.AUTHORIZATION_EXPIRED),
    )
    remedy = (
        f"Copy {redirect_url} exactly (scheme, host, port and path, no trailing slash) into the "
        "redirect/callback URLs of the provider's application."
    )
    if n(Problem.REDIRECT_MISMATCH):
        checks.append(
            _check(
                "redirect_url",
                "failing",
                f"The provider refused the redirect URL for "
                f"{_plural(n(Problem.REDIRECT_MISMATCH), 'connection')}: its application does "
                f"not list {redirect_url}.",
                evidence,
                remedy,
            )
        )
    elif n(Problem.AUTHORIZATION_EXPIRED):
        checks.append(
            _check(
                "redirect_url",
                "warning",
                f"{_plural(n(Problem.AUTHORIZATION_EXPIRED), 'authorization')} expired without "
                "the browser coming back: providers usually show their own error page when the "
                "redirect URL is not registered.",
                evidence,
                remedy,
            )
        )
    else:
        checks.append(
            _check(
                "redirect_url",
                "ok",
                f"No redirect error recorded; the provider must list {redirect_url}.",
                evidence,
            )
        )

    # Client credential placement.
    checks.append(
        _client_auth_check(
            app,
            refused=paused == Problem.CLIENT_AUTH_METHOD or n(Problem.CLIENT_AUTH_METHOD) > 0,
            evidence=with_count(Problem.CLIENT_AUTH_METHOD),
        )
    )

    # Scopes.
    evidence = with_count(Problem.SCOPE_MISMATCH, scopes=scopes)
    if n(Problem.SCOPE_MISMATCH):
        checks.append(
            _check(
                "scope_mismatch",
                "failing",
                f"The provider refused the scopes of "
                f"{_plural(n(Problem.SCOPE_MISMATCH), 'connection')} (invalid_scope): the app "
                f"asks for {_join(scopes)}, not all allowed by its application at the provider.",
                evidence,
                Problem.SCOPE_MISMATCH.remedy,
            )
        )
    else:
        checks.append(
            _check("scope_mismatch", "ok", "The provider accepted the app's scopes.", evidence)
        )
    evidence = with_count(Problem.SCOPES_DENIED, scopes=scopes)
    if n(Problem.SCOPES_DENIED):
        checks.append(
            _check(
                "scopes_denied",
                "warning",
                f"Users granted fewer scopes than requested on "
                f"{_plural(n(Problem.SCOPES_DENIED), 'connection')}.",
                evidence,
                Problem.SCOPES_DENIED.remedy,
            )
        )
    else:
        checks.append(_check("scopes_denied", "ok", "No user denied a requested scope.", evidence))
    evidence = with_count(Problem.INSUFFICIENT_SCOPE, scopes=scopes)
    if n(Problem.INSUFFICIENT_SCOPE):
        checks.append(
            _check(
                "insufficient_scope",
                "failing",
                f"Runtimes reported missing scopes on "
                f"{_plural(n(Problem.INSUFFICIENT_SCOPE), 'connection')}: the web service needs "
                "a scope the app does not request.",
                evidence,
                Problem.INSUFFICIENT_SCOPE.remedy
                + " Each connection's diagnosis names the required scopes.",
            )
        )
    else:
        checks.append(
            _check("insufficient_scope", "ok", "No runtime reported a missing scope.", evidence)
        )

    # Access restrictions.
    evidence = with_count(Problem.ACCESS_DENIED)
    if n(Problem.ACCESS_DENIED):
        checks.append(
            _check(
                "access_restrictions",
                "warning",
                f"The provider denied access on {_plural(n(Problem.ACCESS_DENIED), 'connection')}"
                ": users declined, or the provider restricts access (IP ranges, domains, admin "
                "consent).",
                evidence,
                Problem.ACCESS_DENIED.remedy,
            )
        )
    else:
        checks.append(
            _check("access_restrictions", "ok", "The provider has not denied access.", evidence)
        )

    # Refresh tokens.
    cause, advice = refresh_token_cause(app)
    evidence = with_count(
        Problem.REFRESH_TOKEN_MISSING,
        authorization_host=_host(app.get("authorization_url")),
        authorize_params=_authorize_params(app),
        scopes=scopes,
    )
    if n(Problem.REFRESH_TOKEN_MISSING):
        evidence["likely_cause"] = cause
        checks.append(
            _check(
                "refresh_token",
                "failing",
                f"The provider issued no refresh token to "
                f"{_plural(n(Problem.REFRESH_TOKEN_MISSING), 'connection')} whose access "
                "tokens expire.",
                evidence,
                advice,
            )
        )
    elif cause != "unknown":
        evidence["likely_cause"] = cause
        checks.append(
            _check(
                "refresh_token",
                "warning",
                "With these settings the provider will probably issue no refresh token.",
                evidence,
                advice,
            )
        )
    else:
        checks.append(
            _check(
                "refresh_token",
                "ok",
                "No connection is missing a refresh token.",
                evidence,
            )
        )
    evidence = with_count(
        Problem.REFRESH_TOKEN_INVALIDATED, refresh_token_lifetime=app.get("refresh_token_lifetime")
    )
    if n(Problem.REFRESH_TOKEN_INVALIDATED):
        checks.append(
            _check(
                "refresh_token_invalidated",
                "warning",
                f"The provider no longer accepts the refresh token of "
                f"{_plural(n(Problem.REFRESH_TOKEN_INVALIDATED), 'connection')}.",
                evidence,
                Problem.REFRESH_TOKEN_INVALIDATED.remedy
                + " Many at once suggests rotating refresh tokens used by another system too, or "
                "refresh tokens that expire unused (set refresh_token_lifetime).",
            )
        )
    else:
        checks.append(
            _check(
                "refresh_token_invalidated",
                "ok",
                "The provider has not refused any stored refresh token.",
                evidence,
            )
        )

    # Expiry and revocation.
    evidence = with_count(Problem.TOKEN_EXPIRED, expired_connections=by_status.get("expired", 0))
    if n(Problem.TOKEN_EXPIRED) or by_status.get("expired"):
        checks.append(
            _check(
                "token_expiry",
                "warning",
                "Some access tokens expired and could not be refreshed.",
                evidence,
                Problem.TOKEN_EXPIRED.remedy,
            )
        )
    else:
        checks.append(_check("token_expiry", "ok", "No connection has expired.", evidence))
    evidence = {"revoke_url": app.get("revoke_url")}
    if not app.get("revoke_url"):
        checks.append(
            _check(
                "revocation",
                "warning",
                "No revoke URL: deleting a connection cannot revoke its grant at the provider.",
                evidence,
                "Set the app's revoke_url if the provider has one (RFC 7009); otherwise users "
                "revoke access in the provider's settings (some providers issue no new refresh "
                "token until the old grant is revoked).",
            )
        )
    else:
        checks.append(
            _check("revocation", "ok", "Deleted connections are revoked at the provider.", evidence)
        )
    return checks
