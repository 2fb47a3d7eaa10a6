"""The CLI commands that drive the HTTP API: apps, basic, connections, events.

Each command is `async def command(api, args) -> int | None` (None means exit code 0). They
read secrets from a prompt or stdin only, print tables (or `--json`) on stdout, and leave
errors to the caller, which turns the client's failures into messages that say what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

from authbroker.cli_output import details, emit, emit_line, note, table, text, when
from authbroker.client import ApiError, AuthbrokerClient, Unreachable, segment


class CommandError(Exception):
    """A user-facing failure found by a command: printed to stderr, exit code 1."""


AUTHORIZATION_LIFETIME = 600.0  # seconds, as the server's (handlers.connections)

# Settings `apps add` and `apps update` take as options: (field, option dest).
SIMPLE_FIELDS = (
    "client_id",
    "authorization_url",
    "token_url",
    "revoke_url",
    "scope_separator",
    "client_auth",
    "pkce",
    "refresh_margin",
    "default_token_lifetime",
    "refresh_token_lifetime",
    "probe_url",
    "probe_interval",
)
# `apps update --clear FIELD`: what clearing sends (null where the API allows it).
CLEARABLE: dict[str, Any] = {
    "revoke_url": None,
    "probe_url": None,
    "probe_interval": None,
    "default_token_lifetime": None,
    "refresh_token_lifetime": None,
    "scopes": [],
    "authorize_params": {},
    "token_params": {},
    "client_secrets_previous": [],
}
# API field names as the CLI spells them, for error messages.
OPTION_OF = {
    **{f: "--" + f.replace("_", "-") for f in SIMPLE_FIELDS},
    "scopes": "--scope",
    "authorize_params": "--authorize-param",
    "token_params": "--token-param",
    "client_secret": "--client-secret-stdin",
    "login": "--login",
    "password": "--password-stdin",
    "connection_id": "--connection-id",
    "metadata": "--metadata",
    "preset": "--preset",
    "placeholders": "--placeholder",
}


# ---------------------------------------------------------------- input


def key_value(raw: str) -> tuple[str, str]:
    """argparse type for KEY=VALUE options."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {raw!r}")
    return key.strip(), value


def _pairs(values: list[tuple[str, str]] | None) -> dict[str, str] | None:
    return None if values is None else dict(values)


def _scopes(values: list[str] | None) -> list[str] | None:
    """`--scope a --scope "b c"`: each option may hold several scopes separated by spaces."""
    if values is None:
        return None
    return [s for v in values for s in v.split()]


def app_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The app settings given as options, and only those (a PATCH sends nothing else)."""
    fields = {f: getattr(args, f) for f in SIMPLE_FIELDS if getattr(args, f, None) is not None}
    for field, value in (
        ("scopes", _scopes(args.scope)),
        ("authorize_params", _pairs(args.authorize_param)),
        ("token_params", _pairs(args.token_param)),
    ):
        if value is not None:
            fields[field] = value
    return fields


def _read_stdin_secret(what: str) -> str:
    raw = sys.stdin.read()
    secret = raw.rstrip("\r\n")
    if not secret:
        raise CommandError(f'no {what} on stdin (pipe it in, e.g. `printf %s "$SECRET" | …`)')
    if "\n" in secret:
        raise CommandError(f"stdin holds more than one line; expected only the {what}")
    return secret


def _prompt_secret(what: str) -> str:
    secret = getpass.getpass(f"{what[0].upper() + what[1:]}: ")
    if not secret:
        raise CommandError(f"no {what} entered")
    return secret


async def read_secret(*, from_stdin: bool, prompt: bool, what: str, instead: str) -> str | None:
    """A secret from stdin or a prompt; never from the command line."""
    if from_stdin:
        return await asyncio.to_thread(_read_stdin_secret, what)
    if prompt:
        if not sys.stdin.isatty():
            raise CommandError(f"cannot prompt for the {what}: stdin is not a terminal; {instead}")
        return await asyncio.to_thread(_prompt_secret, what)
    return None


def _read_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write_file(path: str, content: str) -> None:
    try:
        Path(path).write_text(content)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- apps


def _app_state(app: dict[str, Any]) -> str:
    if app.get("deleting"):
        return "deleting"
    if app.get("paused"):
        return f"paused: {app.get('paused_problem') or 'settings refused'}"
    if app.get("awaiting_secret"):
        return "awaiting secret"
    return "ok"


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
                ("scopes", app.get("scopes")),
                ("scope separator", repr(app.get("scope_separator", " "))),
                (
                    "client auth",
                    f"{app.get('client_auth')}"
                    + (
                        f" (detected: {app['client_auth_detected']})"
                        if app.get("client_auth_detected")
                        else ""
                    ),
                ),
                ("authorize params", app.get("authorize_params")),
                ("token params", app.get("token_params")),
                ("pkce", app.get("pkce")),
                ("refresh margin", f"{app.get('refresh_margin')} s"),
                ("default token lifetime", app.get("default_token_lifetime")),
                ("refresh token lifetime", app.get("refresh_token_lifetime")),
                ("probe url", app.get("probe_url")),
                ("probe interval", app.get("probe_interval")),
                ("redirect url", app.get("redirect_url")),
                ("created", when(app.get("created_at"))),
                ("updated", when(app.get("updated_at"))),
            ]
        )
    )


def _presets_module() -> Any:
    try:
        from authbroker import presets
    except ImportError:
        raise CommandError(
            "provider presets are not available in this installation (authbroker/presets.py is "
            "missing); give the endpoints with --authorization-url and --token-url"
        ) from None
    return presets


def _discovery_module() -> Any:
    try:
        from authbroker import discovery
    except ImportError:
        raise CommandError(
            "discovery is not available in this installation (authbroker/discovery.py is "
            "missing); give the endpoints with --authorization-url and --token-url"
        ) from None
    return discovery


async def _discover(api: AuthbrokerClient, issuer: str) -> tuple[dict[str, Any], Any]:
    discovery = _discovery_module()
    try:
        found = await discovery.discover(api.session, issuer, timeout=min(api.timeout, 30.0))
    except discovery.DiscoveryError as exc:
        raise CommandError(
            f"discovery at {issuer} failed: {exc}\n"
            "give the endpoints with --authorization-url and --token-url instead"
        ) from None
    # Keys starting with "_" are for display; empty values (discovery leaves scopes to the
    # operator) must not override a preset's.
    fields = {k: v for k, v in found.items() if not k.startswith("_") and v is not None and v != []}
    if found.get("_metadata_url"):
        note(f"read the provider's metadata from {found['_metadata_url']}")
    return fields, found.get("_scopes_supported")


def _preset_notes(name: str) -> tuple[str, ...]:
    """The preset's notes for the operator, when this installation has the presets."""
    try:
        from authbroker import presets
    except ImportError:
        return ()
    try:
        return tuple(presets.get(name).notes or ())
    except KeyError:
        return ()


def _preview(name: str, given: dict[str, Any], placeholders: dict[str, str] | None) -> Any:
    """What the server will make of a preset and the given values (for --dry-run)."""
    presets = _presets_module()
    try:
        return presets.apply(name, given, placeholders or None)
    except KeyError as exc:
        message = exc.args[0] if exc.args else f"no preset named {name!r}"
        raise CommandError(f"{message} (list them: authbroker apps presets)") from None
    except ValueError as exc:
        raise CommandError(f"{exc} (give it with --placeholder NAME=VALUE)") from None


async def apps_add(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    given: dict[str, Any] = {"name": args.name, **app_fields(args)}
    supported = None
    if args.discover:
        discovered, supported = await _discover(api, args.discover)
        given = {**discovered, **given}
    placeholders = _pairs(args.placeholder)
    if placeholders and not args.preset:
        raise CommandError("--placeholder needs --preset")
    if args.dry_run:
        emit(_preview(args.preset, given, placeholders) if args.preset else given)
        return None
    # The server fills the preset (explicit values win, parameters are merged), so what is
    # created is what the API would create from the same request.
    body = dict(given)
    if args.preset:
        body["preset"] = args.preset
        if placeholders:
            body["placeholders"] = placeholders
    secret = await read_secret(
        from_stdin=args.client_secret_stdin,
        prompt=not args.no_client_secret,
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
            raise CommandError(f"{exc.message} (list them: authbroker apps presets)") from None
        if any(f.get("field") == "placeholders" for f in exc.fields):
            raise CommandError(f"{exc.message} (give it with --placeholder NAME=VALUE)") from None
        raise
    if args.json:
        emit(app)
        return None
    _show_app(app)
    print(f"\nRegister this redirect URL at the provider: {app.get('redirect_url')}")
    for line in _preset_notes(args.preset) if args.preset else ():
        print(f"note: {line}")
    if supported:
        print(f"scopes the provider supports: {text(supported)}")
    if app.get("client_secret_set") is False:
        print("no client secret: this app is a public client (PKCE only)")
    return None


async def apps_list(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    items = (await api.get("/v1/apps"))["items"]
    if args.json:
        emit(items)
        return None
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
    return None


async def apps_show(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    app = await api.get(f"/v1/apps/{segment(args.name)}")
    if args.json:
        emit(app)
    else:
        _show_app(app)
    return None


async def apps_update(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    body = app_fields(args)
    for field in args.clear or ():
        if field in body:
            raise CommandError(f"{OPTION_OF.get(field, field)} and --clear {field} contradict")
        body[field] = CLEARABLE[field]
    secret = await read_secret(
        from_stdin=args.client_secret_stdin,
        prompt=args.client_secret_prompt,
        what="client secret",
        instead="pipe it in with --client-secret-stdin",
    )
    if secret is not None:
        body["client_secret"] = secret
    if not body:
        raise CommandError("nothing to update: give at least one setting (see --help)")
    app = await api.patch(f"/v1/apps/{segment(args.name)}", body)
    if args.json:
        emit(app)
        return None
    changed = sorted(k for k in body if k != "client_secret")
    if secret is not None:
        changed.append("client secret")
    print(f"updated app {app['name']}: {', '.join(changed)}")
    print(f"state: {_app_state(app)}")
    return None


async def apps_remove(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    try:
        status, body = await api.delete(
            f"/v1/apps/{segment(args.name)}", params={"cascade": "true"} if args.cascade else None
        )
    except ApiError as exc:
        if exc.error == "app_has_connections":
            raise CommandError(
                f"app {args.name!r} has {exc.body.get('connections')} live connection(s).\n"
                "Delete them first (authbroker connections delete ID), or pass --cascade to "
                "revoke and delete them with the app."
            ) from None
        raise
    if args.json:
        emit(body if body else {"app": args.name, "status": "deleted"})
    elif status == 202:
        print(
            f"app {args.name}: revoking {body.get('connections_revoking')} connection(s); "
            "the app is deleted once they are revoked"
        )
    else:
        print(f"removed app {args.name}")
    return None


async def apps_export(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    params = [("name", n) for n in args.names] or None
    try:
        _, document = await api.request("GET", "/v1/apps/export", params=params)
    except ApiError as exc:
        # A server without the export route answers as if `export` were an app's name.
        if exc.status == 404 and "'export'" in exc.message:
            raise CommandError(
                "this authbroker server has no export endpoint; upgrade it"
            ) from None
        raise
    content = json.dumps(document, indent=2) + "\n"
    if args.output and args.output != "-":
        await asyncio.to_thread(_write_file, args.output, content)
        note(f"exported {len(document['apps'])} app(s) to {args.output} (without secrets)")
    else:
        sys.stdout.write(content)
        sys.stdout.flush()
    return None


async def apps_import(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    raw = await asyncio.to_thread(_read_file, args.file)
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CommandError(f"{args.file} is not JSON: {exc}") from None
    _, result = await api.post(
        "/v1/apps/import", document, params={"replace": "true"} if args.replace else None
    )
    if args.json:
        emit(result)
        return None
    for label, key in (
        ("created", "created"),
        ("updated", "updated"),
        ("unchanged", "unchanged"),
        ("skipped (already exist; --replace updates them)", "skipped"),
    ):
        names = result.get(key) or []
        if names:
            print(f"{label}: {', '.join(names)}")
    if not any(result.get(k) for k in ("created", "updated", "unchanged", "skipped")):
        print("the document holds no apps")
    if result.get("created"):
        print(
            "\nImported apps wait for their client secrets (secrets are never exported); "
            "set each one:\n"
            + "\n".join(
                f"  authbroker apps update {n} --client-secret-stdin < secret-file"
                for n in result["created"]
            )
        )
    return None


async def apps_presets(api: AuthbrokerClient | None, args: argparse.Namespace) -> int | None:
    presets = _presets_module()
    if args.name:
        try:
            preset = presets.get(args.name)
        except KeyError as exc:
            message = exc.args[0] if exc.args else f"no preset named {args.name!r}"
            raise CommandError(f"{message} (list them: authbroker apps presets)") from None
        view = _preset_view(args.name, preset)
        if args.json:
            emit(view)
            return None
        print(details([("preset", args.name), ("title", view["title"])]))
        if view["placeholders"]:
            print(
                "placeholders: "
                + ", ".join(view["placeholders"])
                + "  (give them with --placeholder NAME=VALUE)"
            )
        print(details(sorted(view["values"].items())))
        for line in view["notes"]:
            print(f"note: {line}")
        print(f"\nadd an app from it: authbroker apps add NAME --preset {args.name} --client-id ID")
        return None
    views = [_preset_view(n, presets.get(n)) for n in presets.names()]
    if args.json:
        emit(views)
        return None
    for index, view in enumerate(views):
        if index:
            print()
        title = f"{view['name']}  {view['title']}"
        if view["placeholders"]:
            title += f"  (placeholders: {', '.join(view['placeholders'])})"
        print(title)
        for line in view["notes"]:
            print(f"    {line}")
    return None


def _preset_view(name: str, preset: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": getattr(preset, "title", name),
        "notes": list(getattr(preset, "notes", ()) or ()),
        "placeholders": list(getattr(preset, "placeholders", ()) or ()),
        "values": dict(getattr(preset, "values", {}) or {}),
    }


# ---------------------------------------------------------------- diagnosis


def _print_diagnosis(subject: str, diagnosis: dict[str, Any]) -> None:
    print(f"{subject}: {diagnosis.get('summary', '?')}")
    for check in diagnosis.get("checks") or []:
        status = str(check.get("status", "?"))
        print(f"  [{status:<7}] {check.get('name')}: {check.get('summary') or ''}")
        if status != "ok":
            if check.get("evidence"):
                print(f"            evidence: {text(check['evidence'])}")
            if check.get("remedy"):
                print(f"            remedy:   {check['remedy']}")


async def _diagnose(api: AuthbrokerClient, path: str, subject: str, as_json: bool) -> int:
    try:
        diagnosis = await api.get(path)
    except ApiError as exc:
        if exc.status == 404 and exc.error == "not_found":
            raise CommandError(
                "this authbroker server has no diagnosis endpoint; upgrade it"
            ) from None
        raise
    if as_json:
        emit(diagnosis)
    else:
        _print_diagnosis(subject, diagnosis)
    return 1 if diagnosis.get("summary") == "failing" else 0


async def apps_diagnose(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    return await _diagnose(
        api, f"/v1/apps/{segment(args.name)}/diagnosis", f"app {args.name}", args.json
    )


async def connections_diagnose(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    return await _diagnose(
        api,
        f"/v1/connections/{segment(args.connection_id)}/diagnosis",
        f"connection {args.connection_id}",
        args.json,
    )


# ---------------------------------------------------------------- basic


async def basic_set(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    password = await read_secret(
        from_stdin=args.password_stdin,
        prompt=not args.password_stdin,
        what="password",
        instead="pipe it in with --password-stdin",
    )
    status, credential = await api.put(
        f"/v1/basic/{segment(args.name)}", {"login": args.login, "password": password}
    )
    if args.json:
        emit(credential)
    else:
        verb = "created" if status == 201 else "updated"
        print(f"{verb} Basic credential {credential['name']} (login {credential['login']})")
    return None


async def basic_list(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    items = (await api.get("/v1/basic"))["items"]
    if args.json:
        emit(items)
        return None
    print(
        table(
            ["NAME", "LOGIN", "UPDATED"],
            [[c["name"], c["login"], when(c.get("updated_at"))] for c in items],
            empty="no Basic credentials yet (add one: authbroker basic set NAME --login LOGIN)",
        )
    )
    return None


async def basic_remove(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    await api.delete(f"/v1/basic/{segment(args.name)}")
    if args.json:
        emit({"name": args.name, "status": "deleted"})
    else:
        print(f"removed Basic credential {args.name}")
    return None


# ---------------------------------------------------------------- connections


def _show_connection(c: dict[str, Any]) -> None:
    print(
        details(
            [
                ("connection id", c.get("connection_id")),
                ("app", c.get("app")),
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
                ("created", when(c.get("created_at"))),
                ("updated", when(c.get("updated_at"))),
            ]
        )
    )


async def connections_list(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    items: list[dict[str, Any]] = []
    after: str | None = None
    more = False
    while len(items) < args.limit:
        page = await api.get(
            "/v1/connections",
            app=args.app,
            status=args.status,
            after=after,
            limit=min(args.limit - len(items), 1000),
        )
        items += page["items"]
        after = page.get("next")
        more = after is not None
        if not more:
            break
    if args.json:
        emit(items)
        return None
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
            + (" match" if args.app or args.status else " yet")
            + " (start one: authbroker connections connect APP)",
        )
    )
    if more:
        note(f"more connections exist: raise --limit (now {args.limit})")
    return None


async def connections_show(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    connection = await api.get(f"/v1/connections/{segment(args.connection_id)}")
    if args.json:
        emit(connection)
    else:
        _show_connection(connection)
    return None


async def connections_connect(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    body: dict[str, Any] = {}
    if args.connection_id:
        body["connection_id"] = args.connection_id
    if args.scope is not None:
        body["scopes"] = _scopes(args.scope)
    if args.metadata:
        body["metadata"] = dict(args.metadata)
    try:
        _, started = await api.post(f"/v1/apps/{segment(args.app)}/connections", body)
    except ApiError as exc:
        if exc.error == "app_awaiting_secret":
            raise CommandError(
                f"app {args.app!r} was imported without its client secret; set it first:\n"
                f"  authbroker apps update {args.app} --client-secret-stdin < secret-file"
            ) from None
        raise
    if args.json:
        emit_line(started)
    else:
        print(f"connection: {started['connection_id']}")
        print("open this URL in a browser and approve the access:")
        print(started["authorize_url"], flush=True)
    if args.open:
        webbrowser.open(started["authorize_url"])
    if not args.wait:
        if not args.json:
            print(
                f"(follow it: authbroker connections show {started['connection_id']}, or run "
                "connect again with --wait)"
            )
        return None
    return await _wait_for_authorization(api, args, started)


async def _wait_for_authorization(
    api: AuthbrokerClient, args: argparse.Namespace, started: dict[str, Any]
) -> int:
    authorization_id = started["authorization_id"]
    limit = min(args.wait_timeout, AUTHORIZATION_LIFETIME + 5)
    deadline = time.monotonic() + limit
    if not args.json:
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
        if args.json:
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
    if args.json:
        emit_line(result)
    else:
        note(
            f"authorization failed: {result.get('problem') or 'unknown problem'}"
            + (f"\n{result['detail']}" if result.get("detail") else "")
            + f"\n(details: authbroker connections diagnose {result['connection_id']})"
        )
    return 1


async def connections_refresh(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    _, result = await api.post(f"/v1/connections/{segment(args.connection_id)}/refresh")
    connection = result.get("connection") or {}
    if args.json:
        emit(result)
    else:
        outcome = result.get("outcome")
        print(f"{args.connection_id}: {outcome}; status {connection.get('status')}")
        if outcome == "refreshed":
            print(f"expires: {when(connection.get('expires_at'))}")
        if connection.get("problem"):
            print(f"problem: {connection['problem']}: {connection.get('problem_detail') or ''}")
    return 1 if result.get("outcome") == "failed" else 0


async def connections_delete(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    status, body = await api.delete(f"/v1/connections/{segment(args.connection_id)}")
    if args.json:
        emit(body or {"connection_id": args.connection_id, "status": "revoked"})
    elif status == 202:
        print(
            f"{args.connection_id}: revoking at the provider; its tokens are wiped once done "
            f"(follow it: authbroker connections show {args.connection_id})"
        )
    else:
        print(f"{args.connection_id}: already revoked")
    return None


# ---------------------------------------------------------------- events


def event_line(event: dict[str, Any]) -> str:
    """time, type, app, connection, problem, detail: one line a event."""
    return "  ".join(
        [
            when(event.get("occurred_at")),
            f"{event.get('type') or '?':<34}",
            text(event.get("app")),
            text(event.get("connection_id")),
            text(event.get("problem")),
            str(event.get("detail") or ""),
        ]
    ).rstrip()


async def events_tail(api: AuthbrokerClient, args: argparse.Namespace) -> int | None:
    params: list[tuple[str, str]] = [("type", t) for t in args.type or ()]
    params += [("app", a) for a in args.app or ()]
    if args.from_start:
        params.append(("from_start", "1"))
    last_id: str | None = None
    shown = 0
    connected_once = False
    while True:
        try:
            async with contextlib.aclosing(api.events(params, last_id)) as stream:
                async for event in stream:
                    connected_once = True
                    last_id = event.id or last_id
                    if args.json:
                        emit_line(event.data)
                    else:
                        print(event_line(event.data), flush=True)
                    shown += 1
                    if args.limit and shown >= args.limit:
                        return None
            connected_once = True
        except Unreachable as exc:
            if not connected_once:
                raise
            note(f"event stream interrupted ({exc.reason}); reconnecting…")
        # The server ended the stream (restart, shutdown): resume after the last event seen.
        await asyncio.sleep(1)
