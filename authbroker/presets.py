"""Provider presets: each provider's quirks as data (presets.json), not code.

A preset fills an app definition with what the provider's documentation says: endpoints, where
client credentials go, extra authorize parameters, default scopes, PKCE, lifetimes. The operator
still supplies the client id and secret, and anything given explicitly wins (see `apply`). A
placeholder the preset marks `per_connection` (Zendesk's subdomain) may be left to each
connection instead (`authbroker.connection_settings`).

The rest of a provider's knowledge is read from here too: how it rotates refresh tokens
(`rotation`, for apps made from its preset), and what it needs before it issues them at all
(`refresh_token_cause`, also for apps whose URLs point at its hosts: `matching`).

The JSON is read once, validated as it is read (a misspelt key in the data file is an error, not
a silently ignored setting), and shipped as package data.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from authbroker.connection_settings import fill, placeholders_in, template_problem

__all__ = [
    "APP_FIELDS",
    "Preset",
    "RefreshTokenCause",
    "Rotation",
    "apply",
    "authorize_params_of",
    "callback_params",
    "checked",
    "get",
    "granted_scopes_at",
    "matching",
    "names",
    "refresh_token_cause",
    "rotation",
    "token_response",
]

APP_FIELDS = (
    "authorization_url",
    "token_url",
    "revoke_url",
    "client_auth",
    "token_request_format",
    "client_assertion_audience",
    "authorize_params",
    "token_params",
    "scope_separator",
    "scopes",
    "pkce",
    "default_token_lifetime",
    "refresh_token_lifetime",
    "issuer",
)
"""The keys a preset may set on an app: a subset of AppCreate's fields."""

_META_FIELDS = frozenset(
    {
        "title",
        "notes",
        "placeholders",
        "placeholder_defaults",
        "per_connection",
        "refresh_token_rotates",
        "refresh_token_reuse_grace",
        "refresh_token_needs",
        "hosts",
        "granted_scopes_at",
        "callback_params",
        "token_response",
    }
)
_NEEDS_FIELDS = frozenset(
    {"scope", "authorize_params", "reissued_with", "grants_page", "not_issued"}
)
"""`refresh_token_needs`: one of the scopes in `scope` must be requested, or the parameters of
`authorize_params` be on the authorize URL; without `reissued_with` the provider issues a refresh
token only at a user's first consent (users withdraw it at `grants_page`); `not_issued` says why
the provider issues none at all."""
_MERGED = frozenset({"authorize_params", "token_params"})
"""Dict-valued settings where the given entries are laid over the preset's instead of replacing
them, so that adding `hd` to Google's authorize_params keeps `access_type=offline`."""

_PLACEHOLDER_VALUE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
"""A tenant, subdomain or host name: it is pasted into URLs, so nothing that could end the host
or start a path, query or userinfo (`/`, `?`, `#`, `@`, `:`) may get in."""


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    values: dict[str, Any]  # app fields only; URLs still hold their {placeholders}
    notes: tuple[str, ...]
    placeholders: tuple[str, ...]
    refresh_token_rotates: bool | None  # None: not documented, or configurable per app
    placeholder_defaults: dict[str, str] = field(default_factory=dict)
    # Seconds a rotated-out refresh token still works (0: one use only; None: not documented).
    # Within it, a refresh whose answer was lost can be retried with the same token.
    refresh_token_reuse_grace: int | None = None
    # Placeholders each connection may fill for itself when the app leaves them out.
    per_connection: tuple[str, ...] = ()


@functools.cache
def _load() -> dict[str, dict[str, Any]]:
    text = resources.files("authbroker").joinpath("presets.json").read_text(encoding="utf-8")
    return checked(json.loads(text))


def checked(data: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The presets' data as read from presets.json, or a ValueError naming what is wrong (a
    test registers a preset of its own through this, with the data file's)."""
    for name, entry in data.items():
        unknown = set(entry) - set(APP_FIELDS) - _META_FIELDS
        if unknown:
            raise ValueError(f"presets.json: {name} has unknown keys {sorted(unknown)}")
        shape = set(entry.get("token_response") or {}) - {"path", "success_field"}
        if shape:
            raise ValueError(
                f"presets.json: {name} has unknown token_response keys {sorted(shape)}"
            )
        used = {p for key in APP_FIELDS for p in placeholders_in(entry.get(key))}
        unknown = set(entry.get("refresh_token_needs", {})) - _NEEDS_FIELDS
        if unknown:
            raise ValueError(f"presets.json: {name} refresh_token_needs has {sorted(unknown)}")
        declared = set(entry.get("placeholders", []))
        if used != declared:
            raise ValueError(
                f"presets.json: {name} uses placeholders {sorted(used)} "
                f"but declares {sorted(declared)}"
            )
        _check_per_connection(name, entry)
    return data


def _check_per_connection(name: str, entry: dict[str, Any]) -> None:
    """A per-connection placeholder is declared, has no default (it would never be asked
    for), and wherever it is used it may be filled by whoever starts a connection: the first
    label of a host the preset fixes (`authbroker.connection_settings`)."""
    for placeholder in entry.get("per_connection", []):
        if placeholder not in entry.get("placeholders", []):
            raise ValueError(
                f"presets.json: {name} per_connection names {placeholder}, not a placeholder"
            )
        if placeholder in entry.get("placeholder_defaults", {}):
            raise ValueError(
                f"presets.json: {name} per_connection {placeholder} must not have a default"
            )
        for key in APP_FIELDS:
            value = entry.get(key)
            if placeholder not in placeholders_in(value):
                continue
            problem = template_problem(value, placeholder) if isinstance(value, str) else None
            if problem or not isinstance(value, str):
                raise ValueError(
                    f"presets.json: {name} {key} cannot take {placeholder} per connection: "
                    f"{problem or 'only a URL can'}"
                )


def names() -> list[str]:
    """The preset names, sorted."""
    return sorted(_load())


def get(name: str) -> Preset:
    """The preset called `name` (a fresh copy: callers may modify it)."""
    entry = _load().get(name)
    if entry is None:
        raise KeyError(f"no preset named {name!r}; known presets: {', '.join(names())}")
    return Preset(
        name=name,
        title=entry.get("title", name),
        values={key: copy.deepcopy(entry[key]) for key in APP_FIELDS if key in entry},
        notes=tuple(entry.get("notes", ())),
        placeholders=tuple(entry.get("placeholders", ())),
        refresh_token_rotates=entry.get("refresh_token_rotates"),
        placeholder_defaults=dict(entry.get("placeholder_defaults", {})),
        refresh_token_reuse_grace=entry.get("refresh_token_reuse_grace"),
        per_connection=tuple(entry.get("per_connection", ())),
    )


@dataclass(frozen=True)
class Rotation:
    """What is known of how an app's provider rotates refresh tokens."""

    rotates: bool | None  # None: unknown (no preset, or configurable at the provider)
    reuse_grace: int | None  # seconds the old token stays usable; None: unknown

    @property
    def may_rotate(self) -> bool:
        """Whether a refused refresh token may be one the provider rotated away."""
        return self.rotates is not False


def callback_params(preset_name: str | None) -> tuple[str, ...]:
    """Parameters of the redirect back from the provider, besides `code` and `state`, that
    runtimes need later (QuickBooks' `realmId`, the company the user picked): kept with the
    connection's provider data."""
    entry = _load().get(preset_name or "")
    return tuple(entry.get("callback_params", ())) if entry else ()


def rotation(preset_name: str | None) -> Rotation:
    """The rotation facts of an app made from preset `preset_name` (unknown without one)."""
    entry = _load().get(preset_name or "")
    if entry is None:
        return Rotation(None, None)
    return Rotation(entry.get("refresh_token_rotates"), entry.get("refresh_token_reuse_grace"))


def matching(preset_name: str | None, *urls: str | None) -> str | None:
    """The preset whose knowledge applies to an app: the one it was made from, else the first
    whose hosts one of its URLs (in the order given) points at. A preset's hosts are its own
    URLs' domains (`accounts.google.com` → `google.com` and its subdomains) and those listed
    under `hosts`, for providers spread over more names or living at the customer's domain."""
    data = _load()
    if preset_name in data:
        return preset_name
    for url in urls:
        host = _host(url)
        if not host:
            continue
        for name in data:
            if any(host == d or host.endswith("." + d) for d in _domains(name)):
                return name
    return None


@functools.cache
def _domains(name: str) -> tuple[str, ...]:
    entry = _load()[name]
    found = list(entry.get("hosts", ()))
    for key in ("authorization_url", "token_url"):
        labels = _host(entry.get(key)).split(".")
        literal = [label for label in labels if "{" not in label]
        if len(literal) == len(labels) and len(labels) >= 3:
            literal = literal[1:]  # login.example.com → example.com
        if len(literal) >= 2 and ".".join(literal) not in found:
            found.append(".".join(literal))
    return tuple(found)


def _host(url: str | None) -> str:
    try:
        return (urlsplit(url or "").hostname or "").lower()
    except ValueError:
        return ""


def granted_scopes_at(preset_name: str | None) -> str | None:
    """How to see at the provider which scopes a token carries, where its preset says."""
    return _load().get(preset_name or "", {}).get("granted_scopes_at")


Cause = Literal[
    "refresh_not_enabled", "issued_once_per_user", "provider_without_refresh", "unknown"
]


@dataclass(frozen=True)
class RefreshTokenCause:
    """Why a provider likely issues no refresh token to an app, and what to do about it."""

    cause: Cause
    advice: str


UNKNOWN_REFRESH_ADVICE = (
    "The provider may not support refresh tokens, refresh may need enabling in its application "
    "settings (often an 'offline access' scope or option), or it issues a refresh token once per "
    "user: revoke the previous grant in the user's account settings at the provider, then "
    "authorize the connection again."
)
WITHOUT_REFRESH_ADVICE = (
    " Where the access token expires, the integration works until then and the user must "
    "authorize again: it cannot run unattended on one shared user's grant."
)


def refresh_token_cause(
    *,
    preset: str | None,
    authorization_url: str,
    token_url: str,
    authorize_params: Mapping[str, str],
    scopes: Sequence[str],
) -> RefreshTokenCause:
    """What the app's provider needs before it issues refresh tokens, judged against the app's
    settings (`scopes`: those requested). `authorize_params` are laid over the parameters the
    authorization URL already carries, as the authorize request does."""
    name = matching(preset, token_url, authorization_url)
    needs = _load()[name].get("refresh_token_needs") if name else None
    if not needs:
        return RefreshTokenCause("unknown", UNKNOWN_REFRESH_ADVICE)
    provider = _load()[name].get("title", name).split(" (")[0]
    if needs.get("not_issued"):
        return RefreshTokenCause(
            "provider_without_refresh", needs["not_issued"] + WITHOUT_REFRESH_ADVICE
        )
    wanted = needs.get("scope") or []
    if wanted and not set(wanted) & set(scopes):
        scope = wanted[0] + (f" (or {' or '.join(wanted[1:])})" if wanted[1:] else "")
        return RefreshTokenCause(
            "refresh_not_enabled",
            f"{provider} issues refresh tokens only with the {scope} scope: add it to the "
            "app's scopes (and allow it in the provider's application), then authorize the "
            "connection again.",
        )
    params = authorize_params_of(authorization_url, authorize_params)
    required, reissue = needs.get("authorize_params", {}), needs.get("reissued_with", {})
    if any(params.get(key) != value for key, value in required.items()):
        return RefreshTokenCause(
            "refresh_not_enabled",
            f"{provider} issues refresh tokens only when the authorize URL carries "
            f"{_pairs(required)}: add authorize_params {_pairs({**required, **reissue})} to the "
            "app, then authorize the connection again.",
        )
    if any(value not in params.get(key, "").split() for key, value in reissue.items()):
        page = needs.get("grants_page")
        return RefreshTokenCause(
            "issued_once_per_user",
            f"{provider} issues the refresh token only at a user's first consent: add "
            f"authorize_params {_pairs(reissue)}, or have the user remove the app's access "
            + (f"at {page}" if page else "in their account settings at the provider")
            + ", then authorize again.",
        )
    return RefreshTokenCause("unknown", UNKNOWN_REFRESH_ADVICE)


def authorize_params_of(
    authorization_url: str, authorize_params: Mapping[str, str]
) -> dict[str, str]:
    """The parameters an authorize request carries besides the protocol's: those fixed in the
    authorization URL's query, overlaid by the app's `authorize_params`."""
    params = dict(parse_qsl(urlsplit(authorization_url).query, keep_blank_values=True))
    params.update({str(k): str(v) for k, v in authorize_params.items()})
    return params


def _pairs(params: Mapping[str, str]) -> str:
    return " and ".join(f"{key}={value}" for key, value in params.items())


def token_response(preset_name: str | None) -> dict[str, Any]:
    """How the provider of an app made from `preset_name` departs from RFC 6749 §5.1 in its
    token answers (`path` of nested tokens, `success_field`), as `oauth.TokenShape.of` reads
    it; {} without a preset or where the provider keeps to the RFC."""
    entry = _load().get(preset_name or "")
    return dict(entry.get("token_response") or {}) if entry else {}


def apply(
    name: str, given: dict[str, Any], placeholders: dict[str, str] | None = None
) -> dict[str, Any]:
    """The app definition: the preset's values overlaid by `given`, plus `"preset": name`.

    Anything in `given` wins, `None` included (`revoke_url: None` removes the preset's). The one
    exception is `authorize_params` and `token_params`: the given entries are merged over the
    preset's rather than replacing them; to drop a preset parameter, override the whole app field
    after `apply`. Given scopes replace the preset's default scopes.

    `{placeholders}` in the preset's values are filled from `placeholders`, then from the preset's
    defaults (Microsoft's tenant is "common"); a missing one is a ValueError naming it, unless the
    preset marks it per connection (`per_connection`, Zendesk's subdomain): it then stays in the
    URLs and the app takes it from each connection (`connection_settings`). Values in `given`
    are taken as they are.
    """
    preset = get(name)
    if given.get("preset", name) != name:
        raise ValueError(f"given preset {given['preset']!r} differs from {name!r}")
    filled = _fill_placeholders(preset, placeholders or {})
    app = {key: _substitute(value, filled) for key, value in preset.values.items()}
    per_connection = [p for p in preset.per_connection if p not in filled]
    if per_connection:
        app["connection_settings"] = per_connection
    for key, value in given.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(app.get(key), dict):
            app[key] = {**app[key], **value}
        else:
            app[key] = value
    app["preset"] = name
    return app


def _fill_placeholders(preset: Preset, given: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(given) - set(preset.placeholders))
    if unknown:
        expected = ", ".join(preset.placeholders) or "none"
        raise ValueError(
            f"preset {preset.name} has no placeholder {', '.join(unknown)} (it takes: {expected})"
        )
    filled = {}
    for placeholder in preset.placeholders:
        if placeholder in preset.per_connection and placeholder not in given:
            continue  # left to each connection
        value = given.get(placeholder) or preset.placeholder_defaults.get(placeholder)
        if not value:
            raise ValueError(
                f"preset {preset.name} needs {placeholder}: "
                f"pass placeholders={{'{placeholder}': ...}}"
            )
        if not isinstance(value, str) or not _PLACEHOLDER_VALUE.match(value):
            raise ValueError(
                f"preset {preset.name}: {placeholder} {value!r} must be a name such as "
                "'contoso' or 'example.okta.com' (letters, digits, dots and hyphens)"
            )
        filled[placeholder] = value
    return filled


def _substitute(value: Any, filled: dict[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, filled)
    if isinstance(value, dict):
        return {k: _substitute(v, filled) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, filled) for v in value]
    return value
