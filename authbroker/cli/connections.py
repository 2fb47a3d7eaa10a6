"""`authbroker connections`: OAuth connections through the HTTP API, including starting an
authorization and waiting for its outcome."""

from __future__ import annotations

import asyncio
import time
import webbrowser
from typing import Any

import click

from authbroker.cli.api import ApiGroup, api_call, diagnose
from authbroker.cli.app_options import split_scopes
from authbroker.cli.base import KEY_VALUE, POSITIVE, CliError, as_json
from authbroker.cli.output import details, emit, emit_line, note, table, text, when
from authbroker.client import ApiError, AuthbrokerClient, Unreachable, segment
from authbroker.states import (
    AUTHORIZATION_LIFETIME,
    CONNECT_LINK_LIFETIME,
    CONNECT_LINK_MAX_LIFETIME,
)

STATUSES = ("pending", "active", "failed", "expired", "revoking", "revoked")


connections = ApiGroup(
    "connections",
    short_help="OAuth connections: list, show, connect, link, refresh, delete, diagnose",
    examples="authbroker connections connect google --connection-id acme-google --wait\n"
    "authbroker connections list --app google",
)


def _show_connection(c: dict[str, Any]) -> None:
    print(
        details(
            [
                ("connection id", c.get("connection_id")),
                ("app", c.get("app")),
                ("grant", c.get("grant")),
                ("token parameters", c.get("token_params")),
                ("status", c.get("status")),
                ("problem", c.get("problem")),
                ("what to do", c.get("problem_detail") if c.get("problem") else None),
                ("requested scopes", c.get("requested_scopes")),
                ("granted scopes", c.get("granted_scopes")),
                ("token type", c.get("token_type")),
                ("access token", "held" if c.get("has_access_token") else "none"),
                ("refresh token", "held" if c.get("has_refresh_token") else "none"),
                ("expires", when(c.get("expires_at"))),
                ("refresh at", when(c.get("refresh_at"))),
                ("refresh token expires", when(c.get("refresh_token_expires_at"))),
                ("last refresh", when(c.get("last_refresh_at"))),
                ("failed attempts", c.get("failed_attempts")),
                ("next attempt", when(c.get("next_attempt_at"))),
                ("last error", c.get("last_error")),
                ("authorized", when(c.get("authorized_at"))),
                ("metadata", c.get("metadata")),
                ("settings", c.get("settings") or None),
                ("created", when(c.get("created_at"))),
                ("updated", when(c.get("updated_at"))),
            ]
        )
    )


id_argument = click.argument("connection_id", metavar="ID")


@connections.command(
    "list",
    short_help="list connections",
    examples="authbroker connections list\n"
    "authbroker connections list --app google --status failed\n"
    "authbroker connections list --json --limit 5000",
)
@click.option("--app", help="only this app's connections")
@click.option("--status", type=click.Choice(STATUSES), help="only connections in this status")
@click.option("--limit", type=POSITIVE, default=100, help="at most this many (100)")
@as_json
@api_call
async def list_connections(
    api: AuthbrokerClient, app: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    items: list[dict[str, Any]] = []
    after: str | None = None
    more = False
    while len(items) < limit:
        page = await api.get(
            "/v1/connections",
            app=app,
            status=status,
            after=after,
            limit=min(limit - len(items), 1000),
        )
        items += page["items"]
        after = page.get("next")
        more = after is not None
        if not more:
            break
    if as_json:
        emit(items)
        return
    print(
        table(
            ["CONNECTION", "APP", "STATUS", "PROBLEM", "EXPIRES", "REFRESH AT"],
            [
                [
                    c["connection_id"],
                    c["app"],
                    c["status"],
                    c.get("problem"),
                    when(c.get("expires_at")),
                    when(c.get("refresh_at")),
                ]
                for c in items
            ],
            empty="no connections"
            + (" match" if app or status else " yet")
            + " (start one: authbroker connections connect APP)",
        )
    )
    if more:
        note(f"more connections exist: raise --limit (now {limit})")


@connections.command(
    short_help="show a connection (never its tokens)",
    examples="authbroker connections show acme-google",
)
@id_argument
@as_json
@api_call
async def show(api: AuthbrokerClient, connection_id: str, as_json: bool) -> None:
    connection = await api.get(f"/v1/connections/{segment(connection_id)}")
    if as_json:
        emit(connection)
    else:
        _show_connection(connection)


setting_option = click.option(
    "--setting",
    "settings",
    multiple=True,
    type=KEY_VALUE,
    metavar="NAME=VALUE",
    help="a value the app takes per connection (its connection_settings), e.g. "
    "subdomain=acme (repeat); without it, an existing connection keeps its own",
)


@connections.command(
    short_help="start an authorization and print the URL to approve it, or a service connection",
    examples="authbroker connections connect google\n"
    "authbroker connections connect google --connection-id acme-google --wait\n"
    "authbroker connections connect google --scope openid --scope email --open --wait\n"
    "authbroker connections connect zendesk --setting subdomain=acme --wait\n"
    "authbroker connections create auth0-m2m --grant client_credentials "
    "--audience https://api.example.com --wait",
)
@click.argument("app", metavar="APP")
@click.option("--connection-id", metavar="ID", help="the connection's id (default: generated)")
@click.option(
    "--grant",
    type=click.Choice(["authorization_code", "client_credentials"]),
    default="authorization_code",
    help="authorization_code (default): a user approves; client_credentials: a service "
    "connection for the app itself, no user",
)
@click.option("--audience", help="client_credentials: the audience token request parameter")
@click.option(
    "--resource",
    "resources",
    multiple=True,
    metavar="URI",
    help="client_credentials: an RFC 8707 resource indicator (repeat)",
)
@click.option(
    "--token-param",
    "token_params",
    multiple=True,
    type=KEY_VALUE,
    metavar="KEY=VALUE",
    help="client_credentials: another token request parameter (repeat)",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="request these scopes instead of the app's (repeat)",
)
@click.option(
    "--metadata",
    multiple=True,
    type=KEY_VALUE,
    metavar="KEY=VALUE",
    help="metadata kept with the connection (repeat)",
)
@setting_option
@click.option("--wait", is_flag=True, help="wait for the outcome and print it")
@click.option(
    "--wait-timeout",
    type=float,
    default=AUTHORIZATION_LIFETIME,
    metavar="S",
    help="stop waiting after S seconds (default: the authorization's 10 minutes)",
)
@click.option("--open", "open_url", is_flag=True, help="open the URL in a local browser")
@as_json
@api_call
async def connect(
    api: AuthbrokerClient,
    app: str,
    connection_id: str | None,
    grant: str,
    audience: str | None,
    resources: tuple[str, ...],
    token_params: tuple[tuple[str, str], ...],
    scopes: tuple[str, ...],
    metadata: tuple[tuple[str, str], ...],
    settings: tuple[tuple[str, str], ...],
    wait: bool,
    wait_timeout: float,
    open_url: bool,
    as_json: bool,
) -> int | None:
    """Start an authorization for APP and print the URL where the account owner approves it
    (it is valid for 10 minutes). With --wait, wait for the outcome and print it: exit code 0
    once the connection is active, 1 if the authorization failed or expired. Connecting an
    existing connection id authorizes it again.

    With --grant client_credentials there is no user: a worker requests the app's own token at
    once and each next one before it expires; --wait waits for the first."""
    body: dict[str, Any] = {}
    if connection_id:
        body["connection_id"] = connection_id
    if scopes:
        body["scopes"] = split_scopes(scopes)
    if metadata:
        body["metadata"] = dict(metadata)
    if settings:
        body["settings"] = _settings(settings)
    if grant == "client_credentials":
        if open_url:
            raise click.UsageError("--open: a service connection has no URL to approve")
        body["grant"] = grant
        if audience:
            body["audience"] = audience
        if resources:
            body["resource"] = list(resources)
        if token_params:
            body["token_params"] = dict(token_params)
        return await _service_connection(api, app, body, wait, wait_timeout, as_json)
    given = [
        n
        for n, v in (
            ("--audience", audience),
            ("--resource", resources),
            ("--token-param", token_params),
        )
        if v
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --grant client_credentials")
    started = await _post_for(api, app, "connections", body)
    if as_json:
        emit_line(started)
    else:
        print(f"connection: {started['connection_id']}")
        print("open this URL in a browser and approve the access:")
        print(started["authorize_url"], flush=True)
    if open_url:
        webbrowser.open(started["authorize_url"])
    if not wait:
        if not as_json:
            print(
                f"(follow it: authbroker connections show {started['connection_id']}, or run "
                "connect again with --wait)"
            )
        return None
    return await _wait_for_authorization(api, started, wait_timeout, as_json)


# `create` is the same command, by the name a service connection reads best with.
connections.add_command(connect, "create")


async def _service_connection(
    api: AuthbrokerClient,
    app: str,
    body: dict[str, Any],
    wait: bool,
    wait_timeout: float,
    as_json: bool,
) -> int | None:
    started = await _post_for(api, app, "connections", body)
    cid = started["connection_id"]
    if not wait:
        if as_json:
            emit_line(started)
        else:
            print(f"connection: {cid} (client credentials): its token is being requested")
            print(f"(follow it: authbroker connections show {cid}, or add --wait)")
        return None
    if not as_json:
        note(f"waiting for {cid}'s token (up to {wait_timeout:g} s; Ctrl-C stops waiting)…")
    deadline = time.monotonic() + wait_timeout
    connection: dict[str, Any] = {}
    while time.monotonic() < deadline:
        connection = await api.get(f"/v1/connections/{segment(cid)}")
        if not connection.get("authorization_pending"):
            break
        await asyncio.sleep(0.5)
    refused = (connection.get("last_error") or {}).get("stage") == "client_credentials"
    if connection.get("authorization_pending") or refused or connection.get("status") != "active":
        if as_json:
            emit_line({"status": "failed", "connection": connection})
        else:
            what = connection.get("problem") or "no token yet"
            note(
                f"no token for {cid}: {what}"
                + (f"\n{connection['problem_detail']}" if connection.get("problem_detail") else "")
                + f"\n(details: authbroker connections diagnose {cid})"
            )
        return 1
    if as_json:
        emit_line({"status": "succeeded", "connection": connection})
    else:
        print(f"connected: {cid} ({app}) is active (client credentials)")
        print(f"granted scopes: {text(connection.get('granted_scopes'))}")
    return 0


async def _post_for(api: AuthbrokerClient, app: str, what: str, body: dict[str, Any]) -> Any:
    """POST /v1/apps/APP/WHAT: an app waiting for its secret says how to set it."""
    try:
        _, answer = await api.post(f"/v1/apps/{segment(app)}/{what}", body)
    except ApiError as exc:
        if exc.error == "app_awaiting_secret":
            raise CliError(
                f"app {app!r} was imported without its client secret; set it first:\n"
                f"  authbroker apps update {app} --client-secret-stdin < secret-file"
            ) from None
        raise
    return answer


@connections.command(
    short_help="make a connect link: a URL that authorizes a connection when its user opens it",
    examples="authbroker connections link google --connection-id acme-google\n"
    "authbroker connections link google --scope read --expires-in 86400 --json",
)
@click.argument("app", metavar="APP")
@click.option(
    "--connection-id", metavar="ID", help="the connection to authorize again (default: a new one)"
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPE",
    help="request these scopes instead of the connection's or the app's (repeat)",
)
@click.option(
    "--expires-in",
    type=click.IntRange(60, CONNECT_LINK_MAX_LIFETIME),
    metavar="S",
    help=f"seconds until the link expires (default {CONNECT_LINK_LIFETIME // 86_400} days, "
    f"at most {CONNECT_LINK_MAX_LIFETIME // 86_400})",
)
@setting_option
@as_json
@api_call
async def link(
    api: AuthbrokerClient,
    app: str,
    connection_id: str | None,
    scopes: tuple[str, ...],
    expires_in: int | None,
    settings: tuple[tuple[str, str], ...],
    as_json: bool,
) -> None:
    """Make a single-use link that starts a fresh authorization of a connection when it is
    opened, for the person who must authorize (they need no API key): print its URL, shown
    this once. Without --connection-id a new connection id is made (printed on stderr)."""
    body: dict[str, Any] = {}
    if connection_id:
        body["connection_id"] = connection_id
    if scopes:
        body["scopes"] = split_scopes(scopes)
    if expires_in is not None:
        body["expires_in"] = expires_in
    if settings:
        body["settings"] = _settings(settings)
    made = await _post_for(api, app, "connect-links", body)
    if as_json:
        emit(made)
        return
    print(made["url"], flush=True)
    note(f"connection {made['connection_id']}; works once, until {when(made['expires_at'])} UTC")


def _settings(given: tuple[tuple[str, str], ...]) -> dict[str, str]:
    names = [name for name, _ in given]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CliError(f"--setting {', '.join(twice)} given more than once: give each once")
    return dict(given)


async def _wait_for_authorization(
    api: AuthbrokerClient, started: dict[str, Any], wait_timeout: float, as_json: bool
) -> int:
    authorization_id = started["authorization_id"]
    limit = min(wait_timeout, AUTHORIZATION_LIFETIME + 5)
    deadline = time.monotonic() + limit
    if not as_json:
        note(f"waiting for the authorization (up to {limit:g} s; Ctrl-C stops waiting)…")
    outcome: dict[str, Any] = {"status": "pending"}
    unreachable_noted = False
    while time.monotonic() < deadline:
        try:
            outcome = await api.authorization_status(authorization_id)
        except Unreachable as exc:
            # The server may be restarting: keep waiting, the authorization lives in Postgres.
            if not unreachable_noted:
                note(f"authbroker did not answer ({exc.reason}); still waiting…")
                unreachable_noted = True
            await asyncio.sleep(2)
            continue
        if outcome.get("status") in {"succeeded", "failed"}:
            break
        await asyncio.sleep(0.5)
    status = outcome.get("status")
    if status == "pending":
        outcome = {
            **outcome,
            "status": "failed",
            "problem": "authorization_expired",
            "detail": "The authorization did not complete in time; start it again.",
        }
    result = {k: outcome.get(k) for k in ("status", "app", "connection_id", "problem", "detail")}
    result["connection_id"] = result["connection_id"] or started["connection_id"]
    if result["status"] == "succeeded":
        try:
            connection = await api.get(f"/v1/connections/{segment(result['connection_id'])}")
        except ApiError:
            connection = None
        if as_json:
            emit_line({**result, "connection": connection})
        else:
            print(f"connected: {result['connection_id']} ({result['app']}) is active")
            if connection:
                print(f"granted scopes: {text(connection.get('granted_scopes'))}")
                if connection.get("problem"):
                    print(
                        f"note: {connection['problem']}: {connection.get('problem_detail') or ''}"
                    )
        return 0
    if as_json:
        emit_line(result)
    else:
        note(
            f"authorization failed: {result.get('problem') or 'unknown problem'}"
            + (f"\n{result['detail']}" if result.get("detail") else "")
            + f"\n(details: authbroker connections diagnose {result['connection_id']})"
        )
    return 1


@connections.command(
    short_help="refresh a connection's tokens now (exit 1 if the refresh failed)",
    examples="authbroker connections refresh acme-google",
)
@id_argument
@as_json
@api_call
async def refresh(api: AuthbrokerClient, connection_id: str, as_json: bool) -> int:
    _, result = await api.post(f"/v1/connections/{segment(connection_id)}/refresh")
    connection = result.get("connection") or {}
    if as_json:
        emit(result)
    else:
        outcome = result.get("outcome")
        print(f"{connection_id}: {outcome}; status {connection.get('status')}")
        if outcome == "refreshed":
            print(f"expires: {when(connection.get('expires_at'))}")
        if connection.get("problem"):
            print(f"problem: {connection['problem']}: {connection.get('problem_detail') or ''}")
    return 1 if result.get("outcome") == "failed" else 0


@connections.command(
    short_help="revoke a connection's tokens at the provider and delete it",
    examples="authbroker connections delete acme-google",
)
@id_argument
@as_json
@api_call
async def delete(api: AuthbrokerClient, connection_id: str, as_json: bool) -> None:
    status, body = await api.delete(f"/v1/connections/{segment(connection_id)}")
    if as_json:
        emit(body or {"connection_id": connection_id, "status": "revoked"})
    elif status == 202:
        print(
            f"{connection_id}: revoking at the provider; its tokens are wiped once done "
            f"(follow it: authbroker connections show {connection_id})"
        )
    else:
        print(f"{connection_id}: already revoked")


@connections.command(
    "diagnose",
    short_help="walk a connection's common failures (exit 1 when a check fails)",
    examples="authbroker connections diagnose acme-google\n"
    "authbroker connections diagnose acme-google --json",
)
@id_argument
@as_json
@api_call
async def diagnose_connection(api: AuthbrokerClient, connection_id: str, as_json: bool) -> int:
    path = f"/v1/connections/{segment(connection_id)}/diagnosis"
    return await diagnose(api, path, f"connection {connection_id}", as_json)
