"""What commands read besides their options: secrets (from stdin or a prompt, never from the
command line) and files."""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path

from authbroker.cli.base import CliError


def _read_stdin_secret(what: str) -> str:
    raw = sys.stdin.read()
    secret = raw.rstrip("\r\n")
    if not secret:
        raise CliError(f'no {what} on stdin (pipe it in, e.g. `printf %s "$SECRET" | …`)')
    if "\n" in secret:
        raise CliError(f"stdin holds more than one line; expected only the {what}")
    return secret


def _prompt_secret(what: str) -> str:
    secret = getpass.getpass(f"{what[0].upper() + what[1:]}: ")
    if not secret:
        raise CliError(f"no {what} entered")
    return secret


async def read_secret(*, from_stdin: bool, prompt: bool, what: str, instead: str) -> str | None:
    """A secret from stdin or a prompt; None when neither is asked for."""
    if from_stdin:
        return await asyncio.to_thread(_read_stdin_secret, what)
    if prompt:
        if not sys.stdin.isatty():
            raise CliError(f"cannot prompt for the {what}: stdin is not a terminal; {instead}")
        return await asyncio.to_thread(_prompt_secret, what)
    return None


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_file(path: str, content: str) -> None:
    try:
        Path(path).write_text(content)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


async def read_file(path: str) -> str:
    """A file's text ('-': stdin)."""
    return await asyncio.to_thread(_read_file, path)


async def write_file(path: str, content: str) -> None:
    await asyncio.to_thread(_write_file, path, content)
