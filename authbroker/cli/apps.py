"""`authbroker apps`: the OAuth applications, through the HTTP API."""

from __future__ import annotations

from typing import Any

import click

from authbroker.cli import app_keys, presets, transfer
from authbroker.cli.api import ApiGroup, api_call, diagnose
from authbroker.cli.app_options import CLEARABLE, OPTION_OF, app_options, given_settings
from authbroker.cli.base import KEY_VALUE, CliError, as_json, exclusive
from authbroker.cli.inputs import read_secret
from authbroker.cli.output import details, emit, table, text, when
from authbroker.client import ApiError, AuthbrokerClient, segment

apps = ApiGroup(
    "apps",
    short_help="OAuth applications: add, list, show, update, remove, export, import",
    examples="authbroker apps add crm --preset hubspot --client-id ID\n"
    "authbroker apps list\n"
    "authbroker apps export > apps.json",
)


def _app_state(app: dict[str, Any]) -> str:
    if app.get("deleting"):
        return "deleting"
    if app.get("paused"):
        return f"paused: {app.get('paused_problem') or 'settings refused'}"
    if app.get("awaiting_secret"):
        return "awaiting secret"
    return "ok"


def _client_auth(app: dict[str, Any]) -> str:
    detected, works = app.get("client_auth_detected"), app.get("client_auth_works")
    shown = f"{app.get('client_auth')}" + (f" (detected: {detected})" if detected else "")
    if works:
        shown += f" (refused; {works} works, seen {when(app.get('client_auth_works_at'))})"
    return shown


def _show_app(app: dict[str, Any]) -> None:
    print(
        details(
            [
                ("name", app.get("name")),
                ("state", _app_state(app)),
                ("preset", app.get("preset")),
                ("client id", app.get("client_id")),
                ("client secret", "set" if app.get("client_secret_set") else "not set"),
                ("previous secrets", "set" if app.get("client_secrets_previous_set") else "none"),
                ("authorization url", app.get("authorization_url")),
                ("token url", app.get("token_url")),
                ("revoke url", app.get("revoke_url")),
                ("connection settings", app.get("connection_settings") or None),
                ("scopes", app.get("scopes")),
                ("scope separator", repr(app.get("scope_separator", " "))),
                ("client auth", _client_auth(app)),
                ("token request format", app.get("token_request_format")),
                ("assertion audience", app.get("client_assertion_audience")),
                ("keys", app.get("key_ids") or "none"),
                ("jwks public", app.get("jwks_public")),
                ("authorize params", app.get("authorize_params")),
                ("token params", app.get("token_params")),
                ("pkce", app.get("pkce")),
                ("refresh margin", f"{app.get('refresh_margin')} s"),
                ("default token lifetime", app.get("default_token_lifetime")),
                ("refresh token lifetime", app.get("refresh_token_lifetime")),
                ("probe url", app.get("probe_url")),
                ("probe interval", app.get("probe_interval")),
                ("reports to invalidate", app.get("reports_to_invalidate")),
                ("issuer", app.get("issuer")),
                ("require iss", app.get("require_iss")),
                ("reconnect links", app.get("reconnect_links")),
                ("redirect url", app.get("redirect_url")),
                ("created", when(app.get("created_at"))),
                ("updated", when(app.get("updated_at"))),
            ]
        )
    )


@apps.command(
    short_help="add an OAuth application",
    examples='printf %s "$SECRET" | authbroker apps add google --preset google --client-id ID \\\n'
    "    --client-secret-stdin\n"
    "authbroker apps add entra --preset microsoft --placeholder tenant=contoso \\\n"
    "    --client-id ID --scope offline_access --scope User.Read\n"
    "authbroker apps add acme --discover https://login.acme.example --client-id ID\n"
    "authbroker apps add crm --client-id ID \\\n"
    "    --authorization-url https://crm.example/oauth/authorize \\\n"
    "    --token-url https://crm.example/oauth/token --scope 'read write' \\\n"
    "    --client-auth basic --authorize-param prompt=consent\n"
    "authbroker apps add spa --preset google --client-id ID --no-client-secret --dry-run",
)
@click.argument("name")
@click.option("--preset", metavar="NAME", help="a provider preset (authbroker apps presets)")
@click.option(
    "--placeholder",
    "placeholders",
    multiple=True,
    type=KEY_VALUE,
    metavar="NAME=VALUE",
    help="a value the preset needs, e.g. tenant=contoso (repeat)",
)
@click.option(
    "--discover",
    metavar="ISSUER",
    help="read endpoints from ISSUER's RFC 8414 / OpenID Connect metadata",
)
@app_options(update=False)
@click.option("--client-secret-stdin", is_flag=True, help="read the client secret from stdin")
@click.option("--no-client-secret", is_flag=True, help="a public client (PKCE, no secret)")
@click.option(
    "--dry-run", is_flag=True, help="print the definition that would be sent (no secret) and stop"
)
@as_json
@exclusive("--client-secret-stdin", "--no-client-secret")
@api_call
async def add(
    api: AuthbrokerClient,
    name: str,
    preset: str | None,
    placeholders: tuple[tuple[str, str], ...],
    discover: str | None,
    client_secret_stdin: bool,
    no_client_secret: bool,
    dry_run: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Add an OAuth application. NAME (letters, digits, '.', '_', '-') is used in URLs. Start
    from a provider preset (--preset) or the provider's published metadata (--discover), or
    give the endpoints yourself; options given explicitly win over both. The client secret is
    read from a prompt, or from stdin with --client-secret-stdin; it is never taken from the
    command line. Register the redirect URL the command prints at the provider."""
    given: dict[str, Any] = {"name": name, **given_settings(settings)}
    supported = None
    if discover:
        discovered, supported = await presets.discover(api, discover)
        given = {**discovered, **given}
    if placeholders and not preset:
        raise CliError("--placeholder needs --preset")
    if dry_run:
        emit(presets.preview(preset, given, dict(placeholders)) if preset else given)
        return
    # The server fills the preset (explicit values win, parameters are merged), so what is
    # created is what the API would create from the same request.
    body = dict(given)
    if preset:
        body["preset"] = preset
        if placeholders:
            body["placeholders"] = dict(placeholders)
    secret = await read_secret(
        from_stdin=client_secret_stdin,
        prompt=not no_client_secret,
        what="client secret",
        instead="pipe it in with --client-secret-stdin, or pass --no-client-secret for a public "
        "client (PKCE only)",
    )
    if secret is not None:
        body["client_secret"] = secret
    try:
        _, app = await api.post("/v1/apps", body)
    except ApiError as exc:
        if exc.error == "unknown_preset":
            raise CliError(f"{exc.message} (list them: authbroker apps presets)") from None
        if any(f.get("field") == "placeholders" for f in exc.fields):
            raise CliError(f"{exc.message} (give it with --placeholder NAME=VALUE)") from None
        raise
    if as_json:
        emit(app)
        return
    _show_app(app)
    print(f"\nRegister this redirect URL at the provider: {app.get('redirect_url')}")
    for line in presets.preset_notes(preset) if preset else ():
        print(f"note: {line}")
    if supported:
        print(f"scopes the provider supports: {text(supported)}")
    if app.get("client_secret_set") is False:
        print("no client secret: this app is a public client (PKCE only)")


@apps.command(
    "list",
    short_help="list applications",
    examples="authbroker apps list\nauthbroker apps list --json | jq -r '.[].name'",
)
@as_json
@api_call
async def list_apps(api: AuthbrokerClient, as_json: bool) -> None:
    items = (await api.get("/v1/apps"))["items"]
    if as_json:
        emit(items)
        return
    print(
        table(
            ["NAME", "CLIENT ID", "AUTH", "SCOPES", "PRESET", "STATE"],
            [
                [
                    a["name"],
                    a.get("client_id"),
                    a.get("client_auth"),
                    a.get("scopes"),
                    a.get("preset"),
                    _app_state(a),
                ]
                for a in items
            ],
            widths={"CLIENT ID": 32, "SCOPES": 40},
            empty="no apps yet (add one: authbroker apps add NAME --help)",
        )
    )


@apps.command(
    short_help="show an application (never its secret) and its redirect URL",
    examples="authbroker apps show google",
)
@click.argument("name")
@as_json
@api_call
async def show(api: AuthbrokerClient, name: str, as_json: bool) -> None:
    app = await api.get(f"/v1/apps/{segment(name)}")
    if as_json:
        emit(app)
    else:
        _show_app(app)


@apps.command(
    short_help="change an application's settings or secret",
    examples='printf %s "$NEW_SECRET" | authbroker apps update google --client-secret-stdin\n'
    "authbroker apps update google --token-url https://oauth2.googleapis.com/token "
    "--client-secret-prompt\n"
    "authbroker apps update crm --scope read --scope write --client-auth basic\n"
    "authbroker apps update crm --clear revoke_url",
)
@click.argument("name")
@app_options(update=True)
@click.option(
    "--clear",
    multiple=True,
    type=click.Choice(sorted(CLEARABLE)),
    metavar="FIELD",
    help=f"empty an optional setting (repeat): {', '.join(sorted(CLEARABLE))}",
)
@click.option("--client-secret-stdin", is_flag=True, help="read the new secret from stdin")
@click.option("--client-secret-prompt", is_flag=True, help="ask for the new secret")
@click.option(
    "--confirm-secret-destination",
    is_flag=True,
    help="admin keys: send the stored secret and tokens to the changed URLs",
)
@as_json
@exclusive("--client-secret-stdin", "--client-secret-prompt")
@api_call
async def update(
    api: AuthbrokerClient,
    name: str,
    clear: tuple[str, ...],
    client_secret_stdin: bool,
    client_secret_prompt: bool,
    confirm_secret_destination: bool,
    as_json: bool,
    **settings: Any,
) -> None:
    """Change an application: only the settings given are sent. Setting the client secret
    (--client-secret-stdin, or --client-secret-prompt) ends an imported app's wait for it. Any
    change resumes an app paused for refused settings. A new authorization, token, revoke or
    probe URL changes where the app's secrets go: give the client secret with it, or (admin
    keys) --confirm-secret-destination."""
    body = given_settings(settings)
    for field in clear:
        if field in body:
            raise CliError(f"{OPTION_OF.get(field, field)} and --clear {field} contradict")
        body[field] = CLEARABLE[field]
    secret = await read_secret(
        from_stdin=client_secret_stdin,
        prompt=client_secret_prompt,
        what="client secret",
        instead="pipe it in with --client-secret-stdin",
    )
    if secret is not None:
        body["client_secret"] = secret
    if not body:
        raise CliError("nothing to update: give at least one setting (see --help)")
    if confirm_secret_destination:
        body["confirm_secret_destination"] = True
    app = await api.patch(f"/v1/apps/{segment(name)}", body)
    if as_json:
        emit(app)
        return
    changed = sorted(k for k in body if k not in ("client_secret", "confirm_secret_destination"))
    if secret is not None:
        changed.append("client secret")
    print(f"updated app {app['name']}: {', '.join(changed)}")
    print(f"state: {_app_state(app)}")


@apps.command(
    short_help="delete an application",
    examples="authbroker apps remove old-crm\nauthbroker apps remove old-crm --cascade",
)
@click.argument("name")
@click.option("--cascade", is_flag=True, help="revoke and delete the app's connections too")
@as_json
@api_call
async def remove(api: AuthbrokerClient, name: str, cascade: bool, as_json: bool) -> None:
    """Delete an application. An app with live connections is refused unless --cascade, which
    revokes them at the provider first (the app goes once they are revoked)."""
    try:
        status, body = await api.delete(
            f"/v1/apps/{segment(name)}", params={"cascade": "true"} if cascade else None
        )
    except ApiError as exc:
        if exc.error == "app_has_connections":
            raise CliError(
                f"app {name!r} has {exc.body.get('connections')} live connection(s).\n"
                "Delete them first (authbroker connections delete ID), or pass --cascade to "
                "revoke and delete them with the app."
            ) from None
        raise
    if as_json:
        emit(body if body else {"app": name, "status": "deleted"})
    elif status == 202:
        print(
            f"app {name}: revoking {body.get('connections_revoking')} connection(s); "
            "the app is deleted once they are revoked"
        )
    else:
        print(f"removed app {name}")


apps.add_command(transfer.export)
apps.add_command(transfer.import_)
apps.add_command(presets.list_presets)
apps.add_command(app_keys.keys)


@apps.command(
    "diagnose",
    short_help="check an application's settings (exit 1 when a check fails)",
    examples="authbroker apps diagnose google",
)
@click.argument("name")
@as_json
@api_call
async def diagnose_app(api: AuthbrokerClient, name: str, as_json: bool) -> int:
    return await diagnose(api, f"/v1/apps/{segment(name)}/diagnosis", f"app {name}", as_json)
