"""Provider presets: each provider's quirks as data (presets.json), not code.

A preset fills an app definition with what the provider's documentation says: endpoints, where
client credentials go, extra authorize parameters, default scopes, PKCE, lifetimes. The operator
still supplies the client id and secret, and anything given explicitly wins (see `apply`).

The JSON is read once, validated as it is read (a misspelt key in the data file is an error, not
a silently ignored setting), and shipped as package data.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

__all__ = ["APP_FIELDS", "Preset", "Rotation", "apply", "get", "names", "rotation"]

APP_FIELDS = (
    "authorization_url",
    "token_url",
    "revoke_url",
    "client_auth",
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
        "refresh_token_rotates",
        "refresh_token_reuse_grace",
    }
)
_MERGED = frozenset({"authorize_params", "token_params"})
"""Dict-valued settings where the given entries are laid over the preset's instead of replacing
them, so that adding `hd` to Google's authorize_params keeps `access_type=offline`."""

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
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


@functools.cache
def _load() -> dict[str, dict[str, Any]]:
    text = resources.files("authbroker").joinpath("presets.json").read_text(encoding="utf-8")
    data = json.loads(text)
    for name, entry in data.items():
        unknown = set(entry) - set(APP_FIELDS) - _META_FIELDS
        if unknown:
            raise ValueError(f"presets.json: {name} has unknown keys {sorted(unknown)}")
        used = {p for key in APP_FIELDS for p in _placeholders_in(entry.get(key))}
        declared = set(entry.get("placeholders", []))
        if used != declared:
            raise ValueError(
                f"presets.json: {name} uses placeholders {sorted(used)} "
                f"but declares {sorted(declared)}"
            )
    return data


def _placeholders_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return {p for v in value.values() for p in _placeholders_in(v)}
    if isinstance(value, list):
        return {p for v in value for p in _placeholders_in(v)}
    return set()


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


def rotation(preset_name: str | None) -> Rotation:
    """The rotation facts of an app made from preset `preset_name` (unknown without one)."""
    entry = _load().get(preset_name or "")
    if entry is None:
        return Rotation(None, None)
    return Rotation(entry.get("refresh_token_rotates"), entry.get("refresh_token_reuse_grace"))


def apply(
    name: str, given: dict[str, Any], placeholders: dict[str, str] | None = None
) -> dict[str, Any]:
    """The app definition: the preset's values overlaid by `given`, plus `"preset": name`.

    Anything in `given` wins, `None` included (`revoke_url: None` removes the preset's). The one
    exception is `authorize_params` and `token_params`: the given entries are merged over the
    preset's rather than replacing them; to drop a preset parameter, override the whole app field
    after `apply`. Given scopes replace the preset's default scopes.

    `{placeholders}` in the preset's values are filled from `placeholders`, then from the preset's
    defaults (Microsoft's tenant is "common"); a missing one is a ValueError naming it. Values
    in `given` are taken as they are.
    """
    preset = get(name)
    if given.get("preset", name) != name:
        raise ValueError(f"given preset {given['preset']!r} differs from {name!r}")
    filled = _fill_placeholders(preset, placeholders or {})
    app = {key: _substitute(value, filled) for key, value in preset.values.items()}
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
        return _PLACEHOLDER.sub(lambda m: filled.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: _substitute(v, filled) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, filled) for v in value]
    return value
