"""The `authbroker` command: run the service, migrate, manage keys, and drive the HTTP API
(apps, basic, connections, events, webhooks, API keys) for a person at a terminal.

One module per job: `serve` (run, web, worker, migrate), `admin` (encryption keys, on the
database itself), `api_keys` (through the API, or on the database for the first key), one per
API subject (`apps`, `basic`, `connections`, `events`, `webhooks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

import click
import structlog

from authbroker import __version__
from authbroker.cli import admin, api_keys, apps, basic, connections, events, serve, webhooks
from authbroker.cli.api import CONNECTING
from authbroker.cli.base import Call, CliError, Group
from authbroker.config import SettingsError, load_settings
from authbroker.embedded import EmbeddedError
from authbroker.logs import configure_logging


@click.group(
    "authbroker",
    cls=Group,
    examples="authbroker run                                # try it: everything in one process\n"
    "authbroker apps add google --preset google --client-id ID\n"
    "authbroker connections connect google --wait\n"
    "authbroker events tail",
    epilog="The service reads its settings from AUTHBROKER_* environment variables (see "
    "README).\nCommands that use the API (apps, basic, connections, events, webhooks, api-keys) "
    "find it this way:\n"
    + CONNECTING
    + "\n`authbroker COMMAND --help` shows each command's options and examples.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    subcommand_metavar="COMMAND [ARGS]...",
)
@click.version_option(__version__, message="authbroker %(version)s")
def cli() -> None:
    """Keeps integrations authenticated: OAuth 2.0 connections and Basic credentials,
    refreshed, watched and revoked."""


for command in (
    serve.run,
    serve.web,
    serve.worker,
    serve.migrate_command,
    admin.keys,
    api_keys.api_keys,
    apps.apps,
    basic.basic,
    connections.connections,
    events.events,
    webhooks.webhooks,
):
    cli.add_command(command)


def parse(argv: Sequence[str] | None = None) -> Call | int:
    """The Call a command line asks for, or the exit code when it asked for help or the
    version (already printed). A bad command line raises click.UsageError."""
    return cli.main(list(argv) if argv is not None else None, "authbroker", standalone_mode=False)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        call = parse(argv)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    if not isinstance(call, Call):
        return call or 0
    return run(call)


def run(call: Call) -> int:
    """Run a parsed command line: its failures become a message on stderr and an exit code
    (2 for the configuration, 1 for the rest, 130 when interrupted)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    if not call.quiet:
        configure_logging(settings.log_format, settings.log_level)
    elif not structlog.is_configured():
        # API commands print their own output; only warnings from libraries reach the log.
        configure_logging(settings.log_format, "warning")
    try:
        code = asyncio.run(call.run(settings))
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CliError, EmbeddedError) as exc:
        print(f"authbroker: {exc}", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        # Options that only conflict once read together (a command checks them as it runs).
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `authbroker events tail | head`: the reader left; that is not an error.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code or 0
