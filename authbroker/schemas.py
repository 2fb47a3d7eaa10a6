"""What operators may write: application and credential definitions, validated once for the
API, the CLI and imports alike.

Unknown fields are errors rather than silently dropped: a misspelt `client_auht` must not leave
an app sending credentials the wrong way.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from authbroker import netguard
from authbroker.config import is_loopback

ClientAuth = Literal["body", "basic", "query", "auto"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
PROTOCOL_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "client_secret",
        "redirect_uri",
        "scope",
        "state",
        "code",
        "code_challenge",
        "code_challenge_method",
        "code_verifier",
        "grant_type",
        "refresh_token",
    }
)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# A space is the usual separator: never stripped like other strings.
Separator = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=3)]
Scope = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[\x21\x23-\x5B\x5D-\x7E]+$")]
Params = dict[
    Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(max_length=2048)]
]


def check_url(value: str, *, allow_http: bool, allow_link_local: bool = False) -> str:
    """An absolute https URL (http only for loopback hosts or with AUTHBROKER_ALLOW_HTTP=1),
    never a metadata or link-local address however spelt (names are resolved by the caller:
    see `netguard.resolved_reason`)."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not contain a #fragment")
    if parts.scheme == "http" and not (allow_http or is_loopback(parts.hostname)):
        raise ValueError(
            "must use https (http is accepted only for loopback hosts, or with "
            "AUTHBROKER_ALLOW_HTTP=1)"
        )
    host = netguard.normalized_host(value)
    if host is None:
        raise ValueError("has a host that cannot be read")
    reason = None if allow_link_local else netguard.host_reason(host)
    if reason:
        raise ValueError(f"host {host} {reason}")
    return value


class _AppFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator(
        "authorization_url",
        "token_url",
        "revoke_url",
        "probe_url",
        mode="after",
        check_fields=False,
    )
    @classmethod
    def _urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context or {}
        return check_url(
            value,
            allow_http=bool(context.get("allow_http")),
            allow_link_local=bool(context.get("allow_link_local")),
        )

    @field_validator("authorize_params", "token_params", mode="after", check_fields=False)
    @classmethod
    def _params(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        clash = sorted(set(value or {}) & PROTOCOL_PARAMS)
        if clash:
            raise ValueError(f"must not set protocol parameters: {', '.join(clash)}")
        return value

    @field_validator("scopes", mode="after", check_fields=False)
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(value)) if value is not None else None


class AppCreate(_AppFields):
    name: Name
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: str | None = Field(default=None, min_length=1, max_length=4096, repr=False)
    client_secrets_previous: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=5, repr=False
    )
    authorization_url: str = Field(max_length=2048)
    token_url: str = Field(max_length=2048)
    revoke_url: str | None = Field(default=None, max_length=2048)
    scopes: list[Scope] = Field(default_factory=list, max_length=100)
    scope_separator: Separator = " "
    client_auth: ClientAuth = "body"
    authorize_params: Params = Field(default_factory=dict)
    token_params: Params = Field(default_factory=dict)
    pkce: bool = True
    refresh_margin: int = Field(default=300, ge=0, le=86_400)
    default_token_lifetime: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)
    refresh_token_lifetime: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)
    probe_url: str | None = Field(default=None, max_length=2048)
    probe_interval: int | None = Field(default=None, ge=60, le=7 * 86_400)
    # The provider preset the definition started from (informational once applied).
    preset: str | None = Field(default=None, max_length=64)


# Settings an app cannot lack: a PATCH may leave them out but not set them to null.
REQUIRED_SETTINGS = (
    "client_id",
    "authorization_url",
    "token_url",
    "scopes",
    "scope_separator",
    "client_auth",
    "authorize_params",
    "token_params",
    "pkce",
    "refresh_margin",
)


def _null_refused(schema: dict[str, Any]) -> None:
    """AppUpdate's JSON Schema: its optional types admit null, its validator refuses null for
    the settings an app cannot lack; the schema says so too."""
    properties = schema["properties"]
    for name in REQUIRED_SETTINGS:
        prop = properties[name]
        variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
        if len(variants) == 1:
            rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
            properties[name] = {**variants[0], **rest}


class AppUpdate(_AppFields):
    """A PATCH: only the fields given change; `null` clears the optional ones."""

    model_config = ConfigDict(json_schema_extra=_null_refused)

    client_id: str | None = Field(default=None, min_length=1, max_length=512)
    client_secret: str | None = Field(default=None, min_length=1, max_length=4096, repr=False)
    client_secrets_previous: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = (
        Field(default=None, max_length=5, repr=False)
    )
    authorization_url: str | None = Field(default=None, max_length=2048)
    token_url: str | None = Field(default=None, max_length=2048)
    revoke_url: str | None = Field(default=None, max_length=2048)
    scopes: list[Scope] | None = Field(default=None, max_length=100)
    scope_separator: Separator | None = None
    client_auth: ClientAuth | None = None
    authorize_params: Params | None = None
    token_params: Params | None = None
    pkce: bool | None = None
    refresh_margin: int | None = Field(default=None, ge=0, le=86_400)
    default_token_lifetime: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)
    refresh_token_lifetime: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)
    probe_url: str | None = Field(default=None, max_length=2048)
    probe_interval: int | None = Field(default=None, ge=60, le=7 * 86_400)

    @field_validator(*REQUIRED_SETTINGS, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields the caller sent: null would clear a setting the app cannot lack.
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class BasicCredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=4096, repr=False)

    @field_validator("login")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        # RFC 7617: a user-id containing a colon cannot be sent in Basic authentication.
        if ":" in value:
            raise ValueError("must not contain ':' (RFC 7617 Basic credentials)")
        return value


class ConnectionStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: str | None = Field(default=None, pattern=CONNECTION_ID_PATTERN)
    scopes: list[Scope] | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(repr(value)) > 8192:
            raise ValueError("must be smaller than 8 KiB")
        return value


class Report(BaseModel):
    """What a web service answered a runtime that used a token (RFC 6750 §3)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[401, 403]
    www_authenticate: str | None = Field(default=None, max_length=4096)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as `[{field, message}]`, naming each field the way the caller wrote it."""
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in error["loc"]) or "(body)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append({"field": field, "message": message})
    return errors


def is_valid_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None
