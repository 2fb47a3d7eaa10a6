"""`authbroker api-keys`: API keys and what they read.

Through the HTTP API (`/v1/api-keys`, an admin key) when an API key is given (`--api-key-file`,
`$AUTHBROKER_API_KEY`) or `--url`; otherwise, or with `--local`, on the database itself, where
it is reachable: that is how the first admin key comes to exist. Both ways print the same.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, Protocol

import click

from authbroker.cli.api import API_KEY_ENV, API_URL_ENV, connection_options, with_client
from authbroker.cli.base import Call, CliError, Command, Group, as_json
from authbroker.cli.output import details, emit, table, when
from authbroker.cli.services import with_pool
from authbroker.client import AuthbrokerClient, segment
from authbroker.config import Settings
from authbroker.roles import Role

WHERE = f"""\
Through the API (an admin key) when a key is given (--api-key-file FILE, else
  ${API_KEY_ENV}) or --url (else ${API_URL_ENV}, else the server's public URL);
  otherwise, or with --local, on the database (AUTHBROKER_DATABASE_URL, or the
  embedded one in development)."""


class KeysCommand(Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write("\nwhere the keys are:\n")
        formatter.write("".join(f"  {line}\n" for line in WHERE.splitlines()))


class KeysGroup(Group):
    command_class = KeysCommand


api_keys = KeysGroup(
    "api-keys",
    short_help="API keys: create (with a role), list, show (last use, reads), revoke",
    examples="authbroker api-keys create runtime-eu1 --role runtime --app google\n"
    "authbroker api-keys list\n"
    "authbroker api-keys create admin --role admin --local   # the first key, on the database",
)


class Keys(Protocol):
    """Where the keys are: the API or the database; answers in the API's JSON shape."""

    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def list(self) -> list[dict[str, Any]]: ...
    async def show(self, key_id: str) -> dict[str, Any]: ...
    async def revoke(self, key_id: str) -> None: ...


class ApiKeys:
    def __init__(self, api: AuthbrokerClient) -> None:
        self.api = api

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.api.post("/v1/api-keys", body))[1]

    async def list(self) -> list[dict[str, Any]]:
        return (await self.api.get("/v1/api-keys"))["items"]

    async def show(self, key_id: str) -> dict[str, Any]:
        return await self.api.get(f"/v1/api-keys/{segment(key_id)}")

    async def revoke(self, key_id: str) -> None:
        await self.api.delete(f"/v1/api-keys/{segment(key_id)}")


def _json(value: Any) -> Any:
    """A stored key (or its reads) as the API answers it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _json(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


class DatabaseKeys:
    """The same use cases as the API's (services/api_keys.py), on the database."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        from authbroker.schemas import ApiKeyCreate, field_errors
        from services import api_keys as service

        try:
            definition = ApiKeyCreate.model_validate(body)
        except ValidationError as exc:
            raise CliError(
                "\n".join(
                    f"{OPTION.get(e['field'].split('.')[0], e['field'])}: {e['message']}"
                    for e in field_errors(exc)
                )
            ) from None
        key, plaintext = await service.create(self.pool, definition, via="cli")
        return {**_json(key), "key": plaintext}

    async def list(self) -> list[dict[str, Any]]:
        from services import api_keys as service

        return [_json(key) for key in await service.list_all(self.pool)]

    async def show(self, key_id: str) -> dict[str, Any]:
        from services import api_keys as service

        found = await service.show(self.pool, key_id)
        return {**_json(found.key), "reads": _json(found.reads)}

    async def revoke(self, key_id: str) -> None:
        from services import api_keys as service

        await service.revoke(self.pool, key_id, via="cli")


OPTION = {"name": "NAME", "role": "--role", "apps": "--app"}


def keys_call(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Call]:
    """A command run on `Keys`: the API's, or the database's (see the module's docstring)."""

    @click.option(
        "--local",
        is_flag=True,
        help="work on the database directly (the default when no API key is given)",
    )
    @connection_options
    @functools.wraps(command)
    def callback(
        local: bool, url: str | None, api_key_file: str | None, timeout: float, **params: Any
    ) -> Call:
        if local and (url or api_key_file):
            raise click.UsageError("--local works on the database: it takes no --url or key")
        through_api = not local and bool(
            url or api_key_file or os.environ.get(API_KEY_ENV, "").strip()
        )

        async def run(settings: Settings) -> int | None:
            if through_api:
                return await with_client(
                    settings,
                    url,
                    api_key_file,
                    timeout,
                    lambda api: command(ApiKeys(api), **params),
                )
            return await _on_database(settings, lambda keys: command(keys, **params))

        return Call(run, quiet=True, params=params)

    return callback


async def _on_database(
    settings: Settings, work: Callable[[Keys], Awaitable[int | None]]
) -> int | None:
    from services.errors import DomainError

    outcome: list[int | None] = []

    async def run(pool: Any) -> None:
        try:
            outcome.append(await work(DatabaseKeys(pool)))
        except DomainError as exc:
            raise CliError(exc.message) from None

    await with_pool(settings, run)
    return outcome[0] if outcome else None


def _apps(key: dict[str, Any]) -> str:
    return "all" if key.get("apps") is None else " ".join(key["apps"])


def _state(key: dict[str, Any]) -> str:
    return f"revoked {when(key['revoked_at'])}" if key.get("revoked_at") else "active"


@api_keys.command(
    short_help="create a key and print it once",
    examples="authbroker api-keys create runtime-eu1 --role runtime --app google --app crm\n"
    "authbroker api-keys create ops --role operator\n"
    "export AUTHBROKER_API_KEY=$(authbroker api-keys create ci --role admin --local --json "
    "| jq -r .key)",
)
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([str(r) for r in Role]),
    required=True,
    help="admin: everything; operator: apps, connections, diagnosis, events, never a token or "
    "password; runtime: credentials, refresh, report, events",
)
@click.option(
    "--app",
    "apps",
    multiple=True,
    metavar="NAME",
    help="runtime keys: an app (or Basic credential) it may reach (repeat; none: every app)",
)
@as_json
@keys_call
async def create(keys: Keys, name: str, role: str, apps: tuple[str, ...], as_json: bool) -> None:
    """Create a key and print it once: only its hash is stored. NAME says who or what uses it,
    e.g. runtime-eu1. Give each runtime, tool or person its own key with the least role that
    does its job."""
    body: dict[str, Any] = {"name": name, "role": role}
    if apps:
        body["apps"] = list(apps)
    key = await keys.create(body)
    if as_json:
        emit(key)
        return
    print(
        f"created API key {key['id']} ({key['name']}, role {key['role']}, apps {_apps(key)}); "
        f"it is shown only now:\n{key['key']}"
    )


@api_keys.command(
    "list",
    short_help="list keys with their roles (never their secrets)",
    examples="authbroker api-keys list\nauthbroker api-keys list --json",
)
@as_json
@keys_call
async def list_keys(keys: Keys, as_json: bool) -> None:
    found = await keys.list()
    if as_json:
        emit(found)
        return
    print(
        table(
            ["ID", "NAME", "ROLE", "APPS", "CREATED", "LAST USED", "STATE"],
            [
                [
                    k["id"],
                    k["name"],
                    k["role"],
                    _apps(k),
                    when(k.get("created_at")),
                    when(k.get("last_used_at")),
                    _state(k),
                ]
                for k in found
            ],
            widths={"NAME": 30, "APPS": 40},
            empty="no API keys yet (create one: authbroker api-keys create NAME --role admin)",
        )
    )


@api_keys.command(
    short_help="show a key: its role, last use, and the credentials it read",
    examples="authbroker api-keys show 1a2b3c4d5e6f\nauthbroker api-keys show 1a2b3c4d5e6f --json",
)
@click.argument("id")
@as_json
@keys_call
async def show(keys: Keys, id: str, as_json: bool) -> None:
    """Show a key: its role and apps, when it was last used (to the minute), and each
    connection whose token and each Basic credential whose password it read, how often and
    when."""
    key = await keys.show(id)
    if as_json:
        emit(key)
        return
    print(
        details(
            [
                ("id", key["id"]),
                ("name", key["name"]),
                ("role", key["role"]),
                ("apps", _apps(key)),
                ("created", when(key.get("created_at"))),
                ("last used", when(key.get("last_used_at"))),
                ("state", _state(key)),
            ]
        )
    )
    print("\ncredentials read:")
    print(
        table(
            ["KIND", "SUBJECT", "READS", "DAYS", "FIRST", "LAST"],
            [
                [
                    r["kind"],
                    r["subject"],
                    r["count"],
                    r["days"],
                    when(r["first_at"]),
                    when(r["last_at"]),
                ]
                for r in key.get("reads") or []
            ],
            empty="(none)",
        )
    )


@api_keys.command(
    short_help="revoke a key by id", examples="authbroker api-keys revoke 1a2b3c4d5e6f"
)
@click.argument("id")
@keys_call
async def revoke(keys: Keys, id: str) -> None:
    """Revoke a key: every request with it is refused from now on, and its event streams end
    within a minute."""
    await keys.revoke(id)
    print(f"revoked API key {id}")
