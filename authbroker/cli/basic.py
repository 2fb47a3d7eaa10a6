"""`authbroker basic`: Basic credentials (a login and a password), through the HTTP API."""

from __future__ import annotations

import click

from authbroker.cli.api import ApiGroup, api_call
from authbroker.cli.base import as_json
from authbroker.cli.inputs import read_secret
from authbroker.cli.output import emit, table, when
from authbroker.cli.transfer import run_import, write_document
from authbroker.client import AuthbrokerClient, segment

basic = ApiGroup(
    "basic",
    short_help="Basic credentials (login and password): set, list, remove, export, import",
    examples='printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin\n'
    "authbroker basic list\n"
    "authbroker basic export > basic.json",
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
            ["NAME", "LOGIN", "PASSWORD", "UPDATED"],
            [
                [
                    c["name"],
                    c["login"],
                    "awaiting" if c.get("awaiting_password") else "set",
                    when(c.get("updated_at")),
                ]
                for c in items
            ],
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


@basic.command(
    "export",
    short_help="print Basic credentials as JSON: names and logins, never passwords",
    examples="authbroker basic export > basic.json\nauthbroker basic export -o basic.json",
)
@click.option("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
@api_call
async def export(api: AuthbrokerClient, output: str | None) -> None:
    """Print every Basic credential's name and login as one JSON document for `basic import`
    in another environment. Passwords are never exported."""
    document = await api.get("/v1/basic/export")
    count = len(document["credentials"])
    await write_document(
        document, output, f"exported {count} Basic credential(s) to {output} (without passwords)"
    )


@basic.command(
    "import",
    short_help="create Basic credentials from an export (they wait for their passwords)",
    examples="authbroker basic import basic.json\n"
    "authbroker basic import basic.json --replace\n"
    'printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin',
)
@click.argument("file", metavar="FILE")
@click.option("--replace", is_flag=True, help="change the login of credentials that exist")
@as_json
@api_call
async def import_(api: AuthbrokerClient, file: str, replace: bool, as_json: bool) -> None:
    """Create the Basic credentials of an export document (FILE, or '-' for stdin) that do not
    exist here; existing ones are skipped unless --replace (which changes their login and keeps
    their password). Nothing is imported if any entry is invalid. New credentials wait for
    their password: set it with `authbroker basic set NAME --login LOGIN`."""
    await run_import(
        api,
        file,
        "/v1/basic/import",
        replace=replace,
        as_json=as_json,
        what="Basic credentials",
        waiting="Imported credentials wait for their passwords (passwords are never exported)",
        set_one="authbroker basic set {} --login LOGIN",
    )
