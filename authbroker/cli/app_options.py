"""The app settings as options of `apps add` and `apps update`, made from their declaration
on AppCreate's fields (`authbroker.schemas.Setting`): a new setting needs nothing here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import click
from pydantic.fields import FieldInfo

from authbroker.cli.base import KEY_VALUE
from authbroker.schemas import APP_SETTINGS, Setting, default_of

# The settings a person gives as options (secrets are never taken from the command line).
OPTIONS = {name: pair for name, pair in APP_SETTINGS.items() if pair[1].help}
# What `apps update` says a repeated option does to the app's whole collection.
REPLACES = {"scopes": "; replaces the app's list", "params": "; the set given replaces the app's"}


# `apps update --clear FIELD`: the settings that are empty by default, and what clearing sends
# (that default). The client secret is replaced, never cleared, from the command line.
CLEARABLE: dict[str, Any] = {
    name: default_of(info)
    for name, (info, setting) in APP_SETTINGS.items()
    if setting.form != "secret" and not info.is_required() and default_of(info) in (None, [], {})
}


def option_of(name: str, setting: Setting) -> str:
    return setting.option or "--" + name.replace("_", "-")


# API field names as the CLI spells them, for error messages.
OPTION_OF = {
    **{name: option_of(name, setting) for name, (_, setting) in OPTIONS.items()},
    "client_secret": "--client-secret-stdin",
    "login": "--login",
    "password": "--password-stdin",
    "connection_id": "--connection-id",
    "metadata": "--metadata",
    "expires_in": "--expires-in",
    "settings": "--setting",
    "preset": "--preset",
    "placeholders": "--placeholder",
}


def _option(name: str, info: FieldInfo, setting: Setting, *, update: bool) -> Callable[..., Any]:
    flag = option_of(name, setting)
    help_ = setting.help or ""
    if setting.form == "check":
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_)
    kwargs: dict[str, Any] = {"metavar": setting.metavar}
    if setting.form in {"scopes", "params"}:
        kwargs["multiple"] = True
        help_ += REPLACES[setting.form] if update else ""
    if setting.form == "params":
        kwargs["type"] = KEY_VALUE
    elif setting.form == "choice":
        kwargs["type"] = click.Choice(get_args(info.annotation))
    elif setting.form == "number":
        kwargs["type"] = int
    return click.option(flag, name, required=setting.required and not update, help=help_, **kwargs)


def app_options(*, update: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One option per setting, in declaration order; on `update` none is required."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for name, (info, setting) in reversed(OPTIONS.items()):
            command = _option(name, info, setting, update=update)(command)
        return command

    return decorate


def split_scopes(values: tuple[str, ...]) -> list[str]:
    """`--scope a --scope "b c"`: each option may hold several scopes separated by spaces."""
    return [scope for value in values for scope in value.split()]


def given_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Take the settings out of a command's parameters: those given, as the API takes them
    (a PATCH sends nothing else)."""
    fields: dict[str, Any] = {}
    for name, (_, setting) in OPTIONS.items():
        value = params.pop(name, None)
        if value is None or value == ():  # a repeatable option not given is ()
            continue
        if setting.form == "scopes":
            value = split_scopes(value)
        elif setting.form == "params":
            value = dict(value)
        fields[name] = value
    return fields
