"""The front channel: state and PKCE values (RFC 7636), the authorization URL (RFC 6749 §4.1.1)
and scopes as providers write them."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from authbroker.oauth.model import Client

__all__ = [
    "build_authorize_url",
    "code_challenge",
    "issuer_mismatch",
    "new_code_verifier",
    "new_state",
    "parse_scopes",
    "state_digest",
]


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
