"""What `/openapi.json` says about a route, declared on its handler.

The handler's docstring gives the summary (its first paragraph) and the description (the rest);
`operation` adds what a docstring cannot: the operation id, the tag, the parameters, the request
body model, the answers with their models, and for `/v1` the permission a key's role needs
(`authbroker.roles`; none declared: admin keys only). handlers/openapi.py reads these from the
routes the application registers, so a route is described exactly when it is served, and next to
the code that answers it; the API's middleware (handlers/auth.py) enforces the permission.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from authbroker.roles import Permission
from handlers.models import Error

Handler = TypeVar("Handler", bound=Callable[..., Any])
STRING: dict[str, Any] = {"type": "string"}
_ATTRIBUTE = "openapi_operation"


@dataclass(frozen=True)
class Answer:
    """One documented answer: a JSON body of `model`, other media types, response headers."""

    description: str
    model: type[BaseModel] | None = None
    media: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    description: str | None
    answers: Mapping[int, Answer]
    parameters: Sequence[dict[str, Any]] = ()
    # The request body: one model, or several the body may match (`anyOf`).
    body: Sequence[type[BaseModel]] = ()
    body_required: bool = True
    # What a key's role must be granted to call it (`/v1` only); None: admin keys only.
    permission: Permission | None = None


def operation(
    operation_id: str,
    tag: str,
    answers: Mapping[int, Answer | str],
    *,
    parameters: Sequence[dict[str, Any]] = (),
    body: type[BaseModel] | Sequence[type[BaseModel]] = (),
    body_required: bool = True,
    permission: Permission | None = None,
) -> Callable[[Handler], Handler]:
    """Describe the decorated handler; an answer given as text is an error answer (`Error`)."""

    def describe(handler: Handler) -> Handler:
        doc = inspect.getdoc(handler)
        if not doc:
            raise TypeError(f"{handler.__qualname__} needs a docstring: it is the summary")
        summary, _, description = doc.partition("\n\n")
        setattr(
            handler,
            _ATTRIBUTE,
            Operation(
                operation_id=operation_id,
                tag=tag,
                summary=_unwrapped(summary).removesuffix("."),
                description="\n\n".join(map(_unwrapped, description.split("\n\n"))) or None,
                answers={
                    status: Answer(a, Error) if isinstance(a, str) else a
                    for status, a in answers.items()
                },
                parameters=tuple(parameters),
                body=(body,) if isinstance(body, type) else tuple(body),
                body_required=body_required,
                permission=permission,
            ),
        )
        return handler

    return describe


def described(handler: Callable[..., Any]) -> Operation | None:
    """The operation a handler declares, or None (the console's pages are not in the API)."""
    return getattr(handler, _ATTRIBUTE, None)


def _unwrapped(paragraph: str) -> str:
    return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())


def parameter(where: str, name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter `in` path (always required), query or header (optional)."""
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return parameter("path", name, description, schema)


def query_param(
    name: str, description: str, schema: dict[str, Any], *, repeatable: bool = False
) -> dict[str, Any]:
    param = parameter("query", name, description, schema)
    if repeatable:
        param.update(style="form", explode=True)
    return param


def header_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return parameter("header", name, description, schema)


NO_STORE = {"Cache-Control": {"description": "Always `no-store`: never cache.", "schema": STRING}}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
