"""`/v1/apps/export` and `/v1/apps/import`: application definitions between environments.

An export holds every app as `POST /v1/apps` accepts it, without its secrets. An import creates
the apps that do not exist yet, marked `awaiting_secret` (no connection starts until the secret
is set with `PATCH /v1/apps/{name}`), and skips existing ones unless `?replace=true`, which
updates their settings and keeps their secrets. The whole document is checked first and applied
in one transaction: one bad app refuses the import and changes nothing.

These routes must be registered before `handlers.apps`, whose `/v1/apps/{name}` would otherwise
take `export` for an app's name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator

from authbroker.logs import get_logger
from authbroker.roles import Permission
from authbroker.schemas import AppCreate, field_errors
from handlers import models
from handlers.context import caller, resources
from handlers.operations import NO_STORE, Answer, operation, query_param
from handlers.responses import fail, ok, query_value, query_values, read_model
from services import apps as apps_service
from storage import apps
from storage.apps import App

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

EXPORT_VERSION = 1
MAX_APPS = 1000
SECRET_FIELDS = frozenset({"client_secret", "client_secrets_previous"})
TRUE = {"1", "true", "yes", "on"}
FLAGS = ["true", "false", "1", "0", "yes", "no", "on", "off"]
DEFAULT_SEPARATOR = AppCreate.model_fields["scope_separator"].default


# An app as `POST /v1/apps` accepts it. Kept as given here and checked with AppCreate one by one,
# so that an error names the app it belongs to.
AppDefinition = Annotated[
    dict[str, Any],
    WrapValidator(lambda value, check: check(value), json_schema_input_type=AppCreate),
]


class ExportDocument(BaseModel):
    """What every export document holds besides its items (apps, Basic credentials)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    # Read as it is (an import does not need it), described as what an export writes.
    exported_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None


class AppExport(ExportDocument):
    """Application definitions, as `GET /v1/apps/export` answers and `POST /v1/apps/import`
    reads them; exports carry no secret."""

    apps: list[AppDefinition] = Field(
        max_length=MAX_APPS,
        description="Each app as POST /v1/apps accepts it; exports carry no secret.",
    )


def exported_now() -> str:
    """An export's `exported_at`: now, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def definition(app: App) -> dict[str, Any]:
    """An app as `POST /v1/apps` accepts it, without its secrets."""
    values = {
        name: getattr(app, name)
        for name in AppCreate.model_fields
        if name not in SECRET_FIELDS and hasattr(app, name)
    }
    # AppCreate strips whitespace from strings, so it refuses an explicit " " separator (its
    # own default): leave the default out rather than export what import would refuse.
    if values.get("scope_separator") == DEFAULT_SEPARATOR:
        del values["scope_separator"]
    return values


@routes.get("/v1/apps/export")
@operation(
    "exportApps",
    "apps",
    {
        200: Answer("The definitions.", AppExport, headers=NO_STORE),
        404: "A named app does not exist (`app_not_found`).",
    },
    parameters=[
        query_param(
            "name",
            "Only these apps (repeatable, or comma-separated).",
            {"type": "array", "items": {"type": "string"}},
            repeatable=True,
        )
    ],
    permission=Permission.APPS_READ,
)
async def export_apps(request: web.Request) -> web.Response:
    """Application definitions, without their secrets.

    Every app (or those named with `name`), apps being deleted left out.
    """
    res = resources(request)
    wanted = [n for raw in query_values(request, "name") for n in raw.split(",") if n]
    found = [a for a in await apps.list_all(res.pool) if not a.deleting]
    if wanted:
        missing = sorted(set(wanted) - {a.name for a in found})
        if missing:
            fail(404, "app_not_found", f"no app named {', '.join(map(repr, missing))}")
        found = [a for a in found if a.name in wanted]
    return ok(
        AppExport(
            version=EXPORT_VERSION,
            exported_at=exported_now(),
            apps=[definition(a) for a in found],
        ),
        headers={"Cache-Control": "no-store"},
    )


def _check(document: AppExport, context: dict[str, bool]) -> list[AppCreate]:
    """Every app valid and named once, or a 400 naming each app and field at fault."""
    checked: list[AppCreate] = []
    errors: list[dict[str, str]] = []
    bad: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(document.apps):
        label = str(item.get("name") or f"#{index + 1}")
        try:
            model = AppCreate.model_validate(item, context=context)
        except ValidationError as exc:
            bad.append(label)
            errors += [
                {"field": f"apps.{index}.{e['field']}", "message": f"app {label}: {e['message']}"}
                for e in field_errors(exc)
            ]
            continue
        if model.name in seen:
            bad.append(label)
            errors.append(
                {
                    "field": f"apps.{index}.name",
                    "message": f"app {label}: appears twice (also apps.{seen[model.name]})",
                }
            )
            continue
        seen[model.name] = index
        checked.append(model)
    if errors:
        fail(
            400,
            "invalid_request",
            f"invalid app(s): {', '.join(dict.fromkeys(bad))}; nothing was imported",
            fields=errors,
        )
    return checked


def _changes(existing: App, model: AppCreate) -> dict[str, Any]:
    """What replacing `existing` by `model` changes: every setting that differs (settings the
    document leaves out return to their defaults); secrets only when the document sets them."""
    changes: dict[str, Any] = {}
    for key, value in model.model_dump().items():
        if key == "name":
            continue
        if key in SECRET_FIELDS:
            if key in model.model_fields_set and value:
                changes[key] = value
        elif not hasattr(existing, key) or getattr(existing, key) != value:
            changes[key] = value
    return changes


def replace_param(description: str) -> dict[str, Any]:
    """The `replace` query parameter of an import."""
    return query_param(
        "replace",
        description,
        {"type": "string", "enum": FLAGS},
    )


def replacing(request: web.Request) -> bool:
    return (query_value(request, "replace") or "").lower() in TRUE


@routes.post("/v1/apps/import")
@operation(
    "importApps",
    "apps",
    {
        200: Answer("What happened to each app.", models.AppImportResult),
        409: "Another request created one of these apps meanwhile (`app_exists`), or a "
        "replaced app's URL that receives secrets changes without its `client_secret` in the "
        "document or an admin's confirmation (`secret_destination`).",
    },
    parameters=[
        replace_param("Update existing apps' settings (their secrets stay)."),
        query_param(
            "confirm_secret_destination",
            "Admin keys: replaced apps may send their stored secrets to changed URLs.",
            {"type": "string", "enum": FLAGS},
        ),
    ],
    body=AppExport,
    permission=Permission.APPS_WRITE,
)
async def import_apps(request: web.Request) -> web.Response:
    """Create (or with replace, update) apps from an export.

    Checked whole, then applied in one transaction: one bad app refuses the import and changes
    nothing. New apps wait for their secret (`awaiting_secret`). Replacing an app's URLs that
    receive secrets follows the rule of `PATCH /v1/apps/{name}`: its `client_secret` in the
    document, or an admin key with `confirm_secret_destination=true`.
    """
    res = resources(request)
    key = caller(request)
    replace = replacing(request)
    confirmed = (query_value(request, "confirm_secret_destination") or "").lower() in TRUE
    document = await read_model(request, AppExport)
    checked = _check(document, res.settings.validation_context)
    for model in checked:
        await apps_service.check_hosts(
            model.model_dump(), res.settings, label=f"app {model.name}: "
        )
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    try:
        async with res.pool.acquire() as conn, conn.transaction():
            for model in checked:
                values = model.model_dump()
                existing = await apps.get(conn, model.name)
                if existing is None:
                    # Secrets are never exported: a new app waits for its secret, unless the
                    # document carries one (written by hand).
                    values["awaiting_secret"] = values.get("client_secret") is None
                    await apps.create(conn, res.ring, values)
                    created.append(model.name)
                    continue
                if not replace or existing.deleting:
                    skipped.append(model.name)
                    continue
                changes = _changes(existing, model)
                if not changes:
                    unchanged.append(model.name)
                    continue
                changes = apps_service.guard_destinations(
                    existing, changes, key, confirmed=confirmed, label=f"app {model.name}: "
                )
                await apps_service.apply_update(conn, res, existing, changes)
                updated.append(model.name)
    except asyncpg.UniqueViolationError:
        fail(409, "app_exists", "another request created one of these apps meanwhile; retry")
    log.info(
        "apps_imported",
        created=created,
        updated=updated,
        unchanged=unchanged,
        skipped=skipped,
        replace=replace,
    )
    return ok(
        models.AppImportResult(
            created=created, updated=updated, unchanged=unchanged, skipped=skipped
        )
    )
