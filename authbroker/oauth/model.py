"""The protocol's value types: the client as the protocol needs it, and what a token request
gives back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from authbroker.oauth.jwt import SigningKey

__all__ = [
    "JWT_METHODS",
    "PLACEMENTS",
    "Authenticated",
    "Client",
    "ClientAuth",
    "Grant",
    "ParamValue",
    "Placement",
    "TokenRequestFormat",
    "TokenResponse",
    "TokenShape",
]

Placement = Literal["body", "basic", "query"]
"""Where client credentials go in a token request (RFC 6749 §2.3.1; "query" is Facebook's GET).
A client assertion (the JWT methods) always goes in the body."""
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)

ClientAuth = Literal["body", "basic", "query", "auto", "private_key_jwt", "client_secret_jwt"]
"""A client's setting: a placement of id and secret; "auto" to try Basic first and fall back to
the body; or a signed client assertion (RFC 7523 §2.2) with the app's private key
(`private_key_jwt`) or HMAC over its secret (`client_secret_jwt`)."""
JWT_METHODS = frozenset({"private_key_jwt", "client_secret_jwt"})

TokenRequestFormat = Literal["form", "json"]
"""How a request body is encoded: RFC 6749's form, or JSON (Atlassian, Notion)."""

Grant = Literal["authorization_code", "refresh_token", "client_credentials"]

ParamValue = str | Sequence[str]
"""A request parameter's value; a sequence is sent as the parameter repeated (RFC 8707's
`resource`), or as a JSON array in a JSON body."""


@dataclass(frozen=True)
class TokenShape:
    """Where a provider's token answer departs from RFC 6749 §5.1, as data (from its preset).

    `path`: the keys of an object holding the tokens (access_token, refresh_token, expires_in,
    scope, token_type) when the provider nests them, such as Slack's user tokens under
    `authed_user`; an answer without that object (Slack's refresh answers) is read at the top.
    `success_field`: a boolean field whose `false` means failure whatever the HTTP status
    (Slack's `ok`). An `error` field in a 200 is an error for every provider (GitHub does that).
    """

    path: tuple[str, ...] = ()
    success_field: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> TokenShape:
        """From a preset's `token_response` object (`{"path": "authed_user", ...}`)."""
        if not data:
            return cls()
        path = data.get("path") or ""
        return cls(tuple(p for p in str(path).split(".") if p), data.get("success_field"))


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
    # private_key_jwt: the signing key first, then a previous one tried like previous secrets.
    signing_keys: tuple[SigningKey, ...] = field(default=(), repr=False)
    # The `aud` of client assertions; None: the token endpoint (OpenID Connect Core §9).
    assertion_audience: str | None = None
    token_request_format: TokenRequestFormat = "form"
    token_shape: TokenShape = field(default_factory=TokenShape)

    def __post_init__(self) -> None:
        if self.client_auth not in get_args(ClientAuth):
            raise ValueError(f"client_auth must be one of {get_args(ClientAuth)}")
        if self.token_request_format not in get_args(TokenRequestFormat):
            raise ValueError(f"token_request_format must be one of {get_args(TokenRequestFormat)}")

    @property
    def fixed_placement(self) -> bool:
        """Whether the setting names one placement of id and secret (not auto, not a JWT)."""
        return self.client_auth in PLACEMENTS


@dataclass(frozen=True)
class Authenticated:
    """How the client authenticated in the request that worked.

    `placement` is where the credentials went. `refused_placement` is set when the client's
    fixed placement (`client_auth` body, basic or query) was refused with a client-authentication
    error and `placement` worked instead: the app's setting is wrong, and the caller should say
    so (Problem.CLIENT_AUTH_METHOD naming `placement`), though the request succeeded.
    """

    placement: Placement
    refused_placement: Placement | None = None


@dataclass(frozen=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1), normalised.

    `expires_in` is None when the provider gave none or a lifetime over ten years (treat as not
    expiring). `scopes` is None when the response had no scope: RFC 6749 §5.1 then means the
    granted scopes are the requested ones. `placement` is where the client credentials went in the
    request that worked, which is how "auto" learns the provider's preference;
    `refused_placement` (see `Authenticated`) says the configured placement was refused first.
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
    refused_placement: Placement | None = None
