"""`authbroker basic`: Basic credentials (a login and a password), through the HTTP API."""

from __future__ import annotations

import click

from authbroker.cli.api import ApiGroup, api_call
from authbroker.cli.base import as_json
from authbroker.cli.inputs import read_secret
from authbroker.cli.output import emit, table, when
from authbroker.client import AuthbrokerClient, segment

basic = ApiGroup(
    "basic",
    short_help="Basic credentials (login and password): set, list, remove",
    examples='printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin\n'
    "authbroker basic list",
)


@basic.command(
    "set",
    short_help="create or replace a Basic credential",
    examples="authbroker basic set ftp --login alice            # asks for the password\n"
    'printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin',
)
@click.argument("name")
@click.option("--login", required=True, help="the login (user id; no ':')")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin")
@as_json
@api_call
async def set_credential(
    api: AuthbrokerClient, name: str, login: str, password_stdin: bool, as_json: bool
) -> None:
    """Create or replace a Basic credential. The password is read from a prompt, or from stdin
    with --password-stdin; never from the command line."""
    password = await read_secret(
        from_stdin=password_stdin,
        prompt=not password_stdin,
        what="password",
        instead="pipe it in with --password-stdin",
    )
    status, credential = await api.put(
        f"/v1/basic/{segment(name)}", {"login": login, "password": password}
    )
    if as_json:
        emit(credential)
    else:
        verb = "created" if status == 201 else "updated"
        print(f"{verb} Basic credential {credential['name']} (login {credential['login']})")


@basic.command("list", short_help="list Basic credentials", examples="authbroker basic list")
@as_json
@api_call
async def list_credentials(api: AuthbrokerClient, as_json: bool) -> None:
    items = (await api.get("/v1/basic"))["items"]
    if as_json:
        emit(items)
        return
    print(
        table(
            ["NAME", "LOGIN", "UPDATED"],
            [[c["name"], c["login"], when(c.get("updated_at"))] for c in items],
            empty="no Basic credentials yet (add one: authbroker basic set NAME --login LOGIN)",
        )
    )


@basic.command(short_help="delete a Basic credential", examples="authbroker basic remove ftp")
@click.argument("name")
@as_json
@api_call
async def remove(api: AuthbrokerClient, name: str, as_json: bool) -> None:
    await api.delete(f"/v1/basic/{segment(name)}")
    if as_json:
        emit({"name": name, "status": "deleted"})
    else:
        print(f"removed Basic credential {name}")
