"""How the commands that use the HTTP API (apps, basic, connections, events) find it and
speak to it: the connection options, the key's source, and the API's failures turned into
messages that say what to do."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from authbroker.cli.base import Call, CliError, Command, Group
from authbroker.cli.output import emit, print_diagnosis
from authbroker.cli.services import ADMIN_KEY_FILE
from authbroker.client import ApiError, AuthbrokerClient, Unreachable
from authbroker.config import Settings, is_loopback

API_URL_ENV = "AUTHBROKER_URL"
API_KEY_ENV = "AUTHBROKER_API_KEY"

CONNECTING = f"""\
URL: --url, else ${API_URL_ENV}, else the server's AUTHBROKER_PUBLIC_URL
  (default http://127.0.0.1:8080).
API key: --api-key-file FILE, else ${API_KEY_ENV}, else in development the
  admin key `authbroker run` keeps in $AUTHBROKER_DATA_DIR/{ADMIN_KEY_FILE}."""


class ApiCommand(Command):
    """A command whose help also says how it finds the API, when it has the options for it."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if any(param.name == "url" for param in self.params):
            formatter.write("\nconnecting to authbroker:\n")
            formatter.write("".join(f"  {line}\n" for line in CONNECTING.splitlines()))


class ApiGroup(Group):
    command_class = ApiCommand


def api_target(
    settings: Settings, url: str | None, key_file: str | None
) -> tuple[str, str | None, str]:
    """Where the API is, the key to use and where the key came from (for error messages).
    An explicit --api-key-file wins over the environment, which wins over the development
    admin key file."""
    url = (url or os.environ.get(API_URL_ENV, "").strip() or settings.public_url).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CliError(f"--url / {API_URL_ENV}: expected http(s)://host[:port], got {url!r}")
    if key_file:
        path = Path(key_file)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise CliError(f"--api-key-file {path}: {exc.strerror or exc}") from None
        if not key:
            raise CliError(f"--api-key-file {path}: the file is empty")
        return url, key, f"--api-key-file {path}"
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return url, key, API_KEY_ENV
    if not settings.production:
        path = Path(settings.data_dir) / ADMIN_KEY_FILE
        with contextlib.suppress(OSError):
            key = path.read_text().strip()
            if key:
                return url, key, f"{path} (the development admin key)"
    return url, None, ""


def _key_hint(source: str, settings: Settings) -> str:
    first = (
        f"the API refused the key from {source}: it is wrong or was revoked."
        if source
        else "no API key was given."
    )
    return (
        f"{first}\n"
        f"Set {API_KEY_ENV} (or pass --api-key-file FILE) to a valid key: `authbroker run` "
        "prints the admin key when it starts (in development it keeps it in "
        f"{Path(settings.data_dir) / ADMIN_KEY_FILE}); create another with "
        "`authbroker api-keys create NAME --role ROLE` where the database is reachable."
    )


def describe_api_error(exc: ApiError, source: str, settings: Settings) -> str:
    """The API's message, each field at fault (with the option that sets it), and what to do."""
    from authbroker.cli.app_options import OPTION_OF

    lines = [exc.message]
    for item in exc.fields:
        field = str(item.get("field", ""))
        option = OPTION_OF.get(field.split(".")[0])
        label = f"{field} ({option})" if option and "." not in field else field
        lines.append(f"  {label}: {item.get('message', '')}")
    if exc.status == 401:
        lines.append(_key_hint(source, settings))
    elif exc.status == 404 and exc.error == "not_found":
        lines.append("this authbroker server does not know this request: is it an older version?")
    elif exc.status >= 500:
        lines.append("the server failed; its logs name the cause (look for request_failed)")
    detail = exc.body.get("detail")
    if detail:
        lines.append(str(detail))
    return "\n".join(lines)


async def with_client(
    settings: Settings,
    url: str | None,
    key_file: str | None,
    request_seconds: float,
    work: Callable[[AuthbrokerClient], Awaitable[int | None]],
) -> int | None:
    """Run `work` with a client, turning its failures into messages for a person."""
    url, key, source = api_target(settings, url, key_file)
    parts = urlsplit(url)
    if key and parts.scheme == "http" and not is_loopback(parts.hostname):
        print(
            f"authbroker: warning: sending the API key over plain http to {parts.hostname}",
            file=sys.stderr,
        )
    try:
        async with AuthbrokerClient(url, key, timeout=request_seconds) as api:
            return await work(api)
    except ApiError as exc:
        raise CliError(describe_api_error(exc, source, settings)) from None
    except Unreachable as exc:
        raise CliError(
            f"cannot reach authbroker at {exc.url}: is it running? (make run)\n"
            f"  ({exc.reason}; point the CLI elsewhere with --url or {API_URL_ENV})"
        ) from None


def connection_options(callback: Callable[..., Call]) -> Callable[..., Call]:
    """--url, --api-key-file and --timeout: where the API is, the key, and how long to wait."""
    for option in reversed(
        (
            click.option("--url", metavar="URL", help=f"authbroker's base URL (${API_URL_ENV})"),
            click.option(
                "--api-key-file",
                metavar="FILE",
                help=f"read the API key from FILE (${API_KEY_ENV})",
            ),
            click.option(
                "--timeout", type=float, default=30.0, metavar="S", help="seconds per request (30)"
            ),
        )
    ):
        callback = option(callback)
    return callback


def api_call(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Call]:
    """A command that uses the API: `command(api, **params)`, with the connection options."""

    @connection_options
    @functools.wraps(command)
    def callback(url: str | None, api_key_file: str | None, timeout: float, **params: Any) -> Call:
        async def run(settings: Settings) -> int | None:
            return await with_client(
                settings, url, api_key_file, timeout, lambda api: command(api, **params)
            )

        return Call(run, quiet=True, params=params)

    return callback


async def diagnose(api: AuthbrokerClient, path: str, subject: str, as_json: bool) -> int:
    """Print a diagnosis (apps and connections have one); exit code 1 when a check fails."""
    try:
        diagnosis = await api.get(path)
    except ApiError as exc:
        if exc.status == 404 and exc.error == "not_found":
            raise CliError("this authbroker server has no diagnosis endpoint; upgrade it") from None
        raise
    if as_json:
        emit(diagnosis)
    else:
        print_diagnosis(subject, diagnosis)
    return 1 if diagnosis.get("summary") == "failing" else 0
