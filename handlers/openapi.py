"""`GET /openapi.json`: the OpenAPI 3.1 description of every endpoint this server has.

Assembled from what the routes carry: each handler declares its operation beside its code
(`handlers.operations`), request and response bodies are the pydantic models the handlers
validate and answer with, and components are those models' JSON Schemas (2020-12, which OpenAPI
3.1 uses as is). Only the operations registered on the running application are listed, so
`/metrics` or the diagnosis appear exactly when they are served.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from authbroker.events import Event
from authbroker.roles import Permission, Role, roles_allowed
from handlers.auth import PROTECTED_PREFIX
from handlers.context import resources
from handlers.models import Error
from handlers.operations import RETRY_AFTER, STRING, Answer, Operation, described, operation

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
JSON = "application/json"
SECURITY_SCHEME = "apiKey"
REF_TEMPLATE = "#/components/schemas/{model}"
# Described though no route answers it: runtimes read events from Redis or receive them as
# webhooks.
UNSERVED_MODELS: tuple[type[BaseModel], ...] = (Event,)

# Answers every operation of a kind may give, whatever its handler does.
BODY_ERRORS = {
    400: Answer("The body is not JSON, or names fields that are invalid (`fields`).", Error),
    413: Answer("The body is larger than 256 KiB.", Error),
}
API_ERRORS = {
    401: Answer(
        "No valid API key.",
        Error,
        headers={
            "WWW-Authenticate": {"description": 'Bearer realm="authbroker"', "schema": STRING}
        },
    ),
    429: Answer(
        "Too many requests with invalid API keys from this address (`too_many_failures`).",
        Error,
        headers=RETRY_AFTER,
    ),
    500: Answer("Internal error; the body carries the `request_id` of the logs.", Error),
}
ROLES_EXTENSION = "x-authbroker-roles"
# Operations whose subject a runtime key limited to some apps may be refused.
APP_LIMITED_PERMISSIONS = {
    Permission.CONNECTIONS_READ,
    Permission.CONNECTIONS_REFRESH,
    Permission.CONNECT_LINKS,
    Permission.CREDENTIALS_READ,
    Permission.EVENTS,
}
TAGS = {
    "apps": "OAuth applications.",
    "connections": "Authorized accounts and their tokens.",
    "basic": "Basic credentials.",
    "events": "Changes of auth status, live.",
    "webhooks": "Events delivered over HTTPS, signed (Standard Webhooks).",
    "api-keys": "API keys, their roles, and the audit of the credentials they read.",
    "browser": "Pages a user's browser lands on.",
    "providers": "What providers fetch from authbroker.",
    "health": "Liveness and readiness.",
    "meta": "Metrics and this document.",
}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def served_operations(app: web.Application) -> Iterator[tuple[str, str, Operation]]:
    """(path, method, operation) of every described route the application serves, HEAD aside."""
    for route in app.router.routes():
        found = described(route.handler)
        if found is not None and route.resource is not None and route.method not in ("HEAD", "*"):
            yield route.resource.canonical, route.method.lower(), found


def components(models: Iterable[type[BaseModel]]) -> dict[str, dict[str, Any]]:
    """The models' JSON Schemas and those of the models they hold, by class name."""
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        for name, found in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if out.setdefault(name, found) != found:
                raise ValueError(f"two different models are named {name}")
    return out


def answer_object(answer: Answer) -> dict[str, Any]:
    content = {media: {"schema": schema} for media, schema in answer.media.items()}
    if answer.model is not None:
        content[JSON] = {"schema": ref(answer.model)}
    out: dict[str, Any] = {"description": answer.description}
    if content:
        out["content"] = content
    if answer.headers:
        out["headers"] = dict(answer.headers)
    return out


def operation_object(path: str, op: Operation) -> dict[str, Any]:
    """One operation; API operations need the API key and may answer 401 and 500."""
    answers = dict(op.answers)
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body:
        schemas = [ref(model) for model in op.body]
        schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        out["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": schema}}}
        answers = {**BODY_ERRORS, **answers}
    protected = path.startswith(PROTECTED_PREFIX)
    if protected:
        roles = [str(r) for r in roles_allowed(op.permission)] if op.permission else ["admin"]
        answers = {**answers, **API_ERRORS, 403: _forbidden(op.permission, roles)}
        out[ROLES_EXTENSION] = roles
    out["security"] = [{SECURITY_SCHEME: []}] if protected else []
    out["responses"] = {str(status): answer_object(answers[status]) for status in sorted(answers)}
    return out


def _forbidden(permission: Permission | None, roles: list[str]) -> Answer:
    """The 403 of a protected operation: which roles may call it, and for runtime keys limited
    to some apps, that the subject must be one of theirs."""
    text = f"The key's role may not call this (`forbidden`); roles allowed: {', '.join(roles)}."
    if permission in APP_LIMITED_PERMISSIONS and Role.RUNTIME in roles:
        text += " A runtime key limited to some apps is refused anything of another app."
    return Answer(text, Error)


def models_of(operations: Iterable[Operation]) -> Iterator[type[BaseModel]]:
    for op in operations:
        yield from op.body
        yield from (a.model for a in op.answers.values() if a.model is not None)
    yield Error
    yield from UNSERVED_MODELS


def document(app: web.Application, server_url: str | None = None) -> dict[str, Any]:
    """The document describing what `app` serves."""
    served = sorted(served_operations(app), key=lambda found: found[:2])
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in served:
        paths.setdefault(path, {})[method] = operation_object(path, op)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "authbroker",
            "version": API_VERSION,
            "summary": "Keeps integrations authenticated: OAuth 2.0 connections and Basic "
            "credentials, refreshed, watched and revoked.",
            "description": (
                "Every `/v1` request needs an API key: `Authorization: Bearer <key>` (create one "
                "with `authbroker api-keys create NAME --role ROLE`). A key's role decides what "
                "it may call: each operation lists its roles in `x-authbroker-roles` and answers "
                "403 `forbidden` to the others. Errors are JSON `{error, message}`; "
                "validation errors add `fields: [{field, message}]`. Times are RFC 3339 UTC. "
                "Changes of auth status are published as `Event`s on Redis and POSTed to "
                "webhook subscriptions (see components.schemas.Event)."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": components(models_of(op for _, _, op in served)),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An authbroker API key (`ab_<id>_<secret>`).",
                }
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


# The rendered document of each application: its routes do not change once it serves.
_rendered: weakref.WeakKeyDictionary[web.Application, str] = weakref.WeakKeyDictionary()


@routes.get("/openapi.json")
@operation(
    "openapi",
    "meta",
    {200: Answer("The OpenAPI 3.1 document.", media={JSON: {"type": "object"}})},
)
async def openapi(request: web.Request) -> web.Response:
    """This document."""
    text = _rendered.get(request.app)
    if text is None:
        doc = document(request.app, resources(request).settings.public_url)
        text = _rendered[request.app] = json.dumps(doc, separators=(",", ":"))
    return web.Response(text=text, content_type=JSON, headers={"Cache-Control": "no-cache"})
