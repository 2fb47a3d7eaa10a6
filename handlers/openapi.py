"""`GET /openapi.json`: the OpenAPI 3.1 description of every endpoint this server has.

Request bodies are the pydantic models the handlers validate with, so they cannot drift; response
bodies are written here by hand after `app_view`, `connection_view`, `basic_view` and the other
bodies the handlers build, and tests/test_openapi.py checks real responses against them. The
document lists only the operations registered on the running application (so `/metrics` or the
diagnosis appear exactly when they are served).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from authbroker import presets
from authbroker.events import FIELDS as EVENT_FIELDS
from authbroker.events import EventType
from authbroker.problems import Problem
from authbroker.schemas import (
    CONNECTION_ID_PATTERN,
    NAME_PATTERN,
    AppCreate,
    AppUpdate,
    BasicCredentialIn,
    ConnectionStart,
    Report,
)
from handlers.connections import STATUSES
from handlers.context import resources

routes = web.RouteTableDef()

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
JSON = "application/json"
SECURITY_SCHEME = "apiKey"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    AppCreate,
    AppUpdate,
    BasicCredentialIn,
    ConnectionStart,
    Report,
)


# ------------------------------------------------------------------------------ building blocks


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null: a type list for simple schemas, `anyOf` for references."""
    if "type" in schema and isinstance(schema["type"], str) and "$ref" not in schema:
        out = {**schema, "type": [schema["type"], "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: dict[str, Any],
    required: list[str] | None = None,
    *,
    description: str | None = None,
    closed: bool = True,
) -> dict[str, Any]:
    """An object schema; every property required unless `required` says otherwise."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    return out


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
URL = {"type": "string", "format": "uri"}
STRINGS = {"type": "array", "items": STRING}
PROBLEM = {
    "type": "string",
    "enum": [str(p) for p in Problem],
    "description": "A problem code; see the problems table of DESIGN.md.",
}
PLACEMENT = {"type": "string", "enum": ["body", "basic", "query"]}
PARAMS = {"type": "object", "additionalProperties": STRING}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def answer(description: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = json_content(schema)
    out.update(extra)
    return out


def error(description: str, **extra: Any) -> dict[str, Any]:
    return answer(description, ref("Error"), **extra)


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
NO_STORE = {
    "Cache-Control": {"description": "Always `no-store`: never cache.", "schema": STRING},
}


def path_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


APP_NAME = path_param("name", "The app's name.", {"type": "string", "pattern": NAME_PATTERN})
BASIC_NAME = path_param(
    "name", "The Basic credential's name.", {"type": "string", "pattern": NAME_PATTERN}
)
CONNECTION_ID = path_param(
    "connection_id", "The connection's id.", {"type": "string", "pattern": CONNECTION_ID_PATTERN}
)


def operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    body_schema: dict[str, Any] | None = None,
    body_required: bool = True,
    public: bool = False,
) -> dict[str, Any]:
    """One operation; API operations (not `public`) need the API key and may answer 401/500."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body or body_schema:
        schema = body_schema or ref(body or "")
        op["requestBody"] = {"required": body_required, "content": json_content(schema)}
        responses = {
            "400": error("The body is not JSON, or names fields that are invalid (`fields`)."),
            "413": error("The body is larger than 256 KiB."),
            **responses,
        }
    if public:
        op["security"] = []
    else:
        op["security"] = [{SECURITY_SCHEME: []}]
        responses = {
            **responses,
            "401": error(
                "No valid API key.",
                headers={
                    "WWW-Authenticate": {
                        "description": 'Bearer realm="authbroker"',
                        "schema": STRING,
                    }
                },
            ),
            "500": error("Internal error; the body carries the `request_id` of the logs."),
        }
    op["responses"] = dict(sorted(responses.items()))
    return op


# ------------------------------------------------------------------------------ response bodies

LAST_ERROR = obj(
    {
        "stage": {"type": "string", "enum": ["authorize", "exchange", "refresh", "probe"]},
        "error": nullable(STRING),
        "description": nullable(STRING),
        "status": nullable(INTEGER),
    },
    required=["stage"],
    description="The last error the provider (or the probe URL) answered; never a secret.",
)

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": obj(
        {
            "error": {"type": "string", "description": "A short code to branch on."},
            "message": {"type": "string", "description": "What was wrong, for people."},
            "fields": {
                "type": "array",
                "description": "Validation errors, one per invalid field.",
                "items": obj({"field": STRING, "message": STRING}),
            },
            "request_id": STRING,
            "status": {"type": "string", "enum": list(STATUSES)},
            "problem": nullable(STRING),
            "detail": nullable(STRING),
            "next_attempt_at": nullable(TIME),
            "connections": {"type": "integer", "description": "Live connections of the app."},
        },
        required=["error", "message"],
        description="Every error answer: `error` and `message`, and the fields that apply.",
    ),
    "App": obj(
        {
            "name": STRING,
            "client_id": STRING,
            "client_secret_set": BOOLEAN,
            "client_secrets_previous_set": BOOLEAN,
            "authorization_url": URL,
            "token_url": URL,
            "revoke_url": nullable(URL),
            "scopes": STRINGS,
            "scope_separator": STRING,
            "client_auth": {"type": "string", "enum": ["body", "basic", "query", "auto"]},
            "client_auth_detected": nullable(PLACEMENT),
            "authorize_params": PARAMS,
            "token_params": PARAMS,
            "pkce": BOOLEAN,
            "refresh_margin": INTEGER,
            "default_token_lifetime": nullable(INTEGER),
            "refresh_token_lifetime": nullable(INTEGER),
            "probe_url": nullable(URL),
            "probe_interval": nullable(INTEGER),
            "preset": nullable(STRING),
            "paused": BOOLEAN,
            "paused_problem": nullable(PROBLEM),
            "deleting": BOOLEAN,
            "awaiting_secret": {
                **BOOLEAN,
                "description": "Imported without its client secret: no authorization starts "
                "until it is set.",
            },
            "redirect_url": {
                **URL,
                "description": "This broker's callback: register it at the provider.",
            },
            "created_at": TIME,
            "updated_at": TIME,
        },
        description="An OAuth application; secrets go in, never come out.",
    ),
    "AppList": obj({"items": {"type": "array", "items": ref("App")}}),
    "AppDeleting": obj(
        {
            "status": {"type": "string", "const": "deleting"},
            "connections_revoking": INTEGER,
            "app": STRING,
        },
        description="The app goes once its connections are revoked at the provider.",
    ),
    "AuthorizationStarted": obj(
        {
            "connection_id": STRING,
            "authorize_url": {**URL, "description": "Send the user's browser here."},
            "expires_at": TIME,
            "authorization_id": {"type": "string", "format": "uuid"},
            "status_url": URL,
        }
    ),
    "Connection": obj(
        {
            "connection_id": STRING,
            "app": STRING,
            "status": {"type": "string", "enum": list(STATUSES)},
            "problem": nullable(PROBLEM),
            "problem_detail": nullable(STRING),
            "requested_scopes": STRINGS,
            "granted_scopes": nullable(STRINGS),
            "token_type": nullable(STRING),
            "expires_at": nullable(TIME),
            "refresh_at": nullable(TIME),
            "has_access_token": BOOLEAN,
            "has_refresh_token": BOOLEAN,
            "refresh_token_expires_at": nullable(TIME),
            "failed_attempts": INTEGER,
            "next_attempt_at": nullable(TIME),
            "last_error": nullable(ref("ProviderError")),
            "last_refresh_at": nullable(TIME),
            "authorized_at": nullable(TIME),
            "metadata": {"type": "object"},
            "created_at": TIME,
            "updated_at": TIME,
        },
        description="One authorized account of an app; never its tokens.",
    ),
    "ProviderError": LAST_ERROR,
    "ConnectionPage": obj(
        {
            "items": {"type": "array", "items": ref("Connection")},
            "next": {
                **nullable(STRING),
                "description": "Pass as `after` for the next page; null on the last page.",
            },
        }
    ),
    "ConnectionRevoking": obj(
        {"connection_id": STRING, "status": {"type": "string", "const": "revoking"}}
    ),
    "OAuthCredentials": obj(
        {
            "type": {"type": "string", "const": "oauth2"},
            "access_token": STRING,
            "token_type": STRING,
            "expires_at": nullable(TIME),
            "scopes": STRINGS,
            "authorization": {
                "type": "string",
                "description": "The ready `Authorization` header value.",
            },
        }
    ),
    "RefreshOutcome": obj(
        {
            "outcome": {"type": "string", "enum": ["refreshed", "failed", "retrying"]},
            "connection": ref("Connection"),
        }
    ),
    "ReportOutcome": {
        "description": "What authbroker did with the report.",
        "oneOf": [
            obj(
                {
                    "action": {"type": "string", "const": "recorded"},
                    "problem": {"type": "string", "const": str(Problem.INSUFFICIENT_SCOPE)},
                    "required_scopes": STRINGS,
                },
                description="insufficient_scope: recorded with the scopes the service named.",
            ),
            obj(
                {
                    "action": {"type": "string", "enum": ["refreshed", "refresh_attempted"]},
                    "connection": ref("Connection"),
                },
                description="invalid_token or a bare 401: the connection was refreshed.",
            ),
            obj(
                {"action": {"type": "string", "const": "none"}, "hint": STRING},
                description="A 403 without a Bearer error: nothing to refresh, a hint.",
            ),
        ],
    },
    "AppExport": obj(
        {
            "version": {"type": "integer", "const": 1},
            "exported_at": nullable(TIME),
            "apps": {
                "type": "array",
                "maxItems": 1000,
                "items": ref("AppCreate"),
                "description": "Each app as POST /v1/apps accepts it; exports carry no secret.",
            },
        },
        required=["version", "apps"],
    ),
    "AppImportResult": obj(
        {
            "created": STRINGS,
            "updated": STRINGS,
            "unchanged": STRINGS,
            "skipped": STRINGS,
        }
    ),
    "Basic": obj({"name": STRING, "login": STRING, "created_at": TIME, "updated_at": TIME}),
    "BasicList": obj({"items": {"type": "array", "items": ref("Basic")}}),
    "BasicCredentials": obj(
        {
            "type": {"type": "string", "const": "basic"},
            "login": STRING,
            "password": STRING,
            "authorization": {"type": "string", "description": "`Basic base64(login:password)`"},
        }
    ),
    "Check": obj(
        {
            "name": STRING,
            "status": {"type": "string", "enum": ["ok", "warning", "failing"]},
            "summary": STRING,
            "evidence": {"type": "object", "description": "What was recorded; never a secret."},
            "remedy": nullable(STRING),
        }
    ),
    "ConnectionDiagnosis": obj(
        {
            "connection_id": STRING,
            "app": STRING,
            "status": {"type": "string", "enum": list(STATUSES)},
            "checks": {"type": "array", "items": ref("Check")},
            "summary": {"type": "string", "enum": ["ok", "warning", "failing"]},
        }
    ),
    "AppDiagnosis": obj(
        {
            "app": STRING,
            "status": {"type": "string", "enum": ["active", "paused", "deleting"]},
            "checks": {"type": "array", "items": ref("Check")},
            "summary": {"type": "string", "enum": ["ok", "warning", "failing"]},
        }
    ),
    "CallbackOutcome": obj(
        {
            "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
            "app": STRING,
            "connection_id": STRING,
            "problem": nullable(PROBLEM),
            "detail": nullable(STRING),
            "status_url": STRING,
        }
    ),
    "Health": obj({"status": {"type": "string", "const": "ok"}}),
    "Readiness": obj(
        {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "checks": obj({"postgres": STRING, "redis": STRING}),
            "message": STRING,
        },
        required=["status", "checks"],
    ),
    "Event": obj(
        {
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": "string", "enum": [str(t) for t in EventType]},
            "occurred_at": TIME,
            "app": STRING,
            "connection_id": nullable(STRING),
            "status": nullable({"type": "string", "enum": list(STATUSES)}),
            "problem": nullable(PROBLEM),
            "detail": {**nullable(STRING), "description": "Prose for people (often the remedy)."},
            "data": {
                "type": "object",
                "description": "Names, counts and times of the change; never a token or secret.",
            },
        },
        description=(
            "One change of auth status, appended to the Redis stream `authbroker:events` and "
            "published on the channel of the same name (both under the configured prefix). Not "
            "served over HTTP: described here for runtimes that consume the stream."
        ),
    ),
}

if tuple(RESPONSE_SCHEMAS["Event"]["properties"]) != EVENT_FIELDS:  # pragma: no cover
    raise AssertionError("the Event schema must list authbroker.events.FIELDS in order")


# ------------------------------------------------------------------------------ request bodies


def request_schemas() -> dict[str, dict[str, Any]]:
    """The pydantic models' JSON Schemas (2020-12, which OpenAPI 3.1 uses as is)."""
    out: dict[str, dict[str, Any]] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    # AppUpdate's optional types admit null, but its validator refuses null for the settings an
    # app cannot lack: say so in the document too.
    out["AppCreateFromPreset"] = _from_preset(out["AppCreate"])
    update = out["AppUpdate"]["properties"]
    for name in _not_null_fields(AppUpdate):
        prop = update[name]
        variants = [v for v in prop.get("anyOf", []) if v != {"type": "null"}]
        if len(variants) == 1:
            rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
            update[name] = {**variants[0], **rest}
    return out


def _from_preset(create: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/apps` with a provider preset: the preset fills the URLs, scopes and the rest;
    whatever the body gives wins, and `placeholders` fill the preset's URL templates."""
    schema = copy.deepcopy(create)
    schema["title"] = "AppCreateFromPreset"
    schema["description"] = (
        "POST /v1/apps with a provider preset: the preset fills the URLs, scopes and the rest; "
        "whatever the body gives wins, and `placeholders` fill the preset's URL templates."
    )
    schema["properties"]["preset"] = {"type": "string", "enum": presets.names()}
    schema["properties"]["placeholders"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": 'Values for the preset\'s URL placeholders, e.g. {"tenant": "contoso"}.',
    }
    schema["required"] = ["name", "client_id", "preset"]
    return schema


def _not_null_fields(model: type[BaseModel]) -> tuple[str, ...]:
    validators = model.__pydantic_decorators__.field_validators
    found = validators.get("_not_null")
    return tuple(found.info.fields) if found else ()


# ------------------------------------------------------------------------------ paths

TAG_HEALTH = "health"
TAG_APPS = "apps"
TAG_CONNECTIONS = "connections"
TAG_BASIC = "basic"
TAG_BROWSER = "browser"
TAG_META = "meta"
TAG_EVENTS = "events"

NOT_FOUND_APP = error("No app of that name (`app_not_found`).")
NOT_FOUND_CONNECTION = error("No connection of that id (`connection_not_found`).")
NOT_FOUND_BASIC = error("No Basic credential of that name (`basic_not_found`).")
NOT_USABLE = error(
    "The connection has no usable token and will not get one by waiting "
    "(`connection_not_active`, `token_expired`, `refresh_token_missing`): `status`, `problem` "
    "and `detail` say why and what to do."
)
UNAVAILABLE = error(
    "No valid token now, but it may come back (refresh pending or retrying, or the app's "
    "settings were refused): `problem`, `detail` and `Retry-After`.",
    headers=RETRY_AFTER,
)
HTML_OR_JSON_OUTCOME = {
    "description": "The outcome: an HTML page for browsers, JSON when `Accept` asks for it.",
    "content": {"text/html": {"schema": STRING}, **json_content(ref("CallbackOutcome"))},
}
HTML_OR_JSON_ERROR = {
    "description": "A link that cannot be used (missing, unknown, expired or reused state; "
    "duplicated or oversized parameters; unknown sign-in): HTML, or JSON when asked.",
    "content": {"text/html": {"schema": STRING}, **json_content(ref("Error"))},
}


def paths() -> dict[str, dict[str, Any]]:
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness",
                TAG_HEALTH,
                {"200": answer("The process answers.", ref("Health"))},
                public=True,
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: Postgres and Redis answer",
                TAG_HEALTH,
                {
                    "200": answer("Ready.", ref("Readiness")),
                    "503": answer(
                        "A dependency does not answer; `checks` says which.", ref("Readiness")
                    ),
                },
                public=True,
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus metrics",
                TAG_META,
                {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": STRING}},
                    }
                },
                public=True,
            )
        },
        "/openapi.json": {
            "get": operation(
                "openapi",
                "This document",
                TAG_META,
                {"200": answer("The OpenAPI 3.1 document.", {"type": "object"})},
                public=True,
            )
        },
        "/oauth/callback": {
            "get": operation(
                "oauthCallback",
                "Where providers send the user's browser back",
                TAG_BROWSER,
                {"200": HTML_OR_JSON_OUTCOME, "400": HTML_OR_JSON_ERROR},
                description="RFC 6749 §4.1.2: the provider redirects here with `code` and "
                "`state`, or with `error`. The code is stored and exchanged by a worker.",
                parameters=[
                    query_param("state", "The state authbroker sent.", STRING),
                    query_param("code", "The authorization code.", STRING),
                    query_param("error", "The provider's error code.", STRING),
                    query_param("error_description", "The provider's description.", STRING),
                    query_param("error_uri", "A page about the error.", STRING),
                    query_param("iss", "The issuer (RFC 9207).", STRING),
                    query_param("scope", "Scopes granted, when the provider says.", STRING),
                ],
                public=True,
            )
        },
        "/oauth/status/{authorization_id}": {
            "get": operation(
                "oauthStatus",
                "The outcome of an authorization, for the callback page",
                TAG_BROWSER,
                {"200": HTML_OR_JSON_OUTCOME, "404": HTML_OR_JSON_ERROR},
                description="Waits up to 2 s for a pending exchange. An unknown id answers "
                "404 `not_found`.",
                parameters=[
                    path_param(
                        "authorization_id",
                        "From `status_url` of a started authorization.",
                        {"type": "string", "format": "uuid"},
                    )
                ],
                public=True,
            )
        },
        "/v1/apps": {
            "get": operation(
                "listApps",
                "List OAuth applications",
                TAG_APPS,
                {"200": answer("Every app, by name.", ref("AppList"))},
            ),
            "post": operation(
                "createApp",
                "Register an OAuth application",
                TAG_APPS,
                {
                    "201": answer("Created.", ref("App")),
                    "409": error("An app of that name exists (`app_exists`)."),
                },
                body_schema={"anyOf": [ref("AppCreate"), ref("AppCreateFromPreset")]},
            ),
        },
        "/v1/apps/export": {
            "get": operation(
                "exportApps",
                "Application definitions, without their secrets",
                TAG_APPS,
                {
                    "200": answer("The definitions.", ref("AppExport"), headers=NO_STORE),
                    "404": error("A named app does not exist (`app_not_found`)."),
                },
                parameters=[
                    {
                        **query_param(
                            "name", "Only these apps (repeatable, or comma-separated).", STRINGS
                        ),
                        "style": "form",
                        "explode": True,
                    }
                ],
            )
        },
        "/v1/apps/import": {
            "post": operation(
                "importApps",
                "Create (or with replace, update) apps from an export",
                TAG_APPS,
                {
                    "200": answer("What happened to each app.", ref("AppImportResult")),
                    "409": error(
                        "Another request created one of these apps meanwhile (`app_exists`)."
                    ),
                },
                description="Checked whole, then applied in one transaction: one bad app refuses "
                "the import and changes nothing. New apps wait for their secret "
                "(`awaiting_secret`).",
                parameters=[
                    query_param(
                        "replace",
                        "Update existing apps' settings (their secrets stay).",
                        {
                            "type": "string",
                            "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"],
                        },
                    )
                ],
                body_schema=ref("AppExport"),
            )
        },
        "/v1/apps/{name}": {
            "parameters": [APP_NAME],
            "get": operation(
                "getApp",
                "Show an OAuth application",
                TAG_APPS,
                {"200": answer("The app.", ref("App")), "404": NOT_FOUND_APP},
            ),
            "patch": operation(
                "updateApp",
                "Change an OAuth application",
                TAG_APPS,
                {"200": answer("The updated app.", ref("App")), "404": NOT_FOUND_APP},
                description="Only the fields given change; null clears the optional ones. Any "
                "change resumes an app paused for refused settings.",
                body="AppUpdate",
            ),
            "delete": operation(
                "deleteApp",
                "Delete an OAuth application",
                TAG_APPS,
                {
                    "202": answer(
                        "Its connections are being revoked; the app goes after them.",
                        ref("AppDeleting"),
                    ),
                    "204": answer("Deleted."),
                    "404": NOT_FOUND_APP,
                    "409": error(
                        "The app has live connections and `cascade` was not given "
                        "(`app_has_connections`, with `connections`)."
                    ),
                },
                parameters=[
                    query_param(
                        "cascade",
                        "Revoke and delete the app's connections with it (`true`, `1` or `yes`).",
                        {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
                    )
                ],
            ),
        },
        "/v1/apps/{name}/connections": {
            "parameters": [APP_NAME],
            "post": operation(
                "startAuthorization",
                "Start an authorization: get the URL to send the user to",
                TAG_CONNECTIONS,
                {
                    "201": answer(
                        "The authorize URL, valid ten minutes.", ref("AuthorizationStarted")
                    ),
                    "404": NOT_FOUND_APP,
                    "409": error(
                        "The app is being deleted (`app_deleting`), waits for its client "
                        "secret (`app_awaiting_secret`), or the connection id belongs to another "
                        "app (`connection_exists`)."
                    ),
                },
                description="An existing connection id of the same app is authorized again; "
                "its current tokens keep working until the new ones arrive.",
                body="ConnectionStart",
                body_required=False,
            ),
        },
        "/v1/apps/{name}/diagnosis": {
            "parameters": [APP_NAME],
            "get": operation(
                "diagnoseApp",
                "Check an application's settings against what its connections met",
                TAG_APPS,
                {
                    "200": answer("The checks, worst first in `summary`.", ref("AppDiagnosis")),
                    "404": NOT_FOUND_APP,
                },
            ),
        },
        "/v1/events": {
            "get": operation(
                "streamEvents",
                "Auth events as server-sent events",
                TAG_EVENTS,
                {
                    "200": {
                        "description": "An endless `text/event-stream`: each message's `id` is "
                        "the Redis stream id and its `data` one `Event` (JSON); `: keepalive` "
                        "comments every 15 s of silence.",
                        "content": {"text/event-stream": {"schema": STRING}},
                    },
                    "400": error(
                        "A bad filter or Last-Event-ID (`invalid_filter`, `invalid_last_event_id`)."
                    ),
                    "503": error("Redis is unavailable (`redis_unavailable`)."),
                },
                description="Starts at the newest event, at the oldest kept (`from_start`), or "
                "after `Last-Event-ID`. Runtimes should consume the Redis stream itself.",
                parameters=[
                    {
                        **query_param("type", "Event type prefixes (repeatable).", STRINGS),
                        "style": "form",
                        "explode": True,
                    },
                    {
                        **query_param("app", "App names (repeatable).", STRINGS),
                        "style": "form",
                        "explode": True,
                    },
                    query_param(
                        "from_start",
                        "Start at the oldest event the stream keeps.",
                        {
                            "type": "string",
                            "enum": ["1", "true", "yes", "on", "0", "false", "no", "off"],
                        },
                    ),
                    query_param(
                        "last_event_id",
                        "Resume after this stream id.",
                        {"type": "string", "pattern": r"^[0-9]{1,20}(-[0-9]{1,20})?$"},
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this stream id (sent by EventSource).",
                        "schema": {"type": "string", "pattern": r"^[0-9]{1,20}(-[0-9]{1,20})?$"},
                    },
                ],
            )
        },
        "/v1/basic": {
            "get": operation(
                "listBasic",
                "List Basic credentials (never their passwords)",
                TAG_BASIC,
                {"200": answer("Every Basic credential, by name.", ref("BasicList"))},
            )
        },
        "/v1/basic/{name}": {
            "parameters": [BASIC_NAME],
            "put": operation(
                "putBasic",
                "Create or replace a Basic credential",
                TAG_BASIC,
                {
                    "200": answer("Replaced.", ref("Basic")),
                    "201": answer("Created.", ref("Basic")),
                },
                description="A name that is not 1-63 letters, digits, `.`, `_` or `-` is "
                "refused with 400 `invalid_name`.",
                body="BasicCredentialIn",
            ),
            "delete": operation(
                "deleteBasic",
                "Delete a Basic credential",
                TAG_BASIC,
                {
                    "204": answer("Deleted."),
                    "400": error("Invalid name (`invalid_name`)."),
                    "404": NOT_FOUND_BASIC,
                },
            ),
        },
        "/v1/basic/{name}/credentials": {
            "parameters": [BASIC_NAME],
            "get": operation(
                "basicCredentials",
                "The login, password and ready Authorization value",
                TAG_BASIC,
                {
                    "200": answer("The credential.", ref("BasicCredentials"), headers=NO_STORE),
                    "400": error("Invalid name (`invalid_name`)."),
                    "404": NOT_FOUND_BASIC,
                },
            ),
        },
        "/v1/connections": {
            "get": operation(
                "listConnections",
                "List connections, a page at a time (by id)",
                TAG_CONNECTIONS,
                {
                    "200": answer("A page of connections.", ref("ConnectionPage")),
                    "400": error(
                        "Invalid `status` or `limit` (`invalid_status`, `invalid_limit`)."
                    ),
                },
                parameters=[
                    query_param("app", "Only this app's connections.", STRING),
                    query_param(
                        "status",
                        "Only connections in this status.",
                        {"type": "string", "enum": list(STATUSES)},
                    ),
                    query_param(
                        "limit",
                        "Page size.",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                    query_param("after", "The `next` of the previous page.", STRING),
                ],
            )
        },
        "/v1/connections/{connection_id}": {
            "parameters": [CONNECTION_ID],
            "get": operation(
                "getConnection",
                "Show a connection (never its tokens)",
                TAG_CONNECTIONS,
                {"200": answer("The connection.", ref("Connection")), "404": NOT_FOUND_CONNECTION},
            ),
            "delete": operation(
                "deleteConnection",
                "Revoke the grant at the provider, then forget the tokens",
                TAG_CONNECTIONS,
                {
                    "202": answer("Revocation started.", ref("ConnectionRevoking")),
                    "204": answer("Already revoked."),
                    "404": NOT_FOUND_CONNECTION,
                },
            ),
        },
        "/v1/connections/{connection_id}/credentials": {
            "parameters": [CONNECTION_ID],
            "get": operation(
                "connectionCredentials",
                "A valid access token and a ready Authorization value",
                TAG_CONNECTIONS,
                {
                    "200": answer(
                        "The credentials.",
                        ref("OAuthCredentials"),
                        headers=NO_STORE,
                    ),
                    "404": NOT_FOUND_CONNECTION,
                    "409": NOT_USABLE,
                    "503": UNAVAILABLE,
                },
                description="A token about to expire is refreshed first (joining a refresh in "
                "flight); the request waits at most ten seconds.",
            ),
        },
        "/v1/connections/{connection_id}/refresh": {
            "parameters": [CONNECTION_ID],
            "post": operation(
                "refreshConnection",
                "Refresh now and tell what happened",
                TAG_CONNECTIONS,
                {
                    "200": answer("The outcome.", ref("RefreshOutcome")),
                    "404": NOT_FOUND_CONNECTION,
                    "409": NOT_USABLE,
                    "503": error(
                        "The refresh did not finish within ten seconds (`refresh_pending`), or "
                        "the app's settings were refused.",
                        headers=RETRY_AFTER,
                    ),
                },
            ),
        },
        "/v1/connections/{connection_id}/report": {
            "parameters": [CONNECTION_ID],
            "post": operation(
                "reportConnection",
                "Tell what the web service answered (401/403 and its WWW-Authenticate)",
                TAG_CONNECTIONS,
                {
                    "200": answer("What authbroker did.", ref("ReportOutcome")),
                    "404": NOT_FOUND_CONNECTION,
                    "409": NOT_USABLE,
                    "503": UNAVAILABLE,
                },
                description="RFC 6750 §3: `invalid_token` or a bare 401 refreshes; "
                "`insufficient_scope` is recorded; a 403 without a Bearer error gets a hint.",
                body="Report",
            ),
        },
        "/v1/connections/{connection_id}/diagnosis": {
            "parameters": [CONNECTION_ID],
            "get": operation(
                "diagnoseConnection",
                "Walk the common failures of OAuth integrations for this connection",
                TAG_CONNECTIONS,
                {
                    "200": answer("The checks, worst in `summary`.", ref("ConnectionDiagnosis")),
                    "404": NOT_FOUND_CONNECTION,
                },
            ),
        },
    }


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document(
    registered: frozenset[tuple[str, str]] | None = None, server_url: str | None = None
) -> dict[str, Any]:
    """The whole document; with `registered` ((method, path) pairs, lower-case methods), only
    the operations the application serves."""
    all_paths = paths()
    kept: dict[str, dict[str, Any]] = {}
    for path, item in all_paths.items():
        operations = {
            key: value
            for key, value in item.items()
            if key not in METHODS or registered is None or (key, path) in registered
        }
        if any(key in METHODS for key in operations):
            kept[path] = operations
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "authbroker",
            "version": API_VERSION,
            "summary": "Keeps integrations authenticated: OAuth 2.0 connections and Basic "
            "credentials, refreshed, watched and revoked.",
            "description": (
                "Every `/v1` request needs an API key: `Authorization: Bearer <key>` (create one "
                "with `authbroker api-keys create`). Errors are JSON `{error, message}`; "
                "validation errors add `fields: [{field, message}]`. Times are RFC 3339 UTC. "
                "Changes of auth status are published as `Event`s on Redis (see "
                "components.schemas.Event)."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": TAG_APPS, "description": "OAuth applications."},
            {"name": TAG_CONNECTIONS, "description": "Authorized accounts and their tokens."},
            {"name": TAG_BASIC, "description": "Basic credentials."},
            {"name": TAG_EVENTS, "description": "Changes of auth status, live."},
            {"name": TAG_BROWSER, "description": "Pages a user's browser lands on."},
            {"name": TAG_HEALTH, "description": "Liveness and readiness."},
            {"name": TAG_META, "description": "Metrics and this document."},
        ],
        "paths": kept,
        "components": {
            "schemas": {**request_schemas(), **copy.deepcopy(RESPONSE_SCHEMAS)},
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


def registered_operations(app: web.Application) -> frozenset[tuple[str, str]]:
    """The (method, path) pairs the application routes, HEAD aside."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        found.add((route.method.lower(), resource.canonical))
    return frozenset(found)


@functools.lru_cache(maxsize=8)
def _rendered(registered: frozenset[tuple[str, str]], server_url: str) -> str:
    return json.dumps(document(registered, server_url), separators=(",", ":"))


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    text = _rendered(registered_operations(request.app), resources(request).settings.public_url)
    return web.Response(text=text, content_type=JSON, headers={"Cache-Control": "no-cache"})
