"""The OAuth 2.0 client protocol, written once for the web side and the workers.

What lives here: state and PKCE values (RFC 7636), the authorization URL (RFC 6749 §4.1.1), token
requests with every client-credential placement (RFC 6749 §2.3.1, §4.1.3, §6), revocation
(RFC 7009), parsing the answers providers really give, and mapping their errors to a `Problem`.

Rules this module keeps:

- It never logs; callers log. Every exception's text is safe to log: no token, secret, code or
  verifier, and provider descriptions are cleaned of anything we sent before they are kept.
- Every failure is an `OAuthError` subclass with a `Problem`: `ProviderRejected` (the provider
  said no), `ProviderUnavailable` (transient: retry later, never declare a grant dead for it),
  `ProviderMalformed` (the answer is not a token response at all).
- Redirects are never followed (RFC 9700 §4.11, SSRF hygiene) and bodies are read up to a cap.
- Each request has two limits: a short one to connect (a request never sent is safe to retry at
  once) and a long one for the answer once it is sent. When a sent request's answer is lost
  (timed out, connection dropped, a gateway's 5xx), `ProviderUnavailable.answer_lost` says so:
  the provider may have acted on it, and for a refresh its answer held the only copy of a
  rotated refresh token.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit

import aiohttp
from yarl import URL

from authbroker import netguard
from authbroker.problems import Problem

__all__ = [
    "CLIENT_CREDENTIAL_ERRORS",
    "Client",
    "ClientAuth",
    "Grant",
    "OAuthError",
    "Placement",
    "ProviderMalformed",
    "ProviderRejected",
    "ProviderUnavailable",
    "Timeouts",
    "TokenResponse",
    "build_authorize_url",
    "callback_problem",
    "classify",
    "code_challenge",
    "exchange_code",
    "new_code_verifier",
    "new_state",
    "parse_scopes",
    "refresh_token",
    "request_token",
    "revoke_token",
    "state_digest",
]

Placement = Literal["body", "basic", "query"]
"""Where client credentials go in a token request (RFC 6749 §2.3.1; "query" is Facebook's GET)."""

ClientAuth = Literal["body", "basic", "query", "auto"]
"""A client's setting: a placement, or "auto" to try Basic first and fall back to the body."""

Grant = Literal["authorization_code", "refresh_token"]

_USER_AGENT = "authbroker"
_DESCRIPTION_LIMIT = 300
"""Provider error descriptions are kept up to this many characters."""
_MAX_LIFETIME = 10 * 365 * 24 * 3600
"""Lifetimes above ten years are treated as "does not expire" (None)."""
_ERROR_CODE_LIMIT = 64
_REVOKE_MAX_BODY = 64 * 1024
_CHUNK = 64 * 1024
_REDACTED = "[redacted]"

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# The two value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """An OAuth application as the protocol needs it. Secrets never appear in its repr."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)  # public clients have none
    authorization_url: str = ""
    token_url: str = ""
    revoke_url: str | None = None
    scope_separator: str = " "
    client_auth: ClientAuth = "body"
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    token_params: Mapping[str, str] = field(default_factory=dict)
    pkce: bool = True
    # Tried in order after the current secret when the provider answers invalid_client, so that a
    # secret can be rotated at the provider and here in either order without an outage.
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.client_auth not in get_args(ClientAuth):
            raise ValueError(f"client_auth must be one of {get_args(ClientAuth)}")


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1), normalised.

    `expires_in` is None when the provider gave none or a lifetime over ten years (treat as not
    expiring). `scopes` is None when the response had no scope: RFC 6749 §5.1 then means the
    granted scopes are the requested ones. `placement` is where the client credentials went in the
    request that worked, which is how "auto" learns the provider's preference.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int | None
    refresh_token: str | None = field(repr=False)
    refresh_token_expires_in: int | None
    scopes: list[str] | None
    extra: Mapping[str, Any] = field(repr=False)  # id_token, instance_url, ...
    placement: Placement
    # Secondary fields that were unusable and replaced by a safe reading (names only, no values).
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class OAuthError(Exception):
    """Base of every failure this module raises.

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
    """The provider answered with an OAuth error: a 4xx with an error body, or an error in a 200."""


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


# --------------------------------------------------------------------------------------------
# State and PKCE
# --------------------------------------------------------------------------------------------


def new_state() -> str:
    """A 256-bit random state, URL-safe; single use, stored only as its digest."""
    return secrets.token_urlsafe(32)


def state_digest(state: str) -> bytes:
    """SHA-256 of the state: what is stored, so a database leak does not leak live states."""
    return hashlib.sha256(state.encode()).digest()


def new_code_verifier() -> str:
    """A PKCE verifier (RFC 7636 §4.1): 64 characters from the unreserved set (384 random bits)."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    """The S256 challenge (RFC 7636 §4.2): base64url(sha256(ascii(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------------------------
# Authorization URL and scopes
# --------------------------------------------------------------------------------------------

_PROTOCOL_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


def build_authorize_url(
    client: Client,
    *,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    code_challenge: str | None,
) -> str:
    """The URL to send the user's browser to (RFC 6749 §4.1.1, RFC 7636 §4.3).

    A query string already on `authorization_url` (tenants, fixed parameters) is kept verbatim.
    Neither it nor `client.authorize_params` may set a protocol parameter: a second `state` or
    `redirect_uri` would make the flow depend on which copy the provider reads (ValueError).
    Values are percent-encoded with %20 for spaces, which every decoder understands.
    """
    base = urlsplit(client.authorization_url)
    if base.fragment:
        raise ValueError("authorization_url must not have a fragment (RFC 6749 §3.1)")
    existing = [key for key, _ in parse_qsl(base.query, keep_blank_values=True)]
    for key in (*existing, *client.authorize_params):
        if key in _PROTOCOL_AUTHORIZE_PARAMS:
            raise ValueError(f"authorize parameter {key!r} is set by the protocol; remove it")

    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
    }
    if scopes:
        params["scope"] = client.scope_separator.join(scopes)
    params["state"] = state
    if code_challenge is not None:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = "S256"
    params.update(client.authorize_params)

    query = urlencode(params, quote_via=quote)
    if base.query:
        query = f"{base.query}&{query}"
    return base._replace(query=query).geturl()


_SCOPE_SPLIT = re.compile(r"[\s,]+")


def parse_scopes(raw: str | Sequence[str] | None) -> list[str] | None:
    """Scopes as a list: split on spaces and commas, empties dropped, duplicates removed in order.

    RFC 6749 §3.3 separates scopes with spaces; Slack, Facebook and others use commas, and some
    send JSON arrays. None stays None ("not said"), which is different from [] ("none").
    """
    if raw is None:
        return None
    parts: Iterable[str] = _SCOPE_SPLIT.split(raw) if isinstance(raw, str) else raw
    seen: dict[str, None] = {}
    for part in parts:
        scope = part.strip()
        if scope:
            seen.setdefault(scope, None)
    return list(seen)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

CLIENT_CREDENTIAL_ERRORS = frozenset(  # the provider refused the client itself
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",  # GitHub
        "invalid_client_id",  # Slack
        "bad_client_secret",  # Slack
    }
)
_AUTH_METHOD_HINTS = re.compile(
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

    if code in CLIENT_CREDENTIAL_ERRORS:
        if _AUTH_METHOD_HINTS.search(text):
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


def issuer_mismatch(expected: str | None, *, required: bool, received: str | None) -> str | None:
    """Why an authorization response did not come from the expected authorization server
    (RFC 9207 §2.4), or None. `iss` is compared as a plain string, no normalising: a server
    spelling its issuer differently is not the one the app knows. Without an expected issuer
    there is nothing to compare with; `required` (the server's metadata promises `iss` on every
    response) makes a missing one a mismatch too."""
    if received is None and required:
        return "the callback names no issuer (iss), though the provider always sends one"
    if received is None:
        return None
    if expected is not None and received != expected:
        return f"the callback names issuer {received[:300]!r}, not the app's {expected!r}"
    return None


# --------------------------------------------------------------------------------------------
# Keeping what we sent out of what we say
# --------------------------------------------------------------------------------------------

_SECRET_PARAMS = frozenset(
    {
        "code",
        "code_verifier",
        "refresh_token",
        "client_secret",
        "token",
        "assertion",
        "client_assertion",
        "password",
        "subject_token",
        "actor_token",
        "fb_exchange_token",
    }
)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class _Redactor:
    """Cleans provider text of every secret we sent, in the forms a provider might echo it."""

    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def for_request(cls, client: Client, params: Mapping[str, str]) -> _Redactor:
        sent = [s for s in (client.client_secret, *client.previous_secrets) if s]
        values = [*sent, *(basic_credentials(client.client_id, s) for s in sent)]
        values += [value for key, value in params.items() if key in _SECRET_PARAMS]
        forms = {form for value in values if value for form in _encoded_forms(value)}
        return cls(tuple(sorted(forms, key=len, reverse=True)))

    def clean(self, text: str, limit: int) -> str:
        """Also storable: control characters (NUL among them) become spaces, lone surrogates
        (a JSON `\\ud800`) question marks."""
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = _CONTROL_CHARS.sub(" ", text).strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _encoded_forms(value: str) -> set[str]:
    return {value, quote_plus(value), quote(value, safe="")}


# --------------------------------------------------------------------------------------------
# One HTTP exchange
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str  # media type, lower case, no parameters ("" when absent)
    body: bytes = field(repr=False)
    too_large: bool
    retry_after: float | None


@dataclass(frozen=True)
class _Request:
    method: Literal["GET", "POST"]
    url: URL = field(repr=False)  # carries secrets with the "query" placement
    form: Mapping[str, str] | None = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class Timeouts:
    """How long one request may take: `connect` to get a connection (pool wait, DNS, TCP, TLS),
    then `answer` for the provider's answer once the request is sent. The answer wait is the
    long one: a refresh's answer carries the only copy of a rotated refresh token."""

    answer: float = 60.0
    connect: float = 10.0

    @classmethod
    def of(cls, answer: float, connect: float | None = None) -> Timeouts:
        return cls(answer, min(answer, 10.0) if connect is None else connect)


async def _send(
    session: aiohttp.ClientSession, request: _Request, *, timeouts: Timeouts, max_body: int
) -> _Reply:
    """Send one request and read its answer, turning transport failures into OAuthErrors.

    A failure before the connection stood (refused, unresolvable, connect timeout) means the
    provider never saw the request; any later one means it may have (`answer_lost`).
    Exceptions are raised `from None`: the underlying aiohttp error may quote the URL, which
    carries the secret and the code with the "query" placement.
    """
    data = None if request.form is None else urlencode(request.form).encode("ascii")
    host = request.url.host
    try:
        # asyncio.timeout bounds the whole exchange, reading the body included; aiohttp's own
        # limits tell the connect phase apart.
        async with (
            asyncio.timeout(timeouts.connect + timeouts.answer),
            session.request(
                request.method,
                request.url,
                data=data,
                headers=dict(request.headers),
                allow_redirects=False,
                raise_for_status=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeouts.connect, sock_read=timeouts.answer
                ),
            ) as response,
        ):
            return await _read(response, max_body)
    except aiohttp.ConnectionTimeoutError:
        raise ProviderUnavailable(
            "connect_timeout", f"no connection to {host} within {timeouts.connect:g} s"
        ) from None
    except TimeoutError:
        raise ProviderUnavailable(
            "timeout", f"no answer from {host} within {timeouts.answer:g} s", answer_lost=True
        ) from None
    except aiohttp.InvalidURL:
        raise ProviderMalformed("invalid_url", "the endpoint URL is not a valid URL") from None
    except aiohttp.ClientConnectorError as exc:
        # The outbound rules refused the address, not the provider: nothing was sent.
        if isinstance(exc.os_error, netguard.ForbiddenAddress):
            raise ProviderUnavailable("address_refused", str(exc.os_error)) from None
        raise ProviderUnavailable(
            "connection_error", f"{type(exc).__name__} connecting to {host}"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderUnavailable(
            "connection_error", f"{type(exc).__name__} talking to {host}", answer_lost=True
        ) from None


async def _read(response: aiohttp.ClientResponse, max_body: int) -> _Reply:
    """Read at most `max_body` bytes; a redirect's body is not read at all."""
    mime = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    if 300 <= response.status < 400:
        return _Reply(response.status, mime, b"", False, retry_after)
    declared = response.content_length
    if declared is not None and declared > max_body:
        response.close()
        return _Reply(response.status, mime, b"", True, retry_after)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_body:
            response.close()
            return _Reply(response.status, mime, b"", True, retry_after)
    return _Reply(response.status, mime, bytes(body), False, retry_after)


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Garbage gives None (no advice); a date in the past gives 0. No upper bound is imposed here:
    the caller's backoff policy decides how long it is willing to wait.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC without a claim about the origin's zone
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --------------------------------------------------------------------------------------------
# Reading bodies and errors
# --------------------------------------------------------------------------------------------

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "text/plain", ""})


def _parse_body(reply: _Reply) -> dict[str, Any] | None:
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
class _ProviderError:
    code: str
    description: str | None


def _error_in(data: Mapping[str, Any] | None, redactor: _Redactor) -> _ProviderError | None:
    """The provider's error in a body, if it says there is one.

    Covers RFC 6749 §5.2 (`error`, `error_description`), GitHub (the same inside a 200), Slack
    (`ok: false` with or without `error`) and Facebook (`error` as an object with `message`).
    """
    if data is None:
        return None
    raw = data.get("error")
    description = data.get("error_description")
    if isinstance(raw, Mapping):
        description = description or raw.get("message")
        raw = raw.get("type") or raw.get("code") or "error"
    if not raw:
        if data.get("ok") is not False:
            return None
        raw = "unknown_error"
    code = redactor.clean(str(raw), _ERROR_CODE_LIMIT) or "unknown_error"
    text = redactor.clean(str(description), _DESCRIPTION_LIMIT) if description else None
    return _ProviderError(code, text or None)


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


def _raise_for_error(
    reply: _Reply, found: _ProviderError | None, *, grant: Grant | Literal["revoke"]
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
        found = _ProviderError(_STATUS_ERRORS[status], None)
    if found is not None:
        problem = classify(found.code, found.description, grant=grant, status=status)
        raise ProviderRejected(found.code, found.description, status=status, problem=problem)
    if not 200 <= status < 300:
        raise ProviderMalformed("unexpected_status", "not an OAuth answer", status=status)


def _may_have_acted(status: int, found: _ProviderError | None) -> bool:
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


# --------------------------------------------------------------------------------------------
# Token responses
# --------------------------------------------------------------------------------------------

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


def _token_response_from(
    reply: _Reply, *, grant: Grant, placement: Placement, redactor: _Redactor
) -> TokenResponse:
    """Interpret a token endpoint's answer: a TokenResponse, or the OAuthError it amounts to."""
    data = None if reply.too_large or 300 <= reply.status < 400 else _parse_body(reply)
    _raise_for_error(reply, _error_in(data, redactor), grant=grant)
    if reply.too_large:
        raise ProviderMalformed("response_too_large", "response too large", status=reply.status)
    if data is None:
        kind = reply.content_type or "unlabelled"
        raise ProviderMalformed(
            "not_a_token_response",
            f"{kind} body that is neither a JSON object nor form-encoded",
            status=reply.status,
        )
    return _token_response(data, placement, reply.status)


def _token_response(data: Mapping[str, Any], placement: Placement, status: int) -> TokenResponse:
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
        extra={key: value for key, value in data.items() if key not in _KNOWN_FIELDS},
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


# --------------------------------------------------------------------------------------------
# Client authentication: placements, fallback, previous secrets
# --------------------------------------------------------------------------------------------

_CREDENTIAL_PARAMS = frozenset({"client_id", "client_secret"})
_SECRET_REFUSED = frozenset({"invalid_client", "incorrect_client_credentials", "bad_client_secret"})
_AUTH_FAILURE_HINTS = re.compile(r"authenticat|credential|client_secret|client_id|basic")


def basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then base64 (RFC 7617) of "id:secret":
    the value of the Basic header, as secret as the secret itself."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return base64.b64encode(pair.encode("ascii")).decode("ascii")


def _secrets_to_try(client: Client) -> tuple[str | None, ...]:
    if not client.client_secret:
        return (None,)  # a public client identifies itself with client_id only
    return (client.client_secret, *(s for s in client.previous_secrets if s))


def _placements(
    client: Client, secret: str | None, *, query_allowed: bool
) -> tuple[Placement, ...]:
    """The placements to try in order. Public clients never use Basic: they have no secret."""
    setting = client.client_auth
    if setting == "query" and query_allowed:
        return ("query",)
    if secret is None or setting in {"body", "query"}:
        return ("body",)
    if setting == "auto":
        return ("basic", "body")
    return ("basic",)


def _may_be_wrong_placement(exc: ProviderRejected) -> bool:
    """Whether "auto" should retry with the credentials in the body after a Basic attempt."""
    code = exc.error.lower()
    text = (exc.description or "").lower()
    if exc.status == 401 or exc.problem is Problem.CLIENT_AUTH_METHOD:
        return True
    if code in _SECRET_REFUSED or code == "invalid_client_id":
        return True
    return code in {"unauthorized_client", "invalid_request"} and bool(
        _AUTH_FAILURE_HINTS.search(text)
    )


def _secret_refused(exc: ProviderRejected) -> bool:
    """Whether another secret might work: the provider refused the credentials themselves."""
    return exc.error.lower() in _SECRET_REFUSED and exc.problem is not Problem.CLIENT_AUTH_METHOD


async def _with_client_auth(
    client: Client,
    attempt: Callable[[Placement, str | None], Awaitable[_T]],
    *,
    query_allowed: bool,
) -> _T:
    """Run `attempt` with the current secret, then with each previous one while the provider
    refuses the credentials themselves. Any other failure (transient, a grant error) ends the
    search at once. When every secret is refused, the current secret's error is raised: it is the
    one the operator configured.
    """
    current, *previous = _secrets_to_try(client)
    try:
        return await _with_placements(client, current, attempt, query_allowed=query_allowed)
    except ProviderRejected as exc:
        if not previous or not _secret_refused(exc):
            raise
        refusal = exc
    for secret in previous:
        try:
            return await _with_placements(client, secret, attempt, query_allowed=query_allowed)
        except ProviderRejected as exc:
            if not _secret_refused(exc):
                raise
    raise refusal


async def _with_placements(
    client: Client,
    secret: str | None,
    attempt: Callable[[Placement, str | None], Awaitable[_T]],
    *,
    query_allowed: bool,
) -> _T:
    """Try each placement in turn ("auto": Basic, then the body) while the failure may be about
    where the credentials were; the last placement's answer stands.
    """
    *fallbacks, last = _placements(client, secret, query_allowed=query_allowed)
    for placement in fallbacks:
        try:
            return await attempt(placement, secret)
        except ProviderRejected as exc:
            if not _may_be_wrong_placement(exc):
                raise
    return await attempt(last, secret)


def _build_request(
    client: Client,
    url: str,
    params: Mapping[str, str],
    placement: Placement,
    secret: str | None,
) -> _Request:
    """The HTTP request for `params` with the client's credentials where `placement` says.

    Credentials come only from the placement: client_id/client_secret in `params` are dropped.
    """
    fields = {key: value for key, value in params.items() if key not in _CREDENTIAL_PARAMS}
    headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
    if placement == "basic" and secret is not None:
        headers["Authorization"] = "Basic " + basic_credentials(client.client_id, secret)
    else:
        fields["client_id"] = client.client_id
        if secret is not None:
            fields["client_secret"] = secret
    if placement == "query":
        # Encoded by us, exactly as a form would be, and kept so: yarl must not re-encode it.
        base = str(URL(url))
        separator = "&" if URL(url).query_string else "?"
        return _Request(
            "GET", URL(f"{base}{separator}{urlencode(fields)}", encoded=True), None, headers
        )
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return _Request("POST", URL(url), fields, headers)


# --------------------------------------------------------------------------------------------
# Token, exchange, refresh, revoke
# --------------------------------------------------------------------------------------------


async def request_token(
    session: aiohttp.ClientSession,
    client: Client,
    params: Mapping[str, str],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
    grant: Grant,
) -> TokenResponse:
    """One token request (RFC 6749 §4.1.3, §6), with the client's credential placement.

    `client.token_params` are added under the grant parameters (which win). With "auto", Basic is
    tried first and the body once more after a client-authentication failure; then each previous
    secret is tried after invalid_client. `timeout` is each HTTP request's wait for its answer,
    `connect_timeout` its wait for a connection (default: 10 s, or `timeout` if shorter).
    """
    if not client.token_url:
        raise ValueError("the client has no token_url")
    merged = {**params}
    for key, value in client.token_params.items():
        merged.setdefault(key, value)
    redactor = _Redactor.for_request(client, merged)
    limits = Timeouts.of(timeout, connect_timeout)

    async def attempt(placement: Placement, secret: str | None) -> TokenResponse:
        request = _build_request(client, client.token_url, merged, placement, secret)
        reply = await _send(session, request, timeouts=limits, max_body=max_body)
        return _token_response_from(reply, grant=grant, placement=placement, redactor=redactor)

    return await _with_client_auth(client, attempt, query_allowed=True)


async def exchange_code(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
) -> TokenResponse:
    """Exchange an authorization code (RFC 6749 §4.1.3) with its PKCE verifier (RFC 7636 §4.5)."""
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        params["code_verifier"] = code_verifier
    return await request_token(
        session,
        client,
        params,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_body=max_body,
        grant="authorization_code",
    )


async def refresh_token(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    refresh_token: str,
    scopes: Sequence[str] | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
) -> TokenResponse:
    """Refresh (RFC 6749 §6). `scope` is sent only when given: omitted means "as granted"."""
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scopes:
        params["scope"] = client.scope_separator.join(scopes)
    return await request_token(
        session,
        client,
        params,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_body=max_body,
        grant="refresh_token",
    )


_ALREADY_GONE = frozenset(
    {"invalid_token", "invalid_grant", "token_revoked", "expired_token", "bad_refresh_token"}
)


async def revoke_token(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    token: str,
    token_type_hint: Literal["access_token", "refresh_token"] | None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
) -> None:
    """Revoke a token (RFC 7009 §2.1): POST the token and its hint with client authentication.

    Returns when the token is gone: a 2xx (RFC 7009 §2.2 answers 200 for unknown tokens too), or
    an error saying the token is already invalid (invalid_token, invalid_grant, ...), which some
    providers send instead of the 200. The "query" placement sends credentials in the body here:
    RFC 7009 requires POST and RFC 6749 §2.3.1 forbids credentials in the URI.
    """
    if not client.revoke_url:
        raise ValueError("the client has no revoke_url")
    revoke_url = client.revoke_url
    params = {"token": token}
    if token_type_hint is not None:
        params["token_type_hint"] = token_type_hint
    redactor = _Redactor.for_request(client, params)
    limits = Timeouts.of(timeout, connect_timeout)

    async def attempt(placement: Placement, secret: str | None) -> None:
        request = _build_request(client, revoke_url, params, placement, secret)
        reply = await _send(session, request, timeouts=limits, max_body=_REVOKE_MAX_BODY)
        _revocation_outcome(reply, redactor)

    await _with_client_auth(client, attempt, query_allowed=False)


def _revocation_outcome(reply: _Reply, redactor: _Redactor) -> None:
    data = None if reply.too_large or 300 <= reply.status < 400 else _parse_body(reply)
    found = _error_in(data, redactor)
    if found is not None and found.code.lower() in _ALREADY_GONE and reply.status < 500:
        return
    _raise_for_error(reply, found, grant="revoke")


# --------------------------------------------------------------------------------------------
# RFC 6750 §3: what a resource server's WWW-Authenticate says about a token
# --------------------------------------------------------------------------------------------

_CHALLENGE = re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class BearerChallenge:
    """The Bearer challenge of a 401/403; `error` is None when the service sent none
    (RFC 6750 §3.1: a request without authentication gets a challenge without an error)."""

    error: str | None
    scope: list[str] | None
    description: str | None


def parse_bearer_challenge(header: str | None) -> BearerChallenge | None:
    """Parse the Bearer challenge out of a WWW-Authenticate value; None if there is none."""
    if not header:
        return None
    match = re.search(r"(?:^|,)\s*Bearer\b(.*)", header, re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    rest = match.group(1)
    # Another scheme's challenge may follow: stop at ", Scheme " without "=".
    other = re.search(r",\s*[A-Za-z][A-Za-z0-9_\-]*\s+[A-Za-z0-9_\-]+\s*=", rest)
    if other:
        rest = rest[: other.start()]
    params: dict[str, str] = {}
    for key, quoted, token in _CHALLENGE.findall(rest):
        params.setdefault(key.lower(), (quoted if quoted else token).replace('\\"', '"'))
    scope = params.get("scope")
    return BearerChallenge(
        error=params.get("error"),
        scope=scope.split() if scope else None,
        description=params.get("error_description", "")[:300] or None,
    )
