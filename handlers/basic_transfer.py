"""`/v1/basic/export` and `/v1/basic/import`: Basic credentials between environments, like
apps (handlers/transfer.py): names and logins travel, passwords never do; imported credentials
wait for theirs. What an import does is decided by `services.basic`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, WrapValidator

from authbroker.roles import Permission
from authbroker.schemas import BasicDefinition
from handlers import models
from handlers.context import resources
from handlers.operations import NO_STORE, Answer, operation
from handlers.responses import ok, read_model
from handlers.transfer import (
    EXPORT_VERSION,
    ExportDocument,
    exported_now,
    replace_param,
    replacing,
)
from services import basic as service

routes = web.RouteTableDef()

MAX_CREDENTIALS = 1000

# A credential as the document holds it; checked one by one by the use case, so that an error
# names the entry it belongs to.
BasicEntry = Annotated[
    dict[str, Any],
    WrapValidator(lambda value, check: check(value), json_schema_input_type=BasicDefinition),
]


class BasicExport(ExportDocument):
    """Basic credentials, as `GET /v1/basic/export` answers and `POST /v1/basic/import` reads
    them: names and logins, never a password."""

    credentials: list[BasicEntry] = Field(
        max_length=MAX_CREDENTIALS,
        description="Each credential's name and login; a password is refused.",
    )


@routes.get("/v1/basic/export")
@operation(
    "exportBasic",
    "basic",
    {200: Answer("The credentials, without passwords.", BasicExport, headers=NO_STORE)},
    permission=Permission.BASIC_READ,
)
async def export_basic(request: web.Request) -> web.Response:
    """Every Basic credential's name and login, never a password."""
    return ok(
        BasicExport(
            version=EXPORT_VERSION,
            exported_at=exported_now(),
            credentials=await service.export_all(resources(request)),
        ),
        headers={"Cache-Control": "no-store"},
    )


@routes.post("/v1/basic/import")
@operation(
    "importBasic",
    "basic",
    {200: Answer("What happened to each credential.", models.BasicImportResult)},
    parameters=[replace_param("Change existing credentials' logins (their passwords stay).")],
    body=BasicExport,
    permission=Permission.BASIC_WRITE,
)
async def import_basic(request: web.Request) -> web.Response:
    """Create (or with replace, update) Basic credentials from an export.

    Checked whole, then applied in one transaction: one bad entry refuses the import and changes
    nothing. New credentials wait for their password (`awaiting_password`): their credentials
    answer 409 until `PUT /v1/basic/{name}` sets it.
    """
    res = resources(request)
    replace = replacing(request)
    document = await read_model(request, BasicExport)
    done = await service.import_all(res, service.check(document.credentials), replace=replace)
    return ok(models.BasicImportResult(**asdict(done)))
