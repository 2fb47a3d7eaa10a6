"""JSON answers, errors and request bodies: every 4xx names what was wrong, in one shape.

Every JSON answer is a model of `handlers.models`; errors are `models.Error`,
`{"error": code, "message": prose, ...}`, and validation errors add `fields: [{field, message}]`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn, TypeVar, overload

from aiohttp import web
from pydantic import BaseModel, ValidationError

from authbroker import text
from authbroker.schemas import field_errors
from handlers.models import Error
from services.errors import DomainError

Model = TypeVar("Model", bound=BaseModel)
MAX_BODY = 256 * 1024


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def dumps(value: Any) -> str:
    """JSON with RFC 3339 timestamps, the same shape events use."""
    return json.dumps(value, default=_default, separators=(",", ":"))


def ok(body: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """`body` as JSON; the fields it leaves unset (an error's optional ones) are left out."""
    return web.json_response(
        body.model_dump(exclude_unset=True), status=status, headers=headers, dumps=dumps
    )


class ApiError(Exception):
    """An answer other than success; the error middleware renders it as JSON."""

    def __init__(self, status: int, error: Error, headers: dict[str, str] | None = None):
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.headers = headers

    @property
    def body(self) -> dict[str, Any]:
        """The error as the client receives it."""
        return self.error.model_dump(exclude_unset=True)

    def response(self) -> web.Response:
        return ok(self.error, status=self.status, headers=self.headers)


def translate(exc: DomainError) -> ApiError:
    """A use case's refusal as the API answers it: its status, its code and its facts."""
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, int(exc.retry_after + 0.999)))}
    error = Error(error=exc.code, message=exc.message, **exc.details)
    return ApiError(exc.http_status, error, headers)


def fail(
    http_status: int,
    error: str,
    message: str,
    /,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> NoReturn:
    """Stop handling the request and answer `http_status` with a JSON body naming the error;
    `extra` fields (a connection's `status`, its `problem`, …) join the body."""
    raise ApiError(http_status, Error(error=error, message=message, **extra), headers)


def refuse_field(field: str, message: str) -> NoReturn:
    """Answer 400 naming one bad field, as validation errors do."""
    fail(
        400,
        "invalid_request",
        f"invalid fields: {field}",
        fields=[{"field": field, "message": message}],
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or 400/413 saying what is wrong with it. Nothing in it may be
    what storage cannot keep (`authbroker.text`): that is refused here, naming the field."""
    if request.content_length and request.content_length > MAX_BODY:
        fail(413, "body_too_large", f"request body over {MAX_BODY // 1024} KiB")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        fail(413, "body_too_large", f"request body over {MAX_BODY // 1024} KiB")
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        fail(400, "invalid_json", "request body is not valid JSON")
    except RecursionError:
        fail(400, "invalid_json", f"request body is nested more than {text.MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        fail(400, "invalid_json", "request body must be a JSON object")
    found = text.json_flaw(data)
    if found:
        refuse_field(*found)
    return data


def check_path(request: web.Request) -> None:
    """400 naming the first path parameter storage could not keep (a NUL, a lone surrogate),
    for every route at once: no handler can forget it."""
    for name, value in request.match_info.items():
        _checked(name, value)


@overload
def query_value(request: web.Request, name: str, default: str) -> str: ...
@overload
def query_value(request: web.Request, name: str, default: None = None) -> str | None: ...
def query_value(request: web.Request, name: str, default: str | None = None) -> str | None:
    """A query parameter (the first if repeated), or 400 naming it when storage could not keep
    it."""
    value = request.query.get(name)
    return default if value is None else _checked(name, value)


def query_values(request: web.Request, name: str) -> list[str]:
    """Every value of a repeatable query parameter, each checked like `query_value`."""
    return [_checked(name, value) for value in request.query.getall(name, [])]


def _checked(name: str, value: str) -> str:
    why = text.flaw(value)
    if why:
        refuse_field(name, why)
    return value


def validate(model: type[Model], data: dict[str, Any], **context: Any) -> Model:
    """Validate a JSON object, or answer 400 naming each bad field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        errors = field_errors(exc)
        names = ", ".join(e["field"] for e in errors)
        fail(400, "invalid_request", f"invalid fields: {names}", fields=errors)


async def read_model(request: web.Request, model: type[Model], **context: Any) -> Model:
    """Parse and validate a JSON body, or answer 400 naming each bad field."""
    return validate(model, await read_json(request), **context)
