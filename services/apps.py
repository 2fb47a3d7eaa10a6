"""OAuth applications: creating, changing and deleting them, whichever edge asks (the API, the
console, an import). Definitions arrive validated by the models of `authbroker.schemas`; what
validation cannot know is checked here: where URLs really lead, names already taken, live
connections in the way of a delete, and who may move where the app's secrets go.

Secrets are write-only, and that must hold against anyone who may change an app: pointing the
token URL (or the revoke, probe or authorization URL) elsewhere would send the stored client
secret, the refresh tokens and the access tokens to a server of the caller's choosing. So a
change of any of them needs the client secret in the same request (whoever knows it can send
it anywhere already; the previous secrets stay behind unless that request gives them too), or
an admin key that confirms it (`confirm_secret_destination`): otherwise 409
`secret_destination`.

Per-connection settings (`authbroker.connection_settings`) keep to that rule: a connection may
only fill the first label of a host its app fixes, with one DNS label, and the URLs it fills
pass the outbound rules like any other (`for_connection`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from authbroker import connection_settings, netguard, presets
from authbroker.config import Settings
from authbroker.events import EventType, RefreshesResumed, make_event
from authbroker.logs import get_logger
from authbroker.schemas import check_url
from services import queue, revocation
from services.access import Caller
from services.errors import Conflict, Forbidden, Invalid, NotFound
from storage import apps, connections, outbox
from storage.apps import App
from storage.resources import Resources

log = get_logger("authbroker.apps")

URL_FIELDS = ("authorization_url", "token_url", "revoke_url", "probe_url")
# Where the client secret, the tokens or the user's browser go: changing one moves secrets.
SECRET_DESTINATIONS = URL_FIELDS


async def get(res: Resources, name: str) -> App:
    app = await apps.get(res.pool, name)
    if app is None:
        raise NotFound("app_not_found", f"no app named {name!r}")
    return app


def require_authorizable(app: App, *, user: bool = True) -> None:
    """`Conflict` unless an authorization may start for `app` now: by a user signing in
    (`user`), or for a service connection."""
    if user and not app.authorization_url:
        raise Conflict(
            "authorization_url_missing",
            f"app {app.name!r} has no authorization_url: users cannot sign in with it (it serves "
            "service connections, grant client_credentials); set authorization_url to connect "
            "users",
        )
    if app.deleting:
        raise Conflict("app_deleting", f"app {app.name!r} is being deleted")
    if app.awaiting_secret:
        raise Conflict(
            "app_awaiting_secret",
            f"app {app.name!r} was imported without its client secret: set it first "
            "(PATCH /v1/apps/{name} with client_secret)",
        )


def with_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Fill an app definition from its provider preset; what the caller gave wins.
    `placeholders` (e.g. {"tenant": "contoso"}) fill the preset's URL templates."""
    given = dict(data)
    name = given.pop("preset")
    placeholders = given.pop("placeholders", None)
    if not isinstance(name, str) or (
        placeholders is not None and not isinstance(placeholders, dict)
    ):
        raise Invalid("invalid_request", "preset must be a name and placeholders an object")
    try:
        return presets.apply(name, given, placeholders)
    except KeyError as exc:
        message = str(exc.args[0])
        raise Invalid(
            "unknown_preset", message, fields=[{"field": "preset", "message": message}]
        ) from None
    except ValueError as exc:
        raise Invalid(
            "invalid_request", str(exc), fields=[{"field": "placeholders", "message": str(exc)}]
        ) from None


async def forbidden_hosts(values: dict[str, Any], settings: Settings) -> list[dict[str, str]]:
    """The URL fields whose host resolves to an address the deployment's outbound rules forbid
    (validation has already refused such addresses written literally), as `[{field, message}]`."""
    errors = []
    for field in URL_FIELDS:
        url = values.get(field)
        host = netguard.normalized_host(url) if url else None
        if host and connection_settings.placeholders_in(host):
            continue  # filled per connection, and checked then (`for_connection`)
        reason = await netguard.resolved_reason(host, settings.outbound) if host else None
        if reason:
            errors.append({"field": field, "message": f"host {host} {reason}"})
    return errors


async def check_hosts(values: dict[str, Any], settings: Settings, *, label: str = "") -> None:
    """`Invalid` naming each URL field whose host resolves to a forbidden address."""
    errors = [
        {"field": e["field"], "message": label + e["message"]}
        for e in await forbidden_hosts(values, settings)
    ]
    if errors:
        names = ", ".join(e["field"] for e in errors)
        raise Invalid("invalid_request", f"invalid fields: {names}", fields=errors)


async def for_connection(res: Resources, app: App, settings: dict[str, str]) -> App:
    """The app as a connection with `settings` would use it (its URLs filled), or `Invalid`
    naming each setting at fault (`settings.NAME`): missing, unknown, not one DNS label, or
    filling a URL the outbound rules refuse."""
    errors = connection_settings.value_errors(app.connection_settings, settings)
    if errors:
        raise Invalid(
            "invalid_request",
            f"invalid connection settings: {', '.join(e['field'] for e in errors)}",
            fields=errors,
        )
    filled = app.for_connection(settings)
    for name in app.connection_settings:
        for field in URL_FIELDS:
            template, url = getattr(app, field), getattr(filled, field)
            if not template or "{" + name + "}" not in template:
                continue
            try:
                check_url(url, allow_http=res.settings.allow_http, rules=res.settings.outbound)
            except ValueError as exc:
                reason: str | None = str(exc)
            else:
                host = netguard.normalized_host(url) or ""
                resolved = await netguard.resolved_reason(host, res.settings.outbound)
                reason = f"host {host} {resolved}" if resolved else None
            if reason:
                errors.append(
                    {
                        "field": f"{connection_settings.FIELD}.{name}",
                        "message": f"makes the {field} {url}, which {reason}",
                    }
                )
    if errors:
        raise Invalid("invalid_request", errors[0]["message"], fields=errors)
    return filled


async def create(res: Resources, values: dict[str, Any], *, via: str = "api") -> App:
    """Register an app from a validated definition (`AppCreate.model_dump()`)."""
    await check_hosts(values, res.settings)
    try:
        async with res.pool.acquire() as conn:
            app = await apps.create(conn, res.ring, values)
    except asyncpg.UniqueViolationError:
        raise Conflict("app_exists", f"an app named {values['name']!r} already exists") from None
    log.info("app_created", app=app.name, client_auth=app.client_auth, via=via)
    return app


def moved_destinations(app: App, changes: dict[str, Any]) -> list[str]:
    """The URL fields whose change sends secrets somewhere new (clearing one sends nothing)."""
    return [
        field
        for field in SECRET_DESTINATIONS
        if changes.get(field) is not None and changes[field] != getattr(app, field)
    ]


def guard_destinations(
    app: App,
    changes: dict[str, Any],
    caller: Caller,
    *,
    confirmed: bool = False,
    label: str = "",
) -> dict[str, Any]:
    """The changes as they may be applied, or the refusal of the `secret_destination` rule
    (see the module's docstring). `label` starts each message (an import names the app)."""
    moved = moved_destinations(app, changes)
    if not moved:
        return changes
    if changes.get("client_secret"):
        if "client_secrets_previous" not in changes and app.client_secrets_previous is not None:
            # The caller gave the secret that goes there, not the older ones.
            return {**changes, "client_secrets_previous": []}
        return changes
    if confirmed and caller.is_admin:
        return changes
    if confirmed:
        raise Forbidden(
            "forbidden",
            f"{label}{caller.label} may not confirm a new secret destination: admin keys only; "
            "send client_secret in the same request instead",
        )
    names = ", ".join(moved)
    message = (
        f"{label}changing {names} changes where the client secret and tokens are sent: send "
        "client_secret in the same request, or (admin keys) confirm_secret_destination: true"
    )
    raise Conflict(
        "secret_destination",
        message,
        fields=[
            {
                "field": field,
                "message": f"{label}moves where secrets go: send client_secret with it, or "
                "confirm the new destination (admin keys)",
            }
            for field in moved
        ],
    )


async def update(
    res: Resources,
    app: App,
    changes: dict[str, Any],
    *,
    caller: Caller,
    confirmed: bool = False,
    via: str = "api",
) -> App:
    """Apply validated changes (`AppUpdate.changes()`) under the secret-destination rule.
    Any change resumes an app paused for refused settings: the operator has looked at it."""
    changes = guard_destinations(app, changes, caller, confirmed=confirmed)
    await check_hosts(changes, res.settings)
    async with res.pool.acquire() as conn, conn.transaction():
        updated = await apply_update(conn, res, app, changes)
    log.info(
        "app_updated",
        app=app.name,
        fields=sorted(changes),
        resumed=app.paused_at is not None,
        moved=moved_destinations(app, changes) or None,
        key_id=caller.key_id,
        via=via,
    )
    return updated


async def apply_update(
    conn: asyncpg.Connection, res: Resources, app: App, changes: dict[str, Any]
) -> App:
    """Within the caller's transaction: write the changes, and if the app was paused for refused
    settings, say that its refreshes go on again (storage resumes them)."""
    await _check_connection_settings(conn, app, changes)
    updated = await apps.update(conn, res.ring, app, changes)
    if app.paused_at is not None:
        paused_for = (datetime.now(UTC) - app.paused_at).total_seconds()
        await outbox.append(
            conn,
            make_event(
                EventType.APP_REFRESHES_RESUMED,
                app=app.name,
                detail="The app was changed: its refreshes go on.",
                data=RefreshesResumed(paused_seconds=round(paused_for, 1)),
            ),
        )
    return updated


async def _check_connection_settings(
    conn: asyncpg.Connection, app: App, changes: dict[str, Any]
) -> None:
    """The changed app's URLs and connection settings agree (`Invalid` naming the fields), and
    no live connection lacks a setting the app newly needs: its refreshes would go nowhere.
    (Connections keep the settings they were authorized with; only a new authorization gives
    them others.)"""
    fields = (*connection_settings.TEMPLATED_FIELDS, "connection_settings")
    if not set(changes) & set(fields):
        return
    merged = {field: changes.get(field, getattr(app, field)) for field in fields}
    errors = connection_settings.template_errors(merged)
    if errors:
        names = ", ".join(dict.fromkeys(e["field"] for e in errors))
        raise Invalid("invalid_request", f"invalid fields: {names}", fields=errors)
    added = [n for n in merged["connection_settings"] if n not in app.connection_settings]
    lacking = await connections.count_live(conn, app.id, lacking=added) if added else 0
    if lacking:
        raise Conflict(
            "connection_settings",
            f"{lacking} live connection(s) of app {app.name!r} have no value for "
            f"{', '.join(added)}, which connections must now give: delete them first, or make "
            "a new app for the connections that give it",
            fields=[{"field": "connection_settings", "message": "live connections lack a value"}],
            connections=lacking,
        )


async def delete(res: Resources, app: App, *, cascade: bool) -> int:
    """Delete an app now if it has no live connection; with `cascade`, revoke them all and let
    the last revocation delete the app (the revoke jobs need its client credentials). Returns
    the connections still being revoked (0: the app is gone)."""
    live = await connections.count_live(res.pool, app.id)
    if live and not cascade:
        raise Conflict(
            "app_has_connections",
            f"app {app.name!r} has {live} live connection(s); delete them first or pass "
            "?cascade=true to revoke and delete them with the app",
            connections=live,
        )
    async with res.pool.acquire() as conn, conn.transaction():
        revoking = await connections.begin_revoke_app(conn, app.id)
        await outbox.append(conn, *(revocation.revoking_event(app.name, c) for c in revoking))
        pending = await connections.count_revoking(conn, app.id)
        if not pending:
            await apps.delete(conn, app.id)
            log.info("app_deleted", app=app.name)
            return 0
        await apps.mark_deleting(conn, app.id)
    await queue.enqueue_revokes(res, revoking)
    log.info("app_delete_requested", app=app.name, connections=pending)
    return pending
