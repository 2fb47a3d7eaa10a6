"""Basic credentials handed out, and moved between environments like apps are.

An export carries each credential's name and login, never its password. An import creates the
credentials that do not exist yet, waiting for their password (no header is handed out until
`PUT /v1/basic/{name}` sets one), and skips existing ones unless `replace`, which changes their
login and keeps their password. The whole document is checked first and applied in one
transaction: one bad entry refuses the import and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from authbroker.logs import get_logger
from authbroker.schemas import BasicDefinition, field_errors
from services.errors import Conflict, Invalid
from storage import basic
from storage.basic import BasicCredential
from storage.resources import Resources

log = get_logger("authbroker.basic")


def _set_it(name: str) -> str:
    return f"set it with PUT /v1/basic/{name} (authbroker basic set {name} --login LOGIN)"


def password_of(res: Resources, credential: BasicCredential) -> str:
    """The credential's password; `Conflict` while an imported credential waits for it."""
    if credential.password is None:
        raise Conflict(
            "awaiting_password",
            f"Basic credential {credential.name!r} was imported without its password: "
            + _set_it(credential.name),
        )
    return credential.open_password(res.ring)


async def export_all(res: Resources) -> list[dict[str, str]]:
    """Every credential as an import takes it: name and login, never the password."""
    return [{"name": c.name, "login": c.login} for c in await basic.list_all(res.pool)]


def check(items: list[dict[str, Any]]) -> list[BasicDefinition]:
    """Every entry valid, password-free and named once, or `Invalid` naming each entry and field
    at fault (`credentials.{index}.{field}`)."""
    checked: list[BasicDefinition] = []
    errors: list[dict[str, str]] = []
    bad: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        label = str(item.get("name") or f"#{index + 1}")
        found: list[tuple[str, str]] = []
        if "password" in item:
            found.append(("password", f"passwords are never imported: {_set_it(label)}"))
        try:
            model = BasicDefinition.model_validate(
                {k: v for k, v in item.items() if k != "password"}
            )
        except ValidationError as exc:
            found += [(e["field"], e["message"]) for e in field_errors(exc)]
        else:
            if model.name in seen:
                found.append(("name", f"appears twice (also credentials.{seen[model.name]})"))
            else:
                seen[model.name] = index
        if found:
            bad.append(label)
            errors += [
                {"field": f"credentials.{index}.{name}", "message": f"{label}: {message}"}
                for name, message in found
            ]
        else:
            checked.append(model)
    if errors:
        raise Invalid(
            "invalid_request",
            f"invalid Basic credential(s): {', '.join(dict.fromkeys(bad))}; nothing was imported",
            fields=errors,
        )
    return checked


@dataclass
class Imported:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


async def import_all(
    res: Resources, definitions: list[BasicDefinition], *, replace: bool
) -> Imported:
    """Apply checked definitions (`check`) in one transaction."""
    done = Imported()
    async with res.pool.acquire() as conn, conn.transaction():
        for item in definitions:
            if await basic.create_awaiting(conn, item.name, item.login):
                done.created.append(item.name)
            elif not replace:
                done.skipped.append(item.name)
            elif await basic.set_login(conn, item.name, item.login):
                done.updated.append(item.name)
            else:
                done.unchanged.append(item.name)
    log.info(
        "basic_credentials_imported",
        created=done.created,
        updated=done.updated,
        unchanged=done.unchanged,
        skipped=done.skipped,
        replace=replace,
    )
    return done
