"""Where `apps add` finds an app's defaults: the provider presets (`apps presets` lists them)
and the provider's published metadata (`--discover`)."""

from __future__ import annotations

from typing import Any

import click

from authbroker import discovery, presets
from authbroker.cli.api import ApiCommand
from authbroker.cli.base import CliError, as_json, offline
from authbroker.cli.output import details, emit, note
from authbroker.client import AuthbrokerClient


async def discover(api: AuthbrokerClient, issuer: str) -> tuple[dict[str, Any], Any]:
    """The settings ISSUER's metadata gives, and the scopes it says it supports."""
    try:
        found = await discovery.discover(api.session, issuer, timeout=min(api.timeout, 30.0))
    except discovery.DiscoveryError as exc:
        raise CliError(
            f"discovery at {issuer} failed: {exc}\n"
            "give the endpoints with --authorization-url and --token-url instead"
        ) from None
    # Keys starting with "_" are for display; empty values (discovery leaves scopes to the
    # operator) must not override a preset's.
    fields = {k: v for k, v in found.items() if not k.startswith("_") and v is not None and v != []}
    if found.get("_metadata_url"):
        note(f"read the provider's metadata from {found['_metadata_url']}")
    return fields, found.get("_scopes_supported")


def preset_notes(name: str) -> tuple[str, ...]:
    """The preset's notes for the operator."""
    try:
        return tuple(presets.get(name).notes or ())
    except KeyError:
        return ()


def _unknown(exc: KeyError, name: str) -> CliError:
    message = exc.args[0] if exc.args else f"no preset named {name!r}"
    return CliError(f"{message} (list them: authbroker apps presets)")


def preview(name: str, given: dict[str, Any], placeholders: dict[str, str] | None) -> Any:
    """What the server will make of a preset and the given values (for --dry-run)."""
    try:
        return presets.apply(name, given, placeholders or None)
    except KeyError as exc:
        raise _unknown(exc, name) from None
    except ValueError as exc:
        raise CliError(f"{exc} (give it with --placeholder NAME=VALUE)") from None


@click.command(
    "presets",
    cls=ApiCommand,
    short_help="list provider presets with their notes",
    examples="authbroker apps presets\nauthbroker apps presets google",
)
@click.argument("name", required=False)
@as_json
@offline
async def list_presets(name: str | None, as_json: bool) -> int | None:
    """List the provider presets `apps add --preset` starts from, with their notes; name one
    to see its settings and placeholders."""
    if name:
        try:
            preset = presets.get(name)
        except KeyError as exc:
            raise _unknown(exc, name) from None
        view = _preset_view(name, preset)
        if as_json:
            emit(view)
            return None
        print(details([("preset", name), ("title", view["title"])]))
        if view["placeholders"]:
            print(
                "placeholders: "
                + ", ".join(view["placeholders"])
                + "  (give them with --placeholder NAME=VALUE)"
            )
        if view["per_connection"]:
            print(
                "per connection: "
                + ", ".join(view["per_connection"])
                + "  (left out, each connection gives it: connections connect APP --setting "
                "NAME=VALUE)"
            )
        print(details(sorted(view["values"].items())))
        for line in view["notes"]:
            print(f"note: {line}")
        print(f"\nadd an app from it: authbroker apps add NAME --preset {name} --client-id ID")
        return None
    views = [_preset_view(n, presets.get(n)) for n in presets.names()]
    if as_json:
        emit(views)
        return None
    for index, view in enumerate(views):
        if index:
            print()
        title = f"{view['name']}  {view['title']}"
        if view["placeholders"]:
            title += f"  (placeholders: {', '.join(view['placeholders'])})"
        print(title)
        for line in view["notes"]:
            print(f"    {line}")
    return None


def _preset_view(name: str, preset: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": getattr(preset, "title", name),
        "notes": list(getattr(preset, "notes", ()) or ()),
        "placeholders": list(getattr(preset, "placeholders", ()) or ()),
        "per_connection": list(getattr(preset, "per_connection", ()) or ()),
        "values": dict(getattr(preset, "values", {}) or {}),
    }
