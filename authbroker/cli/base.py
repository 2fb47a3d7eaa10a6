"""What every `authbroker` command is built from: help that ends with examples, the value types
and options several commands share, and the Call a command line parses to.

Parsing and running are apart: a command's click callback only returns a Call, which
`authbroker.cli.main` runs once the settings have loaded. So a mistyped option never starts
anything, and a command line can be checked without running it (`authbroker.cli.parse`).
"""

from __future__ import annotations

import functools
import inspect
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click

from authbroker.config import Settings


class CliError(Exception):
    """A user-facing failure: printed to stderr, exit code 1."""


@dataclass(frozen=True)
class Call:
    """A parsed command line: what to run with the settings. `quiet`: the command prints its
    own output, so only warnings from libraries reach the log."""

    run: Callable[[Settings], Awaitable[int | None]]
    quiet: bool
    params: dict[str, Any] = field(default_factory=dict)


def service(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Call]:
    """A command that runs against the settings (the service, the database, keys): it logs."""

    @functools.wraps(command)
    def callback(**params: Any) -> Call:
        return Call(lambda settings: command(settings, **params), quiet=False, params=params)

    return callback


def offline(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Call]:
    """A command of the CLI's own, needing neither the settings nor the API."""

    @functools.wraps(command)
    def callback(**params: Any) -> Call:
        return Call(lambda settings: command(**params), quiet=True, params=params)

    return callback


def exclusive(*options: str) -> Callable[[Callable[..., Call]], Callable[..., Call]]:
    """Refuse a command line that gives more than one of these flags (a usage error)."""

    def decorate(callback: Callable[..., Call]) -> Callable[..., Call]:
        @functools.wraps(callback)
        def checked(**params: Any) -> Call:
            given = [o for o in options if params.get(o.lstrip("-").replace("-", "_"))]
            if len(given) > 1:
                raise click.UsageError(f"{' and '.join(given)} cannot be used together")
            return callback(**params)

        return checked

    return decorate


# ---------------------------------------------------------------- help


class Command(click.Command):
    """A command whose help ends with its examples, as written. Without a docstring its
    description is its one-line summary (`short_help`) as a sentence."""

    def __init__(self, *args: Any, examples: str, **kwargs: Any) -> None:
        summary = kwargs.get("short_help") or ""
        if not kwargs.get("help") and summary:
            kwargs["help"] = summary[0].upper() + summary[1:] + "."
        super().__init__(*args, **kwargs)
        self.examples = examples

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Wrapped like click's, but never inside a word: `--client-secret-stdin` stays whole.
        text = inspect.cleandoc(self.help or "")
        if not text:
            return
        formatter.write_paragraph()
        indent = " " * (formatter.current_indent + 2)
        for index, paragraph in enumerate(text.split("\n\n")):
            lines = textwrap.fill(
                " ".join(paragraph.split()),
                formatter.width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
                break_long_words=False,
            )
            formatter.write(("\n" if index else "") + lines + "\n")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        lines = (f"  {line}" if line else "" for line in self.examples.splitlines())
        formatter.write("\nexamples:\n" + "\n".join(lines) + "\n")
        if self.epilog:
            formatter.write("\n" + self.epilog + "\n")


class Group(click.Group, Command):
    """A group of commands, listed in the order they were added, each with its examples."""

    command_class = Command

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", False)  # no command: a usage error (exit 2)
        kwargs.setdefault("subcommand_metavar", "ACTION [ARGS]...")
        super().__init__(*args, **kwargs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


Group.group_class = Group


# ---------------------------------------------------------------- values


class Positive(click.ParamType):
    name = "integer"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int) and value >= 1:
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"expected a positive integer, got {value!r}", param, ctx)
        return number


class KeyValue(click.ParamType):
    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, rest = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        return key.strip(), rest


POSITIVE = Positive()
KEY_VALUE = KeyValue()

as_json = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
