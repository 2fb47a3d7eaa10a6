"""The `authbroker` command as an operator uses it against a running server: apps, Basic
credentials, connections (with a real authorization at the real OAuth server), events, export
and import. Secrets go in through stdin and never come out; every failure says what to do.

The CLI runs in-process (`authbroker.cli.main`) in a thread, since it runs its own event loop,
with its standard streams swapped for buffers the test reads.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import click
import pytest
from aiohttp import web

from authbroker.cli import cli as root
from authbroker.cli import main
from authbroker.embedded import free_port
from authbroker.oauth import jwt
from tests.helpers import follow_callback, insert_app, insert_connection
from tests.operator_app import OperatorServer, operator_server  # noqa: F401


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


class Buffer(io.StringIO):
    """A stdout the test can read while the command still runs."""


def _run(argv: list[str], stdin: str, out: io.StringIO) -> Result:
    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Result(code, out.getvalue(), err.getvalue())


async def cli(*argv: str, stdin: str = "", out: io.StringIO | None = None) -> Result:
    return await asyncio.to_thread(_run, list(argv), stdin, out or io.StringIO())


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    operator_server: OperatorServer,  # noqa: F811
    admin_key: str,
    tmp_path: Path,
) -> OperatorServer:
    monkeypatch.setenv("AUTHBROKER_URL", operator_server.url)
    monkeypatch.setenv("AUTHBROKER_API_KEY", admin_key)
    monkeypatch.setenv("AUTHBROKER_DATA_DIR", str(tmp_path / "data"))
    return operator_server


@pytest.fixture
async def ops(cli_env: OperatorServer, admin_key: str):
    async with aiohttp.ClientSession(
        base_url=cli_env.url, headers={"Authorization": f"Bearer {admin_key}"}
    ) as session:
        yield session


async def get(ops: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with ops.get(path) as response:
        return response.status, await response.json()


def provider_args(**overrides: str) -> list[str]:
    values = {
        "--authorization-url": "https://auth.example.com/oauth/authorize",
        "--token-url": "https://auth.example.com/oauth/token",
        "--revoke-url": "https://auth.example.com/oauth/revoke",
        **overrides,
    }
    return [item for pair in values.items() for item in pair]


def assert_secret_hidden(secret: str, *results: Result) -> None:
    for result in results:
        assert secret not in result.out and secret not in result.err, result


# ------------------------------------------------------------------------------ help


def _commands() -> Iterator[tuple[list[str], click.Command]]:
    def walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        yield path, command
        for name, child in getattr(command, "commands", {}).items():
            yield from walk(child, [*path, name])

    yield from walk(root, [])


def _command_paths() -> Iterator[list[str]]:
    for path, _ in _commands():
        yield path


async def test_every_command_has_help_with_an_example():
    paths = list(_command_paths())
    names = {" ".join(p) for p in paths}
    for expected in (
        "apps add",
        "apps list",
        "apps show",
        "apps update",
        "apps remove",
        "apps export",
        "apps import",
        "apps presets",
        "basic set",
        "basic list",
        "basic remove",
        "basic export",
        "basic import",
        "connections list",
        "connections show",
        "connections connect",
        "connections link",
        "connections refresh",
        "connections delete",
        "connections diagnose",
        "events tail",
        "webhooks create",
        "webhooks list",
        "webhooks show",
        "webhooks update",
        "webhooks disable",
        "webhooks enable",
        "webhooks delete",
        "webhooks rotate-secret",
        "webhooks deliveries",
        "webhooks replay",
        "keys generate",
        "keys rotate",
        "api-keys create",
        "api-keys list",
        "api-keys revoke",
        "migrate",
        "run",
        "web",
        "worker",
    ):
        assert expected in names
    for path in paths:
        result = await cli(*path, "--help")
        assert result.code == 0, (path, result)
        assert "examples:" in result.out and "authbroker" in result.out.split("examples:")[1]
    top = await cli("--help")
    assert "AUTHBROKER_URL" in top.out and "AUTHBROKER_API_KEY" in top.out
    add = await cli("apps", "add", "--help")
    assert "--client-secret-stdin" in add.out and "AUTHBROKER_URL" in add.out


def test_no_option_takes_a_secret_on_the_command_line():
    for path, command in _commands():
        for param in command.params:
            for option in param.opts:
                if "secret" in option or "password" in option:
                    assert getattr(param, "is_flag", False), (
                        path,
                        option,
                    )  # flags only, never a value


# ------------------------------------------------------------------------------ apps


async def test_apps_add_list_show_update_remove(cli_env, ops, unique, resources):
    name = unique("cli")
    secret = f"s3cr3t-{name}"
    added = await cli(
        "apps",
        "add",
        name,
        "--client-id",
        f"id-{name}",
        *provider_args(),
        "--scope",
        "read write",
        "--scope",
        "admin",
        "--client-auth",
        "basic",
        "--authorize-param",
        "prompt=consent",
        "--client-secret-stdin",
        stdin=secret + "\n",
    )
    assert added.code == 0, added
    assert "/oauth/callback" in added.out and "Register this redirect URL" in added.out
    status, app = await get(ops, f"/v1/apps/{name}")
    assert status == 200
    assert app["client_secret_set"] is True
    assert app["scopes"] == ["read", "write", "admin"]
    assert app["client_auth"] == "basic"
    assert app["authorize_params"] == {"prompt": "consent"}
    row = await resources.pool.fetchrow("SELECT id FROM apps WHERE name = $1", name)
    from storage.apps import get as get_app

    stored = await get_app(resources.pool, name)
    assert stored is not None and stored.client(resources.ring).client_secret == secret
    assert row is not None

    listed = await cli("apps", "list")
    assert listed.code == 0
    header, *rows = listed.out.splitlines()
    assert header.split()[:2] == ["NAME", "CLIENT"]
    assert any(r.split()[0] == name for r in rows)
    listed_json = await cli("apps", "list", "--json")
    assert name in [a["name"] for a in listed_json.json()]

    shown = await cli("apps", "show", name)
    assert shown.code == 0 and f"id-{name}" in shown.out and "client secret:" in shown.out
    shown_json = await cli("apps", "show", name, "--json")
    assert shown_json.json()["token_url"] == "https://auth.example.com/oauth/token"

    new_secret = f"n3w-{name}"
    updated = await cli(
        "apps",
        "update",
        name,
        "--token-url",
        "https://auth.example.com/oauth/token2",
        "--clear",
        "revoke_url",
        "--reports-to-invalidate",
        "5",
        "--client-secret-stdin",
        stdin=new_secret,
    )
    assert updated.code == 0, updated
    assert "token_url" in updated.out and "client secret" in updated.out
    _, app = await get(ops, f"/v1/apps/{name}")
    assert app["token_url"].endswith("/token2") and app["revoke_url"] is None
    assert app["reports_to_invalidate"] == 5
    assert re.search(r"reports to invalidate: +5\n", (await cli("apps", "show", name)).out)
    assert app["scopes"] == ["read", "write", "admin"]  # not given: unchanged
    stored = await get_app(resources.pool, name)
    assert stored is not None and stored.client(resources.ring).client_secret == new_secret

    removed = await cli("apps", "remove", name)
    assert removed.code == 0 and f"removed app {name}" in removed.out
    assert (await get(ops, f"/v1/apps/{name}"))[0] == 404
    again = await cli("apps", "remove", name)
    assert again.code == 1 and "no app named" in again.err

    assert_secret_hidden(
        secret, added, listed, listed_json, shown, shown_json, updated, removed, again
    )
    assert_secret_hidden(new_secret, updated, removed)


async def test_bad_input_names_the_field_and_changes_nothing(cli_env, ops, unique):
    name = unique("bad")
    secret = f"s3cr3t-{name}"
    result = await cli(
        "apps",
        "add",
        name,
        "--client-id",
        "x",
        *provider_args(**{"--token-url": "http://auth.example.com/token"}),
        "--client-secret-stdin",
        stdin=secret,
    )
    assert result.code == 1
    assert result.out == ""
    assert "invalid fields: token_url" in result.err
    assert "token_url (--token-url): must use https" in result.err
    assert_secret_hidden(secret, result)
    assert (await get(ops, f"/v1/apps/{name}"))[0] == 404

    # No secret and no terminal to ask on: refused before anything is sent.
    result = await cli("apps", "add", name, "--client-id", "x", *provider_args())
    assert result.code == 1
    assert "--client-secret-stdin" in result.err and "--no-client-secret" in result.err
    assert (await get(ops, f"/v1/apps/{name}"))[0] == 404

    # A usage error: exit 2, naming what was expected.
    result = await cli("apps", "add", name, "--client-id", "x", "--authorize-param", "oops")
    assert result.code == 2 and "KEY=VALUE" in result.err

    created = await cli(
        "apps", "add", name, "--client-id", "x", *provider_args(), "--no-client-secret"
    )
    assert created.code == 0, created
    result = await cli("apps", "update", name)
    assert result.code == 1 and "nothing to update" in result.err
    result = await cli("apps", "update", name, "--scope", "bad\\scope")
    assert result.code == 1 and "scopes.0" in result.err
    _, app = await get(ops, f"/v1/apps/{name}")
    assert app["scopes"] == []
    assert (await cli("apps", "remove", name)).code == 0


async def test_unreachable_server(monkeypatch, admin_key, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AUTHBROKER_URL", url)
    monkeypatch.setenv("AUTHBROKER_API_KEY", admin_key)
    monkeypatch.setenv("AUTHBROKER_DATA_DIR", str(tmp_path))
    result = await cli("apps", "list")
    assert result.code == 1
    assert f"cannot reach authbroker at {url}: is it running? (make run)" in result.err
    assert "connection refused" in result.err
    result = await cli("apps", "list", "--url", "ftp://nowhere")
    assert result.code == 1 and "expected http(s)://" in result.err


async def test_missing_or_wrong_key_says_how_to_get_one(cli_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AUTHBROKER_API_KEY", "ab_not-a-real-key")
    result = await cli("apps", "list")
    assert result.code == 1
    assert "a valid API key is required" in result.err
    assert "from AUTHBROKER_API_KEY" in result.err and "api-keys create" in result.err

    monkeypatch.delenv("AUTHBROKER_API_KEY")
    result = await cli("apps", "list")
    assert result.code == 1 and "no API key was given" in result.err

    key_file = tmp_path / "key"
    key_file.write_text("ab_also-wrong\n")
    result = await cli("apps", "list", "--api-key-file", str(key_file))
    assert result.code == 1 and f"--api-key-file {key_file}" in result.err


async def test_development_admin_key_file_is_used(cli_env, monkeypatch, tmp_path, admin_key):
    monkeypatch.delenv("AUTHBROKER_API_KEY")
    data = tmp_path / "dev"
    data.mkdir()
    (data / "admin-api-key").write_text(admin_key + "\n")
    monkeypatch.setenv("AUTHBROKER_DATA_DIR", str(data))
    result = await cli("apps", "list", "--json")
    assert result.code == 0, result


# ------------------------------------------------------------------------------ basic


async def test_basic_set_list_remove(cli_env, ops, unique):
    name = unique("ftp")
    password = f"pw-{name}"
    created = await cli(
        "basic", "set", name, "--login", "alice", "--password-stdin", stdin=password + "\n"
    )
    assert created.code == 0, created
    assert f"created Basic credential {name}" in created.out
    async with ops.get(f"/v1/basic/{name}/credentials") as response:
        assert (await response.json())["password"] == password
    replaced = await cli("basic", "set", name, "--login", "bob", "--password-stdin", stdin="pw2")
    assert replaced.code == 0 and "updated" in replaced.out

    listed = await cli("basic", "list")
    assert any(line.split()[:2] == [name, "bob"] for line in listed.out.splitlines())
    listed_json = await cli("basic", "list", "--json")
    assert {"name": name, "login": "bob"}.items() <= next(
        c for c in listed_json.json() if c["name"] == name
    ).items()

    refused = await cli("basic", "set", name, "--login", "a:b", "--password-stdin", stdin="x")
    assert refused.code == 1 and "login (--login)" in refused.err
    no_password = await cli("basic", "set", name, "--login", "bob")
    assert no_password.code == 1 and "--password-stdin" in no_password.err

    removed = await cli("basic", "remove", name)
    assert removed.code == 0
    again = await cli("basic", "remove", name)
    assert again.code == 1 and "no Basic credential" in again.err
    assert_secret_hidden(password, created, replaced, listed, listed_json, removed)


async def test_basic_export_then_import_waits_for_the_password(cli_env, ops, unique, tmp_path):
    source, target = unique("bsrc"), unique("bdst")
    password = f"pw-{source}-secret"
    await cli("basic", "set", source, "--login", "erin", "--password-stdin", stdin=password)
    exported = await cli("basic", "export")
    assert exported.code == 0, exported
    assert_secret_hidden(password, exported)
    document = exported.json()
    document["credentials"] = [
        {**c, "name": target} for c in document["credentials"] if c["name"] == source
    ]
    path = tmp_path / "basic.json"
    path.write_text(json.dumps(document))

    imported = await cli("basic", "import", str(path))
    assert imported.code == 0, imported
    assert f"created: {target}" in imported.out
    assert f"authbroker basic set {target} --login LOGIN" in imported.out
    listed = await cli("basic", "list")
    row = next(line.split() for line in listed.out.splitlines() if line.startswith(target))
    assert row[:3] == [target, "erin", "awaiting"]
    status, answer = await get(ops, f"/v1/basic/{target}/credentials")
    assert status == 409 and answer["error"] == "awaiting_password"
    again = await cli("basic", "import", str(path), "--replace", "--json")
    assert again.json()["unchanged"] == [target]

    document["credentials"][0]["password"] = "nope"
    path.write_text(json.dumps(document))
    refused = await cli("basic", "import", str(path))
    assert refused.code == 1 and "credentials.0.password" in refused.err
    written = await cli("basic", "export", "-o", str(tmp_path / "out.json"))
    assert written.code == 0 and written.out == "" and "without passwords" in written.err
    assert password not in (tmp_path / "out.json").read_text()


# ------------------------------------------------------------------------------ connections


async def test_connect_prints_the_authorize_url(cli_env, ops, unique):
    name = unique("url")
    assert (
        await cli("apps", "add", name, "--client-id", "cid", *provider_args(), "--no-client-secret")
    ).code == 0
    result = await cli("connections", "connect", name, "--connection-id", f"{name}-c1")
    assert result.code == 0, result
    url = next(line for line in result.out.splitlines() if line.startswith("https://"))
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["cid"] and query["response_type"] == ["code"]
    assert f"{name}-c1" in result.out

    as_json = await cli("connections", "connect", name, "--scope", "read", "--json")
    started = as_json.json()
    assert parse_qs(urlsplit(started["authorize_url"]).query)["scope"] == ["read"]
    assert started["authorization_id"] and started["status_url"]

    listed = await cli("connections", "list", "--app", name, "--json")
    assert {c["connection_id"] for c in listed.json()} >= {f"{name}-c1"}
    assert all(c["status"] == "pending" for c in listed.json())
    missing = await cli("connections", "connect", unique("nope"))
    assert missing.code == 1 and "no app named" in missing.err
    assert (await cli("apps", "remove", name, "--cascade")).code == 0


async def test_link_prints_a_connect_link(cli_env, ops, anonymous, unique):
    name = unique("link")
    assert (
        await cli("apps", "add", name, "--client-id", "cid", *provider_args(), "--no-client-secret")
    ).code == 0
    result = await cli(
        "connections", "link", name, "--connection-id", f"{name}-c1", "--scope", "read"
    )
    assert result.code == 0, result
    (url,) = result.out.splitlines()  # only the URL on stdout, for scripts and mail
    assert "/connect/" in url and f"{name}-c1" in result.err
    async with anonymous.get(url, allow_redirects=False) as response:
        assert response.status == 302
        query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["scope"] == ["read"] and query["client_id"] == ["cid"]

    made = (await cli("connections", "link", name, "--expires-in", "3600", "--json")).json()
    assert set(made) == {"url", "expires_at", "connection_id"}
    assert made["connection_id"].startswith("conn_")
    too_short = await cli("connections", "link", name, "--expires-in", "10")
    assert too_short.code == 2 and "--expires-in" in too_short.err
    missing = await cli("connections", "link", unique("nope"))
    assert missing.code == 1 and "no app named" in missing.err


async def test_a_service_connection_from_the_command_line(
    cli_env, ops, oauth_server, worker, unique
):
    """`connections create --grant client_credentials --wait`: an app with no authorization
    URL, a token for the app itself, the exit code saying how it went."""
    name = unique("svc")
    client_id, secret = oauth_server.create_application(
        "https://unused.example/cb", name=name, grant="client-credentials"
    )
    added = await cli(
        "apps",
        "add",
        name,
        "--client-id",
        client_id,
        "--token-url",
        oauth_server.token_url,
        "--scope",
        "read",
        "--client-secret-stdin",
        stdin=secret,
    )
    assert added.code == 0, added
    result = await cli(
        "connections",
        "create",
        name,
        "--grant",
        "client_credentials",
        "--connection-id",
        f"{name}-svc",
        "--resource",
        f"{oauth_server.base_url}/api/",
        "--audience",
        "https://api.example.com",
        "--wait",
    )
    assert result.code == 0, result
    assert f"connected: {name}-svc ({name}) is active (client credentials)" in result.out
    shown = await cli("connections", "show", f"{name}-svc")
    assert "client_credentials" in shown.out and "https://api.example.com" in shown.out
    refused = await cli(
        "connections",
        "create",
        name,
        "--grant",
        "client_credentials",
        "--scope",
        "admin",
        "--wait",
    )
    assert refused.code == 1 and "scope_mismatch" in refused.err, refused
    misplaced = await cli("connections", "connect", name, "--audience", "https://x.example")
    assert misplaced.code == 2 and "--grant client_credentials" in misplaced.err


async def _add_real_app(oauth_server, name: str) -> Result:
    return await cli(
        "apps",
        "add",
        name,
        "--client-id",
        oauth_server.client_id,
        "--authorization-url",
        oauth_server.authorization_url,
        "--token-url",
        oauth_server.token_url,
        "--revoke-url",
        oauth_server.revoke_url,
        "--scope",
        "read write",
        "--client-secret-stdin",
        stdin=oauth_server.client_secret,
    )


async def _authorize_while_waiting(
    oauth_server, anonymous, argv: list[str], *, allow: bool = True
) -> Result:
    out = Buffer()
    task = asyncio.create_task(cli(*argv, out=out))
    deadline = time.monotonic() + 15
    while "authorize_url" not in out.getvalue():
        assert not task.done(), await task
        assert time.monotonic() < deadline, "connect printed no URL"
        await asyncio.sleep(0.05)
    started = json.loads(out.getvalue().splitlines()[0])
    location = await oauth_server.approve(started["authorize_url"], allow=allow)
    await follow_callback(anonymous, location)
    return await asyncio.wait_for(task, 60)


async def test_connect_wait_then_manage_the_connection(
    cli_env, ops, anonymous, oauth_server, worker, unique, events
):
    name = unique("real")
    added = await _add_real_app(oauth_server, name)
    assert added.code == 0, added
    connection_id = f"{name}-c1"
    result = await _authorize_while_waiting(
        oauth_server,
        anonymous,
        ["connections", "connect", name, "--connection-id", connection_id, "--wait", "--json"],
    )
    assert result.code == 0, result
    started, outcome = result.lines()
    assert started["connection_id"] == connection_id
    assert outcome["status"] == "succeeded"
    assert outcome["connection"]["status"] == "active"
    assert "access_token" not in outcome["connection"]

    listed = await cli("connections", "list", "--app", name)
    assert any(
        line.split()[:3] == [connection_id, name, "active"] for line in listed.out.splitlines()
    )
    shown = await cli("connections", "show", connection_id)
    assert shown.code == 0 and "status:" in shown.out and "active" in shown.out

    refreshed = await cli("connections", "refresh", connection_id)
    assert refreshed.code == 0, refreshed
    assert "refreshed" in refreshed.out

    await events.wait_for(
        lambda e: e["type"] == "connection.refreshed" and e["connection_id"] == connection_id
    )
    tail = await cli("events", "tail", "--from-start", "--app", name, "--json", "--limit", "3")
    assert tail.code == 0, tail
    assert [e["type"] for e in tail.lines()] == [
        "connection.authorization_started",
        "connection.authorized",
        "connection.refreshed",
    ]
    assert all(e["connection_id"] == connection_id for e in tail.lines())
    human = await cli(
        "events",
        "tail",
        "--from-start",
        "--app",
        name,
        "--type",
        "connection.refresh",
        "--limit",
        "1",
    )
    assert human.code == 0, human
    (line,) = human.out.splitlines()
    assert "connection.refreshed" in line and name in line and connection_id in line
    assert line[:4].isdigit()  # starts with the time

    diagnosis_route = any(
        r.resource is not None and r.resource.canonical.endswith("/diagnosis")
        for r in cli_env.app.router.routes()
    )
    if diagnosis_route:
        diagnosed = await cli("connections", "diagnose", connection_id)
        assert diagnosed.code in (0, 1), diagnosed
        assert diagnosed.out.startswith(f"connection {connection_id}: ")
        diagnosed_json = await cli("connections", "diagnose", connection_id, "--json")
        assert diagnosed_json.json()["summary"] in {"ok", "warning", "failing"}
        app_diagnosis = await cli("apps", "diagnose", name, "--json")
        assert app_diagnosis.json()["checks"]

    still_used = await cli("apps", "remove", name)
    assert still_used.code == 1 and "--cascade" in still_used.err
    deleted = await cli("connections", "delete", connection_id)
    assert deleted.code == 0 and "revoking" in deleted.out
    await events.wait_for(
        lambda e: e["type"] == "connection.revoked" and e["connection_id"] == connection_id
    )
    assert (await cli("apps", "remove", name)).code == 0
    assert_secret_hidden(oauth_server.client_secret, added, result, listed, shown, refreshed)


async def test_connect_wait_reports_a_declined_authorization(
    cli_env, anonymous, oauth_server, worker, unique
):
    name = unique("decl")
    assert (await _add_real_app(oauth_server, name)).code == 0
    result = await _authorize_while_waiting(
        oauth_server,
        anonymous,
        ["connections", "connect", name, "--wait", "--json"],
        allow=False,
    )
    assert result.code == 1, result
    _, outcome = result.lines()
    assert outcome["status"] == "failed" and outcome["problem"] == "access_denied"


async def test_connect_wait_prose_on_failure(cli_env, anonymous, oauth_server, worker, unique):
    name = unique("prose")
    assert (await _add_real_app(oauth_server, name)).code == 0
    out = Buffer()
    task = asyncio.create_task(cli("connections", "connect", name, "--wait", out=out))
    deadline = time.monotonic() + 15
    while "/o/authorize/" not in out.getvalue():
        assert not task.done(), await task
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    url = next(line for line in out.getvalue().splitlines() if "/o/authorize/" in line)
    location = await oauth_server.approve(url, allow=False)
    await follow_callback(anonymous, location)
    result = await asyncio.wait_for(task, 60)
    assert result.code == 1
    assert "authorization failed: access_denied" in result.err
    assert "connections diagnose" in result.err


# ------------------------------------------------------------------------------ export / import


async def test_export_then_import_under_new_names(cli_env, ops, unique, tmp_path):
    source = unique("src")
    secret = f"s3cr3t-{source}"
    added = await cli(
        "apps",
        "add",
        source,
        "--client-id",
        "cid",
        *provider_args(),
        "--scope",
        "read",
        "--client-secret-stdin",
        stdin=secret,
    )
    assert added.code == 0, added
    exported = await cli("apps", "export", source)
    assert exported.code == 0, exported
    assert_secret_hidden(secret, exported)
    document = exported.json()
    assert [a["name"] for a in document["apps"]] == [source]

    target = unique("dst")
    document["apps"][0]["name"] = target
    path = tmp_path / "apps.json"
    path.write_text(json.dumps(document))
    imported = await cli("apps", "import", str(path))
    assert imported.code == 0, imported
    assert f"created: {target}" in imported.out
    assert f"authbroker apps update {target} --client-secret-stdin" in imported.out

    shown = (await cli("apps", "show", target, "--json")).json()
    assert shown["awaiting_secret"] is True and shown["scopes"] == ["read"]
    assert "awaiting secret" in (await cli("apps", "show", target)).out

    refused = await cli("connections", "connect", target)
    assert refused.code == 1
    assert "without its client secret" in refused.err
    assert f"authbroker apps update {target} --client-secret-stdin" in refused.err

    again = await cli("apps", "import", str(path), "--json")
    assert again.json()["skipped"] == [target]

    set_secret = await cli("apps", "update", target, "--client-secret-stdin", stdin="new-secret")
    assert set_secret.code == 0, set_secret
    assert (await cli("apps", "show", target, "--json")).json()["awaiting_secret"] is False
    assert (await cli("connections", "connect", target)).code == 0

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = await cli("apps", "import", str(bad))
    assert result.code == 1 and "is not JSON" in result.err
    invalid = {"version": 1, "apps": [{**document["apps"][0], "name": unique("x"), "pkce": "?"}]}
    bad.write_text(json.dumps(invalid))
    result = await cli("apps", "import", str(bad))
    assert result.code == 1 and "apps.0.pkce" in result.err and "nothing was imported" in result.err

    out_file = tmp_path / "out.json"
    written = await cli("apps", "export", source, target, "-o", str(out_file))
    assert written.code == 0 and written.out == ""
    assert {a["name"] for a in json.loads(out_file.read_text())["apps"]} == {source, target}


# ------------------------------------------------------------------------------ presets, discovery


async def test_presets_listed_and_applied(cli_env, ops, unique):
    presets = pytest.importorskip("authbroker.presets")
    listed = await cli("apps", "presets")
    assert listed.code == 0, listed
    for name in presets.names():
        assert any(line.startswith(name + " ") for line in listed.out.splitlines())
    as_json = (await cli("apps", "presets", "--json")).json()
    assert [p["name"] for p in as_json] == presets.names()
    assert all(isinstance(p["notes"], list) for p in as_json)
    one = await cli("apps", "presets", "google")
    assert one.code == 0 and "authorization_url" in one.out
    unknown = await cli("apps", "presets", "nope")
    assert unknown.code == 1 and "no preset named 'nope'" in unknown.err

    name = unique("goo")
    dry = await cli(
        "apps",
        "add",
        name,
        "--preset",
        "google",
        "--client-id",
        "cid",
        "--scope",
        "openid",
        "--authorize-param",
        "hd=example.com",
        "--dry-run",
    )
    assert dry.code == 0, dry
    definition = dry.json()
    google = presets.get("google").values
    assert definition["authorization_url"] == google["authorization_url"]
    assert definition["scopes"] == ["openid"]  # explicit wins
    assert definition["authorize_params"]["hd"] == "example.com"
    for key, value in (google.get("authorize_params") or {}).items():
        assert definition["authorize_params"][key] == value  # merged, not replaced
    assert (await get(ops, f"/v1/apps/{name}"))[0] == 404  # dry run: nothing sent

    added = await cli(
        "apps",
        "add",
        name,
        "--preset",
        "google",
        "--client-id",
        "cid",
        "--scope",
        "openid",
        "--client-secret-stdin",
        stdin="goo-secret",
    )
    assert added.code == 0, added
    _, app = await get(ops, f"/v1/apps/{name}")
    assert app["preset"] == "google" and app["scopes"] == ["openid"]
    assert app["token_url"] == google["token_url"]
    notes = presets.get("google").notes
    if notes:
        assert f"note: {notes[0]}" in added.out

    with_placeholder = [p for p in presets.names() if presets.get(p).placeholders]
    if with_placeholder:
        preset = presets.get(with_placeholder[0])
        placeholder = preset.placeholders[0]
        tenant = unique("tenant")
        created = await cli(
            "apps",
            "add",
            unique("ph"),
            "--preset",
            preset.name,
            "--placeholder",
            f"{placeholder}={tenant}",
            "--client-id",
            "cid",
            "--json",
            "--no-client-secret",
        )
        assert created.code == 0, created
        assert tenant in created.json()["authorization_url"]
    wrong = await cli(
        "apps",
        "add",
        unique("ph"),
        "--preset",
        "google",
        "--placeholder",
        "zz=1",
        "--client-id",
        "cid",
        "--no-client-secret",
    )
    assert wrong.code == 1 and "zz" in wrong.err
    missing = await cli(
        "apps", "add", unique("np"), "--preset", "nope", "--client-id", "c", "--no-client-secret"
    )
    assert missing.code == 1 and "authbroker apps presets" in missing.err


async def test_a_per_connection_setting_is_given_when_connecting(cli_env, ops, unique):
    name = unique("zd")
    added = await cli(
        "apps", "add", name, "--preset", "zendesk", "--client-id", "cid", "--no-client-secret"
    )
    assert added.code == 0, added
    shown = await cli("apps", "show", name)
    assert re.search(r"^connection settings: +subdomain$", shown.out, re.M), shown

    connected = await cli(
        "connections",
        "connect",
        name,
        "--connection-id",
        f"{name}-acme",
        "--setting",
        "subdomain=acme",
        "--json",
    )
    assert connected.code == 0, connected
    assert urlsplit(connected.json()["authorize_url"]).hostname == "acme.zendesk.com"
    connection = await cli("connections", "show", f"{name}-acme")
    assert re.search(r"^settings: +.*acme", connection.out, re.M), connection

    malformed = await cli("connections", "connect", name, "--setting", "acme")
    assert malformed.code == 2 and "expected KEY=VALUE, got 'acme'" in malformed.err
    twice = await cli(
        "connections", "connect", name, "--setting", "subdomain=a", "--setting", "subdomain=b"
    )
    assert twice.code == 1 and "--setting subdomain given more than once" in twice.err
    missing = await cli("connections", "connect", name)
    assert missing.code == 1 and "settings.subdomain: required" in missing.err, missing
    dotted = await cli("connections", "connect", name, "--setting", "subdomain=evil.example")
    assert dotted.code == 1 and "settings.subdomain: must be one DNS label" in dotted.err
    assert (await cli("apps", "remove", name, "--cascade")).code == 0


@pytest.fixture
async def metadata_server() -> Any:
    """An authorization server's RFC 8414 metadata on loopback."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "revocation_endpoint": f"{issuer}/revoke",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "offline_access"],
            }
        )

    app = web.Application()
    app.router.add_get("/.well-known/oauth-authorization-server", metadata)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield issuer
    await runner.cleanup()


async def test_add_from_discovery(cli_env, ops, unique, metadata_server):
    pytest.importorskip("authbroker.discovery")
    name = unique("disc")
    result = await cli(
        "apps",
        "add",
        name,
        "--discover",
        metadata_server,
        "--client-id",
        "cid",
        "--client-auth",
        "basic",
        "--client-secret-stdin",
        stdin="disc-secret",
    )
    assert result.code == 0, result
    assert "openid email offline_access" in result.out  # the scopes the provider supports
    _, app = await get(ops, f"/v1/apps/{name}")
    assert app["authorization_url"] == f"{metadata_server}/authorize"
    assert app["token_url"] == f"{metadata_server}/token"
    assert app["revoke_url"] == f"{metadata_server}/revoke"
    assert app["client_auth"] == "basic"  # explicit wins over the metadata's client_secret_post

    failed = await cli(
        "apps",
        "add",
        unique("disc"),
        "--discover",
        f"http://127.0.0.1:{free_port()}",
        "--client-id",
        "cid",
        "--no-client-secret",
    )
    assert failed.code == 1 and "discovery at" in failed.err and "--token-url" in failed.err


# ------------------------------------------------------------------------------ API keys


async def test_api_keys_on_the_database_without_a_key(cli_env, monkeypatch, settings, unique):
    """How the first admin key is made: no API key given, so on the database itself."""
    monkeypatch.delenv("AUTHBROKER_API_KEY")
    monkeypatch.setenv("AUTHBROKER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUTHBROKER_REDIS_URL", settings.redis_url)
    name = unique("first")
    made = await cli("api-keys", "create", name, "--role", "admin", "--json")
    assert made.code == 0, made
    key = made.json()
    assert key["role"] == "admin" and key["apps"] is None and key["key"].startswith("ab_")
    runtime = await cli(
        "api-keys", "create", unique("rt"), "--role", "runtime", "--app", "google", "--local"
    )
    assert runtime.code == 0 and "role runtime, apps google" in runtime.out
    assert "shown only now" in runtime.out
    listed = await cli("api-keys", "list")
    assert listed.code == 0 and name in listed.out and "ROLE" in listed.out
    assert key["key"] not in listed.out
    line = next(line for line in listed.out.splitlines() if name in line)
    assert " admin " in line and " all " in line and "active" in line
    bad = await cli("api-keys", "create", "x", "--role", "operator", "--app", "google")
    assert bad.code == 1 and "--app" in bad.err and "only runtime keys" in bad.err
    missing = await cli("api-keys", "create", "x")
    assert missing.code == 2 and "--role" in missing.err
    revoked = await cli("api-keys", "revoke", key["id"])
    assert revoked.code == 0 and key["id"] in revoked.out
    again = await cli("api-keys", "show", key["id"], "--json")
    assert again.code == 0 and again.json()["revoked_at"] is not None
    unknown = await cli("api-keys", "show", "nope")
    assert unknown.code == 1 and "no API key with id 'nope'" in unknown.err
    both = await cli("api-keys", "list", "--local", "--url", "http://127.0.0.1:1")
    assert both.code == 2


async def test_api_keys_through_the_api_show_what_a_key_read(cli_env, resources, unique):
    made = await cli(
        "api-keys", "create", unique("rt"), "--role", "runtime", "--app", "reads", "--json"
    )
    assert made.code == 0, made
    key = made.json()
    assert key["apps"] == ["reads"]
    app = await insert_app(resources, unique("reads-app"), "https://provider.example/token")
    connection = unique("reads-c")
    await insert_connection(resources, app, connection, "rt")
    # Limited to the app "reads": this one is refused, and that is no read.
    async with aiohttp.ClientSession(
        base_url=cli_env.url, headers={"Authorization": f"Bearer {key['key']}"}
    ) as runtime:
        async with runtime.get(f"/v1/connections/{connection}/credentials") as response:
            assert response.status == 403
        async with runtime.get("/v1/basic/reads/credentials") as response:
            assert response.status == 404
    made = await cli("api-keys", "create", unique("rt2"), "--role", "runtime", "--json")
    other = made.json()
    async with aiohttp.ClientSession(
        base_url=cli_env.url, headers={"Authorization": f"Bearer {other['key']}"}
    ) as runtime:
        for _ in range(2):
            async with runtime.get(f"/v1/connections/{connection}/credentials") as response:
                assert response.status == 200
    deadline = time.monotonic() + 60
    while True:
        shown = await cli("api-keys", "show", other["id"], "--json")
        assert shown.code == 0, shown
        reads = shown.json()["reads"]
        if reads:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert [(r["kind"], r["subject"], r["count"]) for r in reads] == [("connection", connection, 2)]
    text = await cli("api-keys", "show", other["id"])
    assert "credentials read:" in text.out and connection in text.out
    assert (await cli("api-keys", "show", key["id"])).out.count("(none)") == 1


async def test_a_runtime_key_is_told_it_may_not_manage_keys(cli_env, monkeypatch, unique):
    made = (await cli("api-keys", "create", unique("rt"), "--role", "runtime", "--json")).json()
    monkeypatch.setenv("AUTHBROKER_API_KEY", made["key"])
    refused = await cli("api-keys", "list")
    assert refused.code == 1
    assert "runtime role" in refused.err and "manage API keys" in refused.err
    moved = await cli("apps", "list")
    assert moved.code == 1 and "may not read apps" in moved.err


# ------------------------------------------------------------------------------ events


async def test_events_tail_filters_and_stops_after_limit(cli_env, redis, settings, unique):
    from authbroker.events import EventType, make_event

    app = unique("tail")
    for type_ in (EventType.AUTHORIZED, EventType.INVALIDATED, EventType.REVOKED):
        event = make_event(type_, app=app, connection_id="c1", status="active")
        await redis.xadd(
            settings.events_stream, {"type": event["type"], "event": json.dumps(event)}
        )
    result = await cli(
        "events",
        "tail",
        "--from-start",
        "--app",
        app,
        "--type",
        "connection.invalidated",
        "--type",
        "connection.revoked",
        "--limit",
        "2",
        "--json",
    )
    assert result.code == 0, result
    assert [e["type"] for e in result.lines()] == [
        "connection.invalidated",
        "connection.revoked",
    ]
    bad = await cli("events", "tail", "--limit", "0")
    assert bad.code == 2


# ------------------------------------------------------------------------------ webhooks


async def test_webhooks_create_deliver_rotate_replay_and_delete(cli_env, worker, resources, unique):
    """The secret is printed by create and rotate-secret, once each, and nowhere else; the
    deliveries it signs verify with the runtime client."""
    from authbroker_client import verify_webhook

    from authbroker.events import EventType, make_event
    from storage import outbox
    from tests.chaos_helpers import FakeProvider, wait_until

    app = unique("clihook")
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    receiver = await FakeProvider().start()
    receiver.handlers["/in"] = hook
    outputs: list[Result] = []

    async def run(*argv: str) -> Result:
        result = await cli(*argv)
        outputs.append(result)
        return result

    async def deliver() -> dict[str, Any]:
        event = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")
        async with resources.pool.acquire() as conn, conn.transaction():
            await outbox.append(conn, event)

        async def arrived() -> bool:
            return any(json.loads(body)["id"] == event["id"] for _, body in received)

        assert await wait_until(arrived, timeout=60)
        return event

    try:
        created = await cli(
            "webhooks",
            "create",
            receiver.url("/in"),
            "--type",
            "connection.",
            "--app",
            app,
            "--description",
            "from the cli",
        )
        assert created.code == 0, created
        secret = next(
            line.split()[1] for line in created.out.splitlines() if line.startswith("secret:")
        )
        assert secret.startswith("whsec_") and "not shown again" in created.err
        webhook_id = next(
            line.split()[1] for line in created.out.splitlines() if line.startswith("id:")
        )

        listed = await run("webhooks", "list")
        assert webhook_id in listed.out and "enabled" in listed.out
        shown = await run("webhooks", "show", webhook_id, "--json")
        assert shown.json()["types"] == ["connection."] and "secret" not in shown.json()

        event = await deliver()
        headers, body = received[-1]
        assert verify_webhook(headers, body, secret) == event
        history = await run("webhooks", "deliveries", webhook_id, "--json")
        [attempt] = history.json()
        assert attempt["event_id"] == event["id"] and attempt["outcome"] == "delivered"
        table_ = await run("webhooks", "deliveries", webhook_id)
        assert event["id"] in table_.out and "delivered" in table_.out
        replayed = await run("webhooks", "replay", webhook_id, str(attempt["delivery_id"]))
        assert replayed.code == 0 and "sent again" in replayed.out

        async def replay_arrived() -> bool:
            return sum(json.loads(b)["id"] == event["id"] for _, b in received) == 2

        assert await wait_until(replay_arrived, timeout=60)

        rotated = await cli(
            "webhooks", "rotate-secret", webhook_id, "--keep-previous", "0", "--json"
        )
        assert rotated.code == 0, rotated
        new_secret = rotated.json()["secret"]
        assert new_secret != secret
        later = await deliver()
        headers, body = received[-1]
        assert verify_webhook(headers, body, new_secret) == later
        assert len(headers["webhook-signature"].split()) == 1

        changed = await run("webhooks", "update", webhook_id, "--all-types", "--description", "")
        assert changed.code == 0 and "every type" in changed.out
        both = await run("webhooks", "update", webhook_id, "--type", "app.", "--all-types")
        assert both.code == 1 and "cannot be used together" in both.err
        nothing = await run("webhooks", "update", webhook_id)
        assert nothing.code == 1 and "nothing to change" in nothing.err
        disabled = await run("webhooks", "disable", webhook_id)
        assert disabled.code == 0 and "disabled (operator)" in disabled.out
        enabled = await run("webhooks", "enable", webhook_id, "--json")
        assert enabled.json()["enabled"] is True

        refused = await run("webhooks", "create", "https://169.254.169.254/latest")
        assert refused.code == 1 and "url:" in refused.err and "metadata" in refused.err
        unknown = await run("webhooks", "show", "no-such-webhook")
        assert unknown.code == 1 and "no webhook subscription" in unknown.err

        deleted = await run("webhooks", "delete", webhook_id)
        assert deleted.code == 0
        gone = await run("webhooks", "show", webhook_id)
        assert gone.code == 1
    finally:
        await receiver.stop()
    assert_secret_hidden(secret, *outputs)
    assert_secret_hidden(new_secret, *outputs)


async def test_apps_keys_generate_upload_and_show_the_jwks(cli_env, ops, unique):
    name = unique("clikeys")
    added = await cli(
        "apps",
        "add",
        name,
        "--client-id",
        f"id-{name}",
        *provider_args(),
        "--client-auth",
        "private_key_jwt",
        "--no-client-secret",
    )
    assert added.code == 0, added
    generated = await cli("apps", "keys", "generate", name, "--alg", "ES256", "--json")
    assert generated.code == 0, generated
    assert generated.json()["jwks"]["keys"][0]["kty"] == "EC"

    own = jwt.generate_key("RS256")
    uploaded = await cli("apps", "keys", "upload", name, "--drop-previous", stdin=own.pem)
    assert uploaded.code == 0, uploaded
    assert f"with key {own.kid}" in uploaded.out
    shown = await cli("apps", "keys", "jwks", name)
    assert [key["kid"] for key in shown.json()["keys"]] == [own.kid]  # the others dropped
    assert "PRIVATE" not in shown.out + uploaded.out and '"d"' not in shown.out
    status, app = await get(ops, f"/v1/apps/{name}")
    assert status == 200 and app["key_ids"] == [own.kid]

    refused = await cli("apps", "keys", "upload", name, stdin="-----BEGIN PRIVATE KEY-----\nx\n")
    assert refused.code != 0 and "neither an RSA nor an EC private key" in refused.err, refused
    empty = await cli("apps", "keys", "upload", name, stdin="")
    assert empty.code != 0 and "no private key on stdin" in empty.err
