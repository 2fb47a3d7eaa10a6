"""Reading providers' answers as they really are: bodies that are JSON, form-encoded or
mislabelled, errors in 4xx answers and in 200s, and token responses normalised (RFC 6749 §5),
with what a provider does differently described by its `TokenShape`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from authbroker.oauth.authorization import parse_scopes
from authbroker.oauth.errors import (
    ProviderMalformed,
    ProviderRejected,
    ProviderUnavailable,
    classify,
)
from authbroker.oauth.model import Grant, Placement, TokenResponse, TokenShape
from authbroker.oauth.redact import Redactor
from authbroker.oauth.transport import Reply

__all__ = ["FoundError", "error_in", "parse_body", "raise_for_error", "token_response_from"]

_DESCRIPTION_LIMIT = 300
"""Provider error descriptions are kept up to this many characters."""
_MAX_LIFETIME = 10 * 365 * 24 * 3600
"""Lifetimes above ten years are treated as "does not expire" (None)."""
_ERROR_CODE_LIMIT = 64

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "text/plain", ""})


def parse_body(reply: Reply) -> dict[str, Any] | None:
    """The body as a dict: a JSON object (whatever the label) or a form-encoded body, else None.

    JSON is tried for any JSON media type and for any body that starts like a JSON object, since
    providers mislabel it (text/javascript, text/html). Form-encoding is GitHub's legacy answer and
    is only believed under a form or text/plain label, so an HTML page never passes for one.
    """
    declared_json = reply.content_type.endswith(("/json", "+json"))
    if declared_json or reply.body.lstrip()[:1] == b"{":
        try:
            value = json.loads(reply.body)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        if declared_json:
            return None
    if reply.content_type in _FORM_TYPES:
        return _parse_form(reply.body)
    return None


def _parse_form(body: bytes) -> dict[str, Any] | None:
    try:
        text = body.decode("utf-8").strip()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:  # includes UnicodeDecodeError; strict parsing refuses "no = sign" text
        return None
    return dict(pairs) or None


@dataclass(frozen=True)
class FoundError:
    code: str
    description: str | None


def error_in(
    data: Mapping[str, Any] | None, redactor: Redactor, shape: TokenShape
) -> FoundError | None:
    """The provider's error in a body, if it says there is one.

    Covers RFC 6749 §5.2 (`error`, `error_description`), the same inside a 200 (GitHub),
    Facebook (`error` as an object with `message`), and a provider's success field being false
    with or without `error` where its shape names one (Slack's `ok`).
    """
    if data is None:
        return None
    raw = data.get("error")
    description = data.get("error_description")
    if isinstance(raw, Mapping):
        description = description or raw.get("message")
        raw = raw.get("type") or raw.get("code") or "error"
    if not raw:
        if shape.success_field is None or data.get(shape.success_field) is not False:
            return None
        raw = "unknown_error"
    code = redactor.clean(str(raw), _ERROR_CODE_LIMIT) or "unknown_error"
    text = redactor.clean(str(description), _DESCRIPTION_LIMIT) if description else None
    return FoundError(code, text or None)


_TRANSIENT_ERRORS = frozenset(
    {
        "temporarily_unavailable",
        "server_error",
        "slow_down",
        "ratelimited",  # Slack
        "rate_limited",
        "service_unavailable",
        "internal_error",  # Slack
        "fatal_error",  # Slack
        "request_timeout",  # Slack
    }
)
_STATUS_ERRORS = {400: "invalid_request", 401: "invalid_client", 403: "access_denied"}


def raise_for_error(
    reply: Reply, found: FoundError | None, *, grant: Grant | Literal["revoke"]
) -> None:
    """Raise what a non-success answer means; return for a 2xx without an error."""
    status = reply.status
    if 300 <= status < 400:
        raise ProviderMalformed(
            "unexpected_redirect",
            "the endpoint answered with a redirect (not followed)",
            status=status,
        )
    transient_code = found is not None and found.code.lower() in _TRANSIENT_ERRORS
    if status >= 500 or status in (408, 429) or transient_code:
        code = found.code if found else _transient_code(status)
        raise ProviderUnavailable(
            code,
            found.description if found else None,
            status=status,
            retry_after=reply.retry_after,
            answer_lost=_may_have_acted(status, found),
        )
    if found is None and 400 <= status < 500:
        if status not in _STATUS_ERRORS:
            raise ProviderMalformed("unexpected_status", "not an OAuth error answer", status=status)
        found = FoundError(_STATUS_ERRORS[status], None)
    if found is not None:
        problem = classify(found.code, found.description, grant=grant, status=status)
        raise ProviderRejected(found.code, found.description, status=status, problem=problem)
    if not 200 <= status < 300:
        raise ProviderMalformed("unexpected_status", "not an OAuth answer", status=status)


def _may_have_acted(status: int, found: FoundError | None) -> bool:
    """Whether a failed answer leaves open that the provider did what was asked: a 5xx other
    than 503 (an error half-way, a gateway that gave up on a backend still working). 503, 429,
    408 and `temporarily_unavailable` say the request was not served."""
    if status < 500 or status == 503:
        return False
    return found is None or found.code.lower() != "temporarily_unavailable"


def _transient_code(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "request_timeout"
    return "server_error"


_KNOWN_FIELDS = frozenset(
    {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "x_refresh_token_expires_in",
        "scope",
    }
)


def token_response_from(
    reply: Reply, *, grant: Grant, placement: Placement, redactor: Redactor, shape: TokenShape
) -> TokenResponse:
    """Interpret a token endpoint's answer: a TokenResponse, or the OAuthError it amounts to."""
    data = None if reply.too_large or 300 <= reply.status < 400 else parse_body(reply)
    raise_for_error(reply, error_in(data, redactor, shape), grant=grant)
    if reply.too_large:
        raise ProviderMalformed("response_too_large", "response too large", status=reply.status)
    if data is None:
        kind = reply.content_type or "unlabelled"
        raise ProviderMalformed(
            "not_a_token_response",
            f"{kind} body that is neither a JSON object nor form-encoded",
            status=reply.status,
        )
    return _token_response(data, placement, reply.status, shape)


def _tokens_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The object at `path` when it holds an access token, else None (read the top level)."""
    found: Any = data
    for key in path:
        found = found.get(key) if isinstance(found, Mapping) else None
    if isinstance(found, Mapping) and found.get("access_token") is not None:
        return found
    return None


def _token_response(
    answer: Mapping[str, Any], placement: Placement, status: int, shape: TokenShape
) -> TokenResponse:
    nested = _tokens_at(answer, shape.path) if shape.path else None
    data = nested if nested is not None else answer
    # What is kept beside the tokens: the answer's other top-level fields, less the object the
    # tokens came from (it holds nothing else worth keeping) and any token at the top level.
    left_out = _KNOWN_FIELDS | ({shape.path[0]} if nested is not None else set())

    def malformed(what: str) -> ProviderMalformed:
        return ProviderMalformed("invalid_token_response", what, status=status)

    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        raise malformed("the response has no access_token")
    refresh = data.get("refresh_token")
    if refresh is not None and not isinstance(refresh, str):
        raise malformed("refresh_token is not a string")
    refresh_lifetime_key = (
        "refresh_token_expires_in"
        if data.get("refresh_token_expires_in") is not None
        else "x_refresh_token_expires_in"  # Intuit
    )
    # The tokens are what matters: a provider has just consumed the code or the old refresh
    # token, so a bad secondary field must not throw them away. It is read the safe way (a
    # negative lifetime as expired now, anything else unusable as absent) and reported.
    warnings: list[str] = []

    def lenient(read: Callable[[], Any], fallback: Callable[[], Any], what: str) -> Any:
        try:
            return read()
        except _BadField as exc:
            warnings.append(f"{exc}: {what}")
            return fallback()

    def lifetime(key: str) -> int | None:
        raw = data.get(key)
        return lenient(
            lambda: _lifetime(raw, key),
            lambda: 0 if _is_negative(raw) else None,
            "read as expired" if _is_negative(raw) else "ignored",
        )

    return TokenResponse(
        access_token=access_token,
        token_type=lenient(
            lambda: _token_type(data.get("token_type")), lambda: "Bearer", "Bearer assumed"
        ),
        expires_in=lifetime("expires_in"),
        refresh_token=refresh or None,
        refresh_token_expires_in=lifetime(refresh_lifetime_key),
        scopes=lenient(lambda: _granted_scopes(data.get("scope")), lambda: None, "ignored"),
        extra={key: value for key, value in answer.items() if key not in left_out},
        placement=placement,
        warnings=tuple(warnings),
    )


def _is_negative(raw: Any) -> bool:
    try:
        return not isinstance(raw, bool) and float(raw) < 0
    except (TypeError, ValueError):
        return False


class _BadField(Exception):
    """A token response field with an unusable value; the message names the field only."""


def _token_type(raw: Any) -> str:
    """RFC 6749 §7.1: case-insensitive; absent means Bearer (GitHub legacy, some others)."""
    if raw is None or raw == "":
        return "Bearer"
    if not isinstance(raw, str):
        raise _BadField("token_type is not a string")
    return "Bearer" if raw.lower() == "bearer" else raw


def _lifetime(raw: Any, name: str) -> int | None:
    """Seconds from a number or numeric string (PayPal sends strings).

    Absent or null gives None. Negative or not a number is malformed: guessing would make us
    believe a token lives forever. Over ten years gives None, i.e. treated as not expiring.
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _BadField(f"{name} is not a number")
    try:
        seconds = raw if isinstance(raw, int) else float(raw)
    except ValueError:
        raise _BadField(f"{name} is not a number") from None
    if isinstance(seconds, float) and math.isnan(seconds):
        raise _BadField(f"{name} is not a number")
    if seconds < 0:
        raise _BadField(f"{name} is negative")
    if seconds > _MAX_LIFETIME:
        return None
    return int(seconds)


def _granted_scopes(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return parse_scopes(raw)
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return parse_scopes(raw)
    raise _BadField("scope is neither a string nor a list of strings")
