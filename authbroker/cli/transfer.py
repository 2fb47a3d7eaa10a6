"""`apps export` and `apps import`: application definitions carried between environments as
one JSON document, never with their secrets; and the pieces `basic export` and `basic import`
share with them."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from authbroker.cli.api import ApiCommand, api_call
from authbroker.cli.base import CliError, as_json
from authbroker.cli.inputs import read_file, write_file
from authbroker.cli.output import emit, note
from authbroker.client import ApiError, AuthbrokerClient


@click.command(
    "export",
    cls=ApiCommand,
    short_help="print application definitions as JSON, without secrets",
    examples="authbroker apps export > apps.json\nauthbroker apps export google crm -o apps.json",
)
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
@api_call
async def export(api: AuthbrokerClient, names: tuple[str, ...], output: str | None) -> None:
    """Print application definitions (every app, or those named) as one JSON document for
    `apps import` in another environment. Secrets are never exported."""
    params = [("name", n) for n in names] or None
    try:
        _, document = await api.request("GET", "/v1/apps/export", params=params)
    except ApiError as exc:
        # A server without the export route answers as if `export` were an app's name.
        if exc.status == 404 and "'export'" in exc.message:
            raise CliError("this authbroker server has no export endpoint; upgrade it") from None
        raise
    await write_document(
        document, output, f"exported {len(document['apps'])} app(s) to {output} (without secrets)"
    )


async def write_document(document: Any, output: str | None, written: str) -> None:
    """An export to stdout, or to the file `output` (saying `written` on stderr)."""
    content = json.dumps(document, indent=2) + "\n"
    if output and output != "-":
        await write_file(output, content)
        note(written)
    else:
        sys.stdout.write(content)
        sys.stdout.flush()


async def read_document(file: str) -> Any:
    """An export document from FILE ('-': stdin)."""
    raw = await read_file(file)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CliError(f"{file} is not JSON: {exc}") from None


@click.command(
    "import",
    cls=ApiCommand,
    short_help="create applications from an export",
    examples="authbroker apps import apps.json\n"
    "authbroker apps import apps.json --replace\n"
    'printf %s "$SECRET" | authbroker apps update google --client-secret-stdin',
)
@click.argument("file", metavar="FILE")
@click.option("--replace", is_flag=True, help="update apps that already exist")
@click.option(
    "--confirm-secret-destination",
    is_flag=True,
    help="admin keys: replaced apps send their stored secrets to changed URLs",
)
@as_json
@api_call
async def import_(
    api: AuthbrokerClient, file: str, replace: bool, confirm_secret_destination: bool, as_json: bool
) -> None:
    """Create the apps of an export document (FILE, or '-' for stdin) that do not exist here;
    existing ones are skipped unless --replace (which updates their settings and keeps their
    secrets). Nothing is imported if any app is invalid. New apps wait for their client
    secret: set it with `authbroker apps update NAME --client-secret-stdin`."""
    await run_import(
        api,
        file,
        "/v1/apps/import",
        replace=replace,
        as_json=as_json,
        what="apps",
        waiting="Imported apps wait for their client secrets (secrets are never exported)",
        set_one="authbroker apps update {} --client-secret-stdin < secret-file",
        params={"confirm_secret_destination": "true"} if confirm_secret_destination else {},
    )


async def run_import(
    api: AuthbrokerClient,
    file: str,
    path: str,
    *,
    replace: bool,
    as_json: bool,
    what: str,
    waiting: str,
    set_one: str,
    params: dict[str, str] | None = None,
) -> None:
    """POST the export document in FILE to `path`, and say what it did to each item: the
    created ones `waiting` for a secret, each with the command (`set_one`) that sets it."""
    document = await read_document(file)
    query = {**(params or {}), **({"replace": "true"} if replace else {})}
    _, result = await api.post(path, document, params=query or None)
    if as_json:
        emit(result)
        return
    for label, key in (
        ("created", "created"),
        ("updated", "updated"),
        ("unchanged", "unchanged"),
        ("skipped (already exist; --replace updates them)", "skipped"),
    ):
        names = result.get(key) or []
        if names:
            print(f"{label}: {', '.join(names)}")
    if not any(result.get(k) for k in ("created", "updated", "unchanged", "skipped")):
        print(f"the document holds no {what}")
    if result.get("created"):
        print(
            f"\n{waiting}; set each one:\n"
            + "\n".join(f"  {set_one.format(n)}" for n in result["created"])
        )
