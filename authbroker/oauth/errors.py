"""Every failure the protocol raises, and the Problem behind a provider's error code.

Every failure is an `OAuthError` subclass with a `Problem`: `ProviderRejected` (the provider
said no), `ProviderUnavailable` (transient: retry later, never declare a grant dead for it),
`ProviderMalformed` (the answer is not a token response at all). `str(exc)` is safe to log.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from authbroker.oauth.model import Grant, Placement
from authbroker.problems import Problem

__all__ = [
    "CLIENT_CREDENTIAL_ERRORS",
    "OAuthError",
    "ProviderMalformed",
    "ProviderRejected",
    "ProviderUnavailable",
    "callback_problem",
    "classify",
]


class OAuthError(Exception):
    """Base of every failure this package raises.

    Attributes: `error` (a short code: the provider's, or ours such as "timeout"), `description`
    (the provider's words, cleaned and truncated, or ours), `status` (HTTP status, None when there
    was no answer), `problem` (what to tell the operator), `transient` (retrying later may work),
    `retry_after` (seconds, from Retry-After). `str(exc)` is safe to log.
    """

    default_transient = False

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int | None = None,
        problem: Problem | None = Problem.PROVIDER_ERROR,
        transient: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        self.problem = problem
        self.transient = self.default_transient if transient is None else transient
        self.retry_after = retry_after
        super().__init__(self._message())

    def _message(self) -> str:
        text = self.error
        if self.description:
            text += f": {self.description}"
        if self.status is not None:
            text += f" (HTTP {self.status})"
        return text


class ProviderRejected(OAuthError):
    """The provider answered with an OAuth error: a 4xx with an error body, or an error in a 200.

    `placements_refused` names where the client credentials went when the provider refused
    them in more than one placement (`client_auth`); the description has each one's answer.
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        placements_refused: tuple[Placement, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.placements_refused = placements_refused
        super().__init__(error, description, **kwargs)


class ProviderUnavailable(OAuthError):
    """Transient: timeout, connection error, 5xx, 408, 429. Retry later; honour `retry_after`.

    `answer_lost` is True when the request reached the provider (or may have) and its answer
    did not reach us: the provider may have done what was asked, e.g. rotated a refresh token.
    False when the request was never sent (no connection) or the provider said it did nothing
    (503, 429, 408, `temporarily_unavailable`).
    """

    default_transient = True

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        answer_lost: bool = False,
        **kwargs: Any,
    ) -> None:
        self.answer_lost = answer_lost
        super().__init__(error, description, **kwargs)


class ProviderMalformed(OAuthError):
    """The answer is not a usable token response: wrong content, a redirect, too large, ..."""


CLIENT_CREDENTIAL_ERRORS = frozenset(  # the provider refused the client itself
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",  # GitHub
        "invalid_client_id",  # Slack
        "bad_client_secret",  # Slack
    }
)
AUTH_METHOD_HINTS = re.compile(
    r"authentication method|auth method|client_secret_basic|client_secret_post"
    r"|token_endpoint_auth_method"
    r"|(missing|must contain|is required|not provided|no client credentials).{0,80}client_secret"
)
_REDIRECT_ERRORS = frozenset({"redirect_uri_mismatch", "invalid_redirect_uri", "bad_redirect_uri"})
_GRANT_ERRORS = frozenset(
    {
        "invalid_grant",
        "bad_verification_code",  # GitHub
        "invalid_code",  # Slack
        "code_already_used",  # Slack
        "expired_token",
        # OpenID Connect: the user must come back (MFA, consent); the grant cannot be used alone.
        "interaction_required",
        "consent_required",
        "login_required",
    }
)
_REFRESH_TOKEN_ERRORS = frozenset({"bad_refresh_token", "invalid_refresh_token"})


def classify(
    error: str,
    description: str | None,
    *,
    grant: Grant | Literal["revoke"],
    status: int | None,
) -> Problem:
    """The Problem behind a provider's error code at the token or revocation endpoint.

    Provider variants (GitHub, Slack) map like their RFC 6749 §5.2 counterparts. Grant errors
    depend on what was sent: a refused code only means "authorize again", a refused refresh
    token means the connection is dead. An unknown code with HTTP 401 is a client-auth failure.
    """
    code = error.strip().lower()
    text = (description or "").lower()

    if grant == "client_credentials" and code in {"unauthorized_client", "unsupported_grant_type"}:
        return Problem.GRANT_NOT_ALLOWED
    if code in CLIENT_CREDENTIAL_ERRORS:
        if AUTH_METHOD_HINTS.search(text):
            return Problem.CLIENT_AUTH_METHOD
        return Problem.INVALID_SETTINGS
    if code in _REDIRECT_ERRORS or "redirect" in code:
        return Problem.REDIRECT_MISMATCH
    if code in {"invalid_grant", "invalid_request"} and "redirect" in text:
        return Problem.REDIRECT_MISMATCH
    if code == "invalid_scope":
        return Problem.SCOPE_MISMATCH
    if code == "access_denied":
        return Problem.ACCESS_DENIED
    if code in _REFRESH_TOKEN_ERRORS:
        return Problem.REFRESH_TOKEN_INVALIDATED
    if code in _GRANT_ERRORS:
        if grant == "authorization_code":
            return Problem.CODE_REJECTED
        if grant == "refresh_token":
            return Problem.REFRESH_TOKEN_INVALIDATED
        return Problem.PROVIDER_ERROR
    if status == 401:
        return Problem.INVALID_SETTINGS
    return Problem.PROVIDER_ERROR


def callback_problem(error: str, description: str | None) -> Problem:
    """The Problem behind `error=` on the redirect back to us (RFC 6749 §4.1.2.1)."""
    code = error.strip().lower()
    text = (description or "").lower()
    if code in {"access_denied", "consent_required", "interaction_required", "login_required"}:
        return Problem.ACCESS_DENIED
    if code == "invalid_scope":
        return Problem.SCOPE_MISMATCH
    if "redirect" in code or (code == "invalid_request" and "redirect" in text):
        return Problem.REDIRECT_MISMATCH
    if code in {"unauthorized_client", "unsupported_response_type", "invalid_client"}:
        return Problem.INVALID_SETTINGS
    return Problem.PROVIDER_ERROR
