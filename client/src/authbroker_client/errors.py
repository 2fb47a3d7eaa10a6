"""Typed errors: a runtime decides what to do from the class, and tells a person what to do
from `problem` and `detail` (authbroker's remedy), without parsing messages.

authbroker answers errors as `{"error": code, "message": text}`, and connection errors add
`status`, `problem` and `detail` (the remedy); a 503 adds `Retry-After`. None of these ever
holds a token or a secret, so the exceptions can be logged as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


class AuthbrokerError(Exception):
    """Base of every error this package raises."""


class Unreachable(AuthbrokerError):
    """authbroker could not be reached or did not answer in time (the cause is chained)."""


class ApiError(AuthbrokerError):
    """authbroker answered with an error. `error` is its code (`connection_not_found`, …),
    `problem` and `detail` the connection's problem and remedy when it has one."""

    def __init__(
        self,
        status: int,
        body: Mapping[str, Any],
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.body = dict(body)
        self.error: str = str(body.get("error") or f"http_{status}")
        self.message: str = str(body.get("message") or "")
        self.problem: str | None = body.get("problem")
        self.detail: str | None = body.get("detail")
        self.connection_status: str | None = body.get("status")
        self.retry_after = retry_after
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"{self.status} {self.error}: {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        if self.retry_after is not None:
            text += f"; retry after {self.retry_after:g} s"
        return text


class BadRequest(ApiError):
    """400: the request was malformed; `body["fields"]` names bad fields when there are any."""


class Unauthorized(ApiError):
    """401: the API key is missing, unknown or revoked."""


class NotFound(ApiError):
    """404: no such connection or Basic credential."""


class ConnectionNotActive(ApiError):
    """409: the connection cannot hand out a token until someone acts on it (authorize it
    again, fix the app's settings): `problem` and `detail` say what."""


class ServiceUnavailable(ApiError):
    """5xx: authbroker or what it depends on is unavailable for now; `retry_after` says when to
    try again when authbroker said so."""


class TokenUnavailable(ServiceUnavailable):
    """503 with a problem: no valid token now (a refresh is pending or failing for a while, or
    the provider refused the app's settings); `retry_after` is when a retry may succeed."""


class WebhookVerificationError(AuthbrokerError):
    """A webhook request that must not be trusted. `reason` is one of `missing_header`,
    `invalid_timestamp`, `timestamp_too_old`, `timestamp_too_new`, `no_matching_signature`,
    `invalid_payload`."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: ConnectionNotActive,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date, RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def error_for(status: int, body: Any, headers: Mapping[str, str]) -> ApiError:
    """The typed error for an error answer of authbroker."""
    if not isinstance(body, Mapping):
        body = {"message": str(body)[:500]}
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status >= 500:
        kind: type[ApiError] = TokenUnavailable if body.get("problem") else ServiceUnavailable
    else:
        kind = _BY_STATUS.get(status, ApiError)
    return kind(status, body, retry_after)
