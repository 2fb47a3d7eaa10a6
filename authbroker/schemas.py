"""What operators may write: application and credential definitions, validated once for the
API, the CLI and imports alike.

Unknown fields are errors rather than silently dropped: a misspelt `client_auht` must not leave
an app sending credentials the wrong way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from authbroker import connection_settings, netguard, webhooks
from authbroker.config import is_loopback
from authbroker.oauth import ClientAuth, KeyAlgorithm, TokenRequestFormat
from authbroker.roles import APP_LIMITED, Role
from authbroker.states import CONNECT_LINK_LIFETIME, CONNECT_LINK_MAX_LIFETIME

FormKind = Literal[
    "text", "number", "scopes", "separator", "choice", "params", "check", "secret", "secrets"
]
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
SettingName = Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]


@dataclass(frozen=True)
class Setting:
    """How a person gives an app setting, attached to its AppCreate field: `form` is how the
    console's form shows and reads it; `help` (with `metavar`) makes it an option of
    `authbroker apps add` and `apps update`, spelt `option` or else --field-name; `required`:
    `apps add` needs it even from a preset. No `help`: no option (secrets are never taken from
    the command line)."""

    form: FormKind
    metavar: str | None = None
    help: str | None = None
    option: str | None = None
    required: bool = False


def check_url(value: str, *, allow_http: bool, rules: netguard.Rules | None = None) -> str:
    """An absolute https URL (http only for loopback hosts or with AUTHBROKER_ALLOW_HTTP=1),
    never an address the outbound `rules` forbid however spelt (by default: metadata and
    link-local ones; names are resolved by the caller: see `netguard.resolved_reason`)."""
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
    reason = netguard.host_reason(host, rules or netguard.Rules())
    if reason:
        raise ValueError(f"host {host} {reason}")
    return value


def _checked_url(value: str | None, info: ValidationInfo) -> str | None:
    """`check_url` under the deployment's policy, given as validation context (an issuer may
    carry no query, RFC 8414 §2)."""
    if value is None:
        return None
    context = info.context or {}
    if info.field_name == "issuer" and urlsplit(value).query:
        raise ValueError("must not have a query (RFC 8414 §2)")
    return check_url(value, allow_http=bool(context.get("allow_http")), rules=context.get("rules"))


class _AppFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator(
        "authorization_url",
        "token_url",
        "revoke_url",
        "probe_url",
        "issuer",
        mode="after",
        check_fields=False,
    )
    @classmethod
    def _urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked_url(value, info)

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


TEN_YEARS = 10 * 365 * 86_400
SecretText = Annotated[str, Field(min_length=1, max_length=4096)]


# An application's definition. Each setting carries a `Setting`: AppUpdate, the CLI's options
# and the console's form handling are all read from these fields, so a new setting is one field
# here. (No docstring: it would become the API document's description of the request body.)
class AppCreate(_AppFields):
    name: Name
    client_id: Annotated[
        str, Setting("text", "ID", "the client id the provider issued", required=True)
    ] = Field(min_length=1, max_length=512)
    client_secret: Annotated[str | None, Setting("secret")] = Field(
        default=None, min_length=1, max_length=4096, repr=False
    )
    client_secrets_previous: Annotated[list[SecretText], Setting("secrets")] = Field(
        default_factory=list, max_length=5, repr=False
    )
    authorization_url: Annotated[
        str | None,
        Setting(
            "text",
            "URL",
            "the provider's authorize endpoint (absent: service connections only, grant "
            "client_credentials)",
        ),
    ] = Field(default=None, max_length=2048)
    token_url: Annotated[str, Setting("text", "URL", "the provider's token endpoint")] = Field(
        max_length=2048
    )
    revoke_url: Annotated[str | None, Setting("text", "URL", "RFC 7009 revocation endpoint")] = (
        Field(default=None, max_length=2048)
    )
    # Placeholders each connection fills: `{name}` as the first label of the URLs' host
    # (authbroker/connection_settings.py). A list of words, so shown and read like scopes.
    connection_settings: Annotated[
        list[SettingName],
        Setting(
            "scopes",
            "NAME",
            "a value each connection gives: {NAME} as the first label of the URLs' host (repeat)",
            option="--connection-setting",
        ),
    ] = Field(default_factory=list, max_length=5)
    scopes: Annotated[
        list[Scope],
        Setting(
            "scopes",
            "SCOPE",
            "a scope to request (repeat, or quote several separated by spaces)",
            option="--scope",
        ),
    ] = Field(default_factory=list, max_length=100)
    scope_separator: Annotated[
        Separator, Setting("separator", "SEP", "between scopes (default: a space)")
    ] = " "
    client_auth: Annotated[
        ClientAuth,
        Setting(
            "choice",
            help="how the client authenticates at the token endpoint: its id and secret in the "
            "body (default), a Basic header or the query; auto (Basic, then the body); or a "
            "signed JWT: private_key_jwt (the app's key) or client_secret_jwt (HS256)",
        ),
    ] = "body"
    token_request_format: Annotated[
        TokenRequestFormat,
        Setting("choice", help="how token and revocation request bodies are encoded (form)"),
    ] = "form"
    client_assertion_audience: Annotated[
        str | None,
        Setting("text", "AUD", "the aud of JWT client assertions (default: the token URL)"),
    ] = Field(default=None, min_length=1, max_length=2048)
    jwks_public: Annotated[
        bool,
        Setting("check", help="serve the app's public keys at /oauth/jwks/NAME (default off)"),
    ] = False
    authorize_params: Annotated[
        Params,
        Setting(
            "params",
            "KEY=VALUE",
            "extra authorize URL parameter (repeat)",
            option="--authorize-param",
        ),
    ] = Field(default_factory=dict)
    token_params: Annotated[
        Params,
        Setting(
            "params", "KEY=VALUE", "extra token request parameter (repeat)", option="--token-param"
        ),
    ] = Field(default_factory=dict)
    pkce: Annotated[bool, Setting("check", help="send a PKCE challenge (default on)")] = True
    refresh_margin: Annotated[int, Setting("number", "S", "refresh S seconds early (300)")] = Field(
        default=300, ge=0, le=86_400
    )
    default_token_lifetime: Annotated[
        int | None,
        Setting("number", "S", "lifetime assumed when a token response has no expires_in"),
    ] = Field(default=None, gt=0, le=TEN_YEARS)
    refresh_token_lifetime: Annotated[
        int | None, Setting("number", "S", "how long refresh tokens live")
    ] = Field(default=None, gt=0, le=TEN_YEARS)
    probe_url: Annotated[str | None, Setting("text", "URL", "a URL to check tokens against")] = (
        Field(default=None, max_length=2048)
    )
    probe_interval: Annotated[int | None, Setting("number", "S", "seconds between probes")] = Field(
        default=None, ge=60, le=7 * 86_400
    )
    # Connections without a refresh token: a bare 401 that nothing confirms is evidence only.
    reports_to_invalidate: Annotated[
        int,
        Setting(
            "number",
            "N",
            "for tokens without a refresh token: this many bare 401 reports within an hour, "
            "unconfirmed by a probe, mark the connection token_revoked (3)",
        ),
    ] = Field(default=3, ge=1, le=100)
    # RFC 9207: a callback carrying `iss` must name this issuer (compared as strings).
    issuer: Annotated[
        str | None,
        Setting("text", "URL", "the authorization server's issuer: a callback's iss must equal it"),
    ] = Field(default=None, max_length=2048)
    require_iss: Annotated[
        bool,
        Setting(
            "check",
            help="refuse callbacks without iss (the provider's metadata says it always sends "
            "it: authorization_response_iss_parameter_supported)",
        ),
    ] = False
    reconnect_links: Annotated[
        bool,
        Setting(
            "check",
            help="put a fresh connect link (data.reconnect_url) in the events whose remedy is "
            "to authorize again (default off)",
        ),
    ] = False
    # The provider preset the definition started from (informational once applied).
    preset: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _templates(self) -> Self:
        """The URLs and `connection_settings` agree, each setting where it may be filled by
        whoever starts a connection; an error names the field at fault."""
        errors = connection_settings.template_errors(self.__dict__)
        if errors:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "value_error", "{reason}", {"reason": e["message"]}
                        ),
                        loc=(e["field"],),
                        input=getattr(self, e["field"]),
                    )
                    for e in errors
                ],
            )
        return self


def _settings_of(model: type[BaseModel]) -> dict[str, tuple[FieldInfo, Setting]]:
    found = {}
    for name, info in model.model_fields.items():
        setting = next((m for m in info.metadata if isinstance(m, Setting)), None)
        if setting is not None:
            found[name] = (info, setting)
    return found


# The app settings in declaration order: each AppCreate field that carries a `Setting`.
APP_SETTINGS: dict[str, tuple[FieldInfo, Setting]] = _settings_of(AppCreate)


def default_of(info: FieldInfo) -> Any:
    """What a setting is when it is not given (None for the required ones)."""
    return None if info.is_required() else info.get_default(call_default_factory=True)


def nullable_on_update(name: str) -> bool:
    """Whether a PATCH may send null: it clears a setting that may be absent (default None)
    and the secrets; every other setting an app cannot lack."""
    info, setting = APP_SETTINGS[name]
    return setting.form in {"secret", "secrets"} or info.default is None


def _refuse_null(cls: type[BaseModel], value: Any) -> Any:
    # Runs only for fields the caller sent: null would clear a setting the app cannot lack.
    if value is None:
        raise ValueError("cannot be null")
    return value


class _AppChanges(_AppFields):
    # Not a setting: an admin's confirmation that the changed URLs may receive the app's secrets
    # (services/apps.py, the `secret_destination` rule).
    confirm_secret_destination: bool = Field(
        default=False,
        description="Admin keys: send the stored client secret and tokens to the changed URLs "
        "without giving the secret again.",
    )

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name != "confirm_secret_destination"
        }


def _null_refused(not_null: list[str]) -> Callable[[dict[str, Any]], None]:
    """AppUpdate's JSON Schema: its optional types admit null, its validator refuses null for
    the settings an app cannot lack; the schema says so too."""

    def adjust(schema: dict[str, Any]) -> None:
        properties = schema["properties"]
        for name in not_null:
            prop = properties[name]
            variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
            if len(variants) == 1:
                rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
                properties[name] = {**variants[0], **rest}

    return adjust


def _update_model() -> type[_AppChanges]:
    """AppCreate's settings, each optional with no default: only the fields given change."""
    fields: dict[str, Any] = {
        name: (info.rebuild_annotation() | None, Field(default=None, repr=info.repr))
        for name, (info, _) in APP_SETTINGS.items()
    }
    not_null = [name for name in fields if not nullable_on_update(name)]

    class Base(_AppChanges):
        model_config = ConfigDict(json_schema_extra=_null_refused(not_null))

    return create_model(
        "AppUpdate",
        __base__=Base,
        __module__=__name__,
        __doc__="A PATCH: only the fields given change; `null` clears the optional ones.",
        __validators__={"_not_null": field_validator(*not_null, mode="before")(_refuse_null)},
        **fields,
    )


AppUpdate = _update_model()


class _BasicLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=1, max_length=1024)

    @field_validator("login")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        # RFC 7617: a user-id containing a colon cannot be sent in Basic authentication.
        if ":" in value:
            raise ValueError("must not contain ':' (RFC 7617 Basic credentials)")
        return value


class BasicCredentialIn(_BasicLogin):
    password: str = Field(min_length=1, max_length=4096, repr=False)


class BasicDefinition(_BasicLogin):
    """A Basic credential as an export carries it: its name and login, never its password."""

    name: Name


class KeyCreate(BaseModel):
    """A new signing key for private_key_jwt: generated, or the operator's own."""

    model_config = ConfigDict(extra="forbid")

    alg: KeyAlgorithm | None = Field(
        default=None,
        description="RS256 (RSA 2048) or ES256 (P-256). Generated keys: RS256 unless given; "
        "an uploaded key's algorithm follows from the key and must agree.",
    )
    private_key_pem: str | None = Field(
        default=None,
        min_length=1,
        max_length=16_384,
        repr=False,
        description="An unencrypted PEM private key (RSA of 2048 bits or more, or EC P-256) to "
        "use instead of a generated one. Write-only: never shown again.",
    )
    keep_previous: bool = Field(
        default=True,
        description="Keep the key this one replaces as the previous key (tried after the new "
        "one, and published, until the next change); false drops it at once.",
    )


Grant = Literal["authorization_code", "client_credentials"]
ConnectionSettings = dict[
    Annotated[str, Field(max_length=64)],
    # A host label: case means nothing to DNS, so `ACME` and `acme` are one account (a
    # re-authorization with either is not a move to another one).
    Annotated[str, Field(max_length=255), AfterValidator(str.lower)],
]


def _resource(value: str) -> str:
    """RFC 8707 §2: an absolute URI without a fragment."""
    parts = urlsplit(value)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError("must be an absolute URI (RFC 8707 §2), such as https://api.example.com")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a fragment (RFC 8707 §2)")
    return value


Resource = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_resource)]


class ConnectionStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: str | None = Field(default=None, pattern=CONNECTION_ID_PATTERN)
    grant: Grant = Field(
        default="authorization_code",
        description="`authorization_code`: a user authorizes (the answer holds the URL to send "
        "them to). `client_credentials` (RFC 6749 §4.4): a service connection for the client "
        "itself, no user; a worker requests its token at once and each next one before expiry.",
    )
    scopes: list[Scope] | None = Field(
        default=None, max_length=100, description="Absent: the app's scopes."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    audience: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="client_credentials only: the `audience` token request parameter (Auth0 "
        "and others name the API the token is for with it).",
    )
    resource: list[Resource] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="client_credentials only: RFC 8707 resource indicators, absolute URIs of "
        "the APIs the token is for (sent as repeated `resource` parameters).",
    )
    token_params: Params | None = Field(
        default=None,
        max_length=20,
        description="client_credentials only: more token request parameters of this "
        "connection (they win over the app's token_params).",
    )
    settings: ConnectionSettings | None = Field(
        default=None,
        max_length=5,
        description="Values of the app's `connection_settings` for this connection, each one "
        'DNS label (`{"subdomain": "acme"}`): its URLs are filled with them. Required when the '
        "app has connection settings; a re-authorization without them keeps the connection's.",
    )

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(repr(value)) > 8192:
            raise ValueError("must be smaller than 8 KiB")
        return value

    @field_validator("token_params", mode="after")
    @classmethod
    def _params(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        clash = sorted(set(value or {}) & (PROTOCOL_PARAMS | {"audience", "resource"}))
        if clash:
            raise ValueError(
                f"must not set {', '.join(clash)} (protocol parameters; audience and resource "
                "have fields of their own)"
            )
        return value

    @model_validator(mode="after")
    def _grant_fields(self) -> ConnectionStart:
        if self.grant != "client_credentials":
            given = [
                f for f in ("audience", "resource", "token_params") if f in self.model_fields_set
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only for the client_credentials grant (an "
                    "authorization code app takes them as its own token_params)"
                )
        return self

    def request_params(self) -> dict[str, str | list[str]] | None:
        """The connection's own token request parameters, as stored (None: none)."""
        found: dict[str, str | list[str]] = dict(self.token_params or {})
        if self.audience is not None:
            found["audience"] = self.audience
        if self.resource:
            found["resource"] = list(dict.fromkeys(self.resource))
        return found or None


class ConnectLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: str | None = Field(
        default=None,
        pattern=CONNECTION_ID_PATTERN,
        description="The connection the link authorizes (again, if it exists); absent: a new "
        "connection id is made now and answered.",
    )
    scopes: list[Scope] | None = Field(
        default=None,
        max_length=100,
        description="Absent: the scopes the connection asked for last, or the app's.",
    )
    settings: ConnectionSettings | None = Field(
        default=None,
        max_length=5,
        description="Values of the app's `connection_settings` the link authorizes with; "
        "absent: the connection's own (required for a new connection of such an app).",
    )
    expires_in: int = Field(
        default=CONNECT_LINK_LIFETIME,
        ge=60,
        le=CONNECT_LINK_MAX_LIFETIME,
        description="Seconds until the link expires (default 7 days, at most 30).",
    )


class Report(BaseModel):
    """What a web service answered a runtime that used a token (RFC 6750 §3)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[401, 403]
    www_authenticate: str | None = Field(default=None, max_length=4096)


EventFilter = Annotated[str, Field(min_length=1, max_length=64)]
DAY = 86_400


def without_default(schema: dict[str, Any]) -> None:
    """A JSON Schema adjustment: a field's default (null) is how it is left out, not a value."""
    schema.pop("default", None)


class _WebhookFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("url", mode="after", check_fields=False)
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked_url(value, info)

    @field_validator("types", mode="after", check_fields=False)
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [t for t in value if not webhooks.valid_filter(t)]
        if unknown:
            raise ValueError(
                f"unknown event type {unknown[0]!r}: name a type (connection.refreshed, …) or a "
                f"prefix ({', '.join(webhooks.PREFIXES)})"
            )
        return list(dict.fromkeys(value))

    @field_validator("apps", mode="after", check_fields=False)
    @classmethod
    def _apps(cls, value: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(value)) if value is not None else None


# A webhook subscription. (No docstring: it would become the API document's description of
# the request body.)
class WebhookCreate(_WebhookFields):
    url: str = Field(
        max_length=2048,
        description="Where events are POSTed: https (http only for loopback hosts, or with "
        "AUTHBROKER_ALLOW_HTTP=1); never a link-local or metadata address.",
    )
    types: list[EventFilter] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Event types, or prefixes ending in `.` (`connection.`); absent: every type.",
    )
    apps: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=200, description="App names; absent: every app."
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookUpdate(_WebhookFields):
    """A PATCH: only the fields given change. `types` or `apps` null: every type or app."""

    # None only when left out: null is refused (a subscription cannot lack a URL or a state),
    # and the document shows no null default.
    url: str = Field(  # type: ignore[assignment]
        default=None, max_length=2048, json_schema_extra=without_default
    )
    types: list[EventFilter] | None = Field(default=None, min_length=1, max_length=50)
    apps: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        default=None, min_length=1, max_length=200
    )
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = Field(  # type: ignore[assignment]
        default=None,
        json_schema_extra=without_default,
        description="false stops deliveries (pending ones are abandoned); true resumes them "
        "for events from then on.",
    )

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    previous_expires_in: int = Field(
        default=DAY,
        ge=0,
        le=7 * DAY,
        description="Seconds the previous secret keeps signing beside the new one (0: drop it "
        "now).",
    )


class ApiKeyCreate(BaseModel):
    """A new API key: who uses it, its role, and for runtime keys the apps it is limited to
    (app or Basic credential names; none: every app)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Role
    apps: list[Name] | None = Field(default=None, max_length=100)

    @field_validator("apps")
    @classmethod
    def _apps(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        role = info.data.get("role")
        if value and role is not None and role not in APP_LIMITED:
            limited = ", ".join(sorted(APP_LIMITED))
            raise ValueError(f"only {limited} keys are limited to apps; {role} keys reach all")
        return sorted(set(value)) if value else None


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
