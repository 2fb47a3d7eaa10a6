"""`/openapi.json` is a valid OpenAPI 3.1 document, documents exactly the routes the server has,
and the server's real answers match it: a scenario drives the API through successes and errors
and validates every response body against the schema declared for its path, method and status.

openapi-spec-validator checks the document; jsonschema checks the answers (JSON Schema 2020-12,
which OpenAPI 3.1 uses), references resolved within the document and formats asserted."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from authbroker.events import FIELDS as EVENT_FIELDS
from authbroker.events import EventType, Invalidated, make_event
from authbroker.problems import Problem
from authbroker.schemas import AppCreate, AppUpdate, BasicCredentialIn, ConnectionStart, Report
from handlers import openapi
from handlers.app import create_app
from storage import api_keys, outbox
from storage.resources import Resources
from storage.sealing import aad
from tests.chaos_helpers import FakeProvider
from tests.helpers import create_oauth_app, follow_callback

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
DOCUMENT = "urn:authbroker:openapi"

# date-time is checked by rfc3339-validator (installed with openapi-spec-validator), uuid by the
# standard library; jsonschema checks "uri" only with a package we do not need, so here.
FORMATS = FormatChecker(formats=("date-time", "uuid"))

REPOSITORY = Path(__file__).resolve().parents[1]


@FORMATS.checks("uri")
def _absolute_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlsplit(value).scheme and urlsplit(value).netloc)


class Schemas:
    """Checks values against the schemas of one OpenAPI document."""

    def __init__(self, doc: dict[str, Any]):
        self.registry = Registry().with_resource(DOCUMENT, DRAFT202012.create_resource(doc))

    def errors(self, instance: Any, *where: str) -> list[str]:
        """How `instance` breaks the schema at `where` (keys from the document's root)."""
        pointer = "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in where)
        validator = Draft202012Validator(
            {"$ref": f"{DOCUMENT}#{pointer}"}, registry=self.registry, format_checker=FORMATS
        )
        return [
            f"{e.json_path}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: e.json_path)
        ]


# ------------------------------------------------------------------------------ the document


async def test_the_document_is_valid_openapi_31(api_doc: Api):
    doc = api_doc.doc
    validate_openapi(doc)
    assert doc["openapi"].startswith("3.1.")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1/"):
                assert op["security"] == [{openapi.SECURITY_SCHEME: []}], (path, method)
                assert "401" in op["responses"], (path, method)
            else:
                assert op["security"] == [], (path, method)
    schemas = doc["components"]["schemas"]
    # Request bodies are the models the handlers validate with.
    for model in (AppCreate, BasicCredentialIn, ConnectionStart, Report):
        assert schemas[model.__name__] == model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    # AppUpdate, except that null is refused where the handler refuses it.
    assert schemas["AppUpdate"]["properties"]["client_id"]["type"] == "string"
    assert "anyOf" in schemas["AppUpdate"]["properties"]["revoke_url"]
    assert set(schemas["AppUpdate"]["properties"]) == set(AppUpdate.model_fields)
    # Every document the description cites is one the repository carries.
    for cited in set(re.findall(r"[\w./-]+\.md\b", json.dumps(doc))):
        assert (REPOSITORY / cited).is_file(), cited
    # The event contract, field for field.
    event = schemas["Event"]
    assert tuple(event["properties"]) == EVENT_FIELDS
    assert set(schemas["EventType"]["enum"]) == {str(t) for t in EventType}
    real = make_event(
        EventType.INVALIDATED,
        app="crm",
        connection_id="c1",
        status="failed",
        problem=Problem.REFRESH_TOKEN_INVALIDATED,
        data=Invalidated(provider_error="invalid_grant"),
    )
    check = Schemas(doc)
    assert check.errors(real, "components", "schemas", "Event") == []
    bare = make_event(EventType.APP_SETTINGS_INVALID, app="crm")
    assert check.errors(bare, "components", "schemas", "Event") == []


async def test_an_answer_off_the_document_is_caught(api_doc: Api):
    """The checks below are not vacuous: references resolve, closed objects, types and formats
    are enforced."""
    check = Schemas(api_doc.doc)
    basic = ("components", "schemas", "Basic")
    good = {
        "name": "svc",
        "login": "me",
        "awaiting_password": False,
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05.5+01:00",
    }
    assert check.errors(good, *basic) == []
    wrong = {**good, "created_at": "yesterday", "password": "x"}
    assert len(check.errors(wrong, *basic)) == 2  # not a date-time; an undeclared property
    shown = ("/v1/connections/{connection_id}", "get", "responses", "200", "content")
    assert check.errors({"connection_id": "c"}, "paths", *shown, "application/json", "schema")
    app = ("components", "schemas", "App")
    assert any("'uri'" in e for e in check.errors({"token_url": "not a url"}, *app))


# ------------------------------------------------------------------------------ the real API


class Api:
    """Sends requests and checks every answer against the document."""

    def __init__(self, client: TestClient, key: str, doc: dict[str, Any]):
        self.client = client
        self.key = key
        self.doc = doc
        self.schemas = Schemas(doc)
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(
        self,
        method: str,
        template: str,
        *,
        expect: int,
        auth: bool | str = True,
        params: dict[str, str] | None = None,
        accept: str = "application/json",
        stream: bool = False,
        **kwargs: Any,
    ) -> Any:
        path = template
        for name, value in (params or {}).items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        headers = dict(kwargs.pop("headers", {}))
        headers.setdefault("Accept", accept)
        if auth is True:
            headers["Authorization"] = f"Bearer {self.key}"
        elif isinstance(auth, str):
            headers["Authorization"] = auth
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            status = response.status
            media = response.content_type
            if stream and status == 200:
                raw = await response.content.readline()  # an endless stream: its first line
            else:
                raw = await response.read()
        label = f"{method} {path} -> {status}: {raw[:500]!r}"
        assert status == expect, label
        documented = template.split("?")[0]
        op = self.doc["paths"][documented][method.lower()]
        declared_as = str(status) if str(status) in op["responses"] else "default"
        declared = op["responses"].get(declared_as)
        assert declared is not None, f"undocumented status: {label}"
        content = declared.get("content")
        body: Any = None
        if not content:
            assert raw == b"", f"documented without a body: {label}"
        else:
            assert media in content, f"{media} not documented: {label}"
            if media == "application/json":
                body = json.loads(raw)
                where = ("paths", documented, method.lower(), "responses", declared_as)
                errors = self.schemas.errors(body, *where, "content", media, "schema")
                assert not errors, f"{label}\n" + "\n".join(errors)
            else:
                body = raw.decode()
        request_json = kwargs.get("json")
        if 200 <= status < 300 and request_json is not None and "requestBody" in op:
            where = ("paths", documented, method.lower(), "requestBody", "content")
            errors = self.schemas.errors(request_json, *where, "application/json", "schema")
            assert not errors, f"accepted body not allowed by the document: {errors}"
        self.seen.add((documented, method.lower(), status))
        return body


@pytest.fixture(scope="module")
async def served(resources: Resources) -> AsyncIterator[tuple[TestClient, web.Application]]:
    app = create_app(resources)
    async with TestClient(TestServer(app)) as client:
        yield client, app


@pytest.fixture(scope="module")
async def api_doc(served, resources: Resources) -> Api:
    client, _ = served
    async with client.get("/openapi.json") as response:  # public: no key
        assert response.status == 200
        assert response.content_type == "application/json"
        doc = await response.json()
    _, key = await api_keys.create(resources.pool, "openapi-tests")
    return Api(client, key, doc)


def operations_of(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, m) for p, item in doc["paths"].items() for m in item if m in METHODS}


async def test_served_document_lists_exactly_the_routes(served, api_doc):
    _, app = served
    doc = api_doc.doc
    registered = {
        (r.resource.canonical, r.method.lower())
        for r in app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        and not isinstance(r.resource, web.StaticResource)
        # The console is HTML for people, not part of the API the document describes.
        and not r.resource.canonical.startswith("/console")
    }
    documented = operations_of(doc)
    assert registered - documented == set(), "registered but not documented"
    assert documented - registered == set(), "documented but not served"
    for path in (
        "/healthz",
        "/readyz",
        "/oauth/callback",
        "/oauth/status/{authorization_id}",
        "/v1/apps",
        "/v1/apps/{name}",
        "/v1/apps/{name}/connections",
        "/v1/apps/{name}/diagnosis",
        "/v1/basic",
        "/v1/basic/{name}",
        "/v1/basic/{name}/credentials",
        "/v1/connections",
        "/v1/connections/{connection_id}",
        "/v1/connections/{connection_id}/credentials",
        "/v1/connections/{connection_id}/refresh",
        "/v1/connections/{connection_id}/report",
        "/v1/connections/{connection_id}/diagnosis",
        "/v1/apps/{name}/connect-links",
        "/connect/{token}",
        "/v1/basic/export",
        "/v1/basic/import",
        "/v1/webhooks",
        "/v1/webhooks/{webhook_id}",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        "/v1/webhooks/{webhook_id}/deliveries",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
        "/openapi.json",
    ):
        assert path in doc["paths"], path
    assert doc["servers"][0]["url"].startswith("http")


def app_body(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "client_id": f"client-{name}",
        "client_secret": f"secret-{name}",
        "authorization_url": "http://127.0.0.1:9/authorize",
        "token_url": "http://127.0.0.1:9/token",
        "scopes": ["read", "write"],
        **overrides,
    }


async def seal_tokens(
    resources: Resources, connection_id: str, *, expires_in: str, refresh: bool
) -> None:
    """Make a pending connection active with tokens, as the exchange would have."""
    ring = resources.ring
    access = ring.seal("at-" + connection_id, aad=aad("connections", connection_id, "access_token"))
    refresh_token = (
        ring.seal("rt-" + connection_id, aad=aad("connections", connection_id, "refresh_token"))
        if refresh
        else None
    )
    await resources.pool.execute(
        f"""UPDATE connections SET status = 'active', problem = NULL, access_token = $2,
               refresh_token = $3, token_type = 'Bearer',
               expires_at = now() + interval '{expires_in}', refresh_at = NULL,
               granted_scopes = ARRAY['read', 'write'], authorized_at = now(),
               last_error = NULL
           WHERE id = $1""",
        connection_id,
        access,
        refresh_token,
    )


async def test_every_answer_matches_the_document(api_doc: Api, resources, worker, unique):
    call = api_doc
    name = unique("oas")
    other = unique("oas2")
    anon = {"auth": False}

    # Public endpoints.
    await call("GET", "/openapi.json", expect=200, **anon)
    await call("GET", "/healthz", expect=200, **anon)
    await call("GET", "/readyz", expect=200, **anon)
    if ("/metrics", "get") in operations_of(call.doc):
        await call("GET", "/metrics", expect=200, accept="text/plain", **anon)

    # Authentication.
    await call("GET", "/v1/apps", expect=401, **anon)
    await call("GET", "/v1/apps", expect=401, auth="Bearer ab_nope_nope")
    await call("GET", "/v1/connections", expect=401, auth="Basic eDp5")

    # Apps.
    created = await call("POST", "/v1/apps", expect=201, json=app_body(name))
    assert created["client_secret_set"] is True and "client_secret" not in created
    await call("POST", "/v1/apps", expect=201, json=app_body(other, client_auth="auto"))
    await call("POST", "/v1/apps", expect=409, json=app_body(name))
    invalid = await call(
        "POST",
        "/v1/apps",
        expect=400,
        json=app_body(name, token_url="ftp://x", client_auht="basic"),
    )
    assert {f["field"] for f in invalid["fields"]} == {"token_url", "client_auht"}
    await call("POST", "/v1/apps", expect=400, data=b"{not json")
    await call("POST", "/v1/apps", expect=400, data=b"[1, 2]")
    await call(
        "POST",
        "/v1/apps",
        expect=413,
        data=b"{" + b" " * (300 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    preset = unique("oaspreset")
    from_preset = await call(
        "POST",
        "/v1/apps",
        expect=201,
        json={"name": preset, "client_id": "x", "client_secret": "y", "preset": "github"},
    )
    assert from_preset["preset"] == "github" and from_preset["token_url"].startswith("https://")
    await call(
        "POST",
        "/v1/apps",
        expect=400,
        json={"name": preset + "x", "client_id": "x", "preset": "no-such-provider"},
    )
    listed = await call("GET", "/v1/apps", expect=200)
    assert name in {a["name"] for a in listed["items"]}

    # Keys for private_key_jwt, and their JWKS (published only where the app asks for it).
    jwt_app = unique("oasjwt")
    signing = await call(
        "POST",
        "/v1/apps",
        expect=201,
        json=app_body(jwt_app, client_auth="private_key_jwt", jwks_public=True),
    )
    assert len(signing["key_ids"]) == 1  # private_key_jwt gets a key at once
    one = {"name": jwt_app}
    added = await call(
        "POST", "/v1/apps/{name}/keys", expect=201, params=one, json={"alg": "ES256"}
    )
    assert added["jwks"]["keys"][0]["kty"] == "EC" and len(added["jwks"]["keys"]) == 2
    rotated = await call("POST", "/v1/apps/{name}/keys", expect=201, params=one)
    assert [k["kty"] for k in rotated["jwks"]["keys"]] == ["RSA", "EC"]  # one previous key kept
    bad_key = await call(
        "POST",
        "/v1/apps/{name}/keys",
        expect=400,
        params=one,
        json={"private_key_pem": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"},
    )
    assert bad_key["error"] == "invalid_key" and "nope" not in json.dumps(bad_key)
    await call("POST", "/v1/apps/{name}/keys", expect=404, params={"name": "no-such-app"})
    shown = await call("GET", "/v1/apps/{name}/jwks", expect=200, params=one)
    assert shown == rotated["jwks"] and shown["keys"][0]["kid"] == rotated["kid"]
    await call("GET", "/v1/apps/{name}/jwks", expect=404, params={"name": "no-such-app"})
    published = await call("GET", "/oauth/jwks/{name}", expect=200, params=one, **anon)
    assert published == shown and all("d" not in key for key in published["keys"])
    await call("GET", "/oauth/jwks/{name}", expect=404, params={"name": name}, **anon)
    await call("GET", "/v1/apps/{name}", expect=200, params={"name": name})
    await call("GET", "/v1/apps/{name}", expect=404, params={"name": "no-such-app"})
    patched = await call(
        "PATCH",
        "/v1/apps/{name}",
        expect=200,
        params={"name": name},
        json={"scopes": ["read", "write", "admin"], "revoke_url": None, "probe_interval": 600},
    )
    assert patched["scopes"] == ["read", "write", "admin"]
    await call(
        "PATCH", "/v1/apps/{name}", expect=400, params={"name": name}, json={"client_id": None}
    )
    await call("PATCH", "/v1/apps/{name}", expect=404, params={"name": "no-such-app"}, json={})
    await call("GET", "/v1/apps/{name}/diagnosis", expect=200, params={"name": name})
    await call("GET", "/v1/apps/{name}/diagnosis", expect=404, params={"name": "no-such-app"})

    ops = operations_of(call.doc)
    if ("/v1/apps/export", "get") in ops:
        exported = await call("GET", f"/v1/apps/export?name={name}", expect=200)
        assert [a["name"] for a in exported["apps"]] == [name]
        await call("GET", "/v1/apps/export", expect=200)
        await call("GET", "/v1/apps/export?name=no-such-app", expect=404)
    if ("/v1/apps/import", "post") in ops:
        imported = unique("oasimport")
        document = {"version": 1, "apps": [{**app_body(imported), "client_secret": None}]}
        result = await call("POST", "/v1/apps/import", expect=200, json=document)
        assert result["created"] == [imported]
        await call("POST", "/v1/apps/import?replace=true", expect=200, json=document)
        await call("POST", "/v1/apps/import", expect=400, json={"version": 2, "apps": []})
        waiting = await call("GET", "/v1/apps/{name}", expect=200, params={"name": imported})
        assert waiting["awaiting_secret"] is True
        await call(
            "POST",
            "/v1/apps/{name}/connections",
            expect=409,
            params={"name": imported},
            json={},
        )
    if ("/v1/events", "get") in ops:
        await call("GET", "/v1/events?from_start=1", expect=200, accept="*/*", stream=True)
        await call("GET", "/v1/events?last_event_id=x", expect=400)

    # Starting authorizations.
    started = await call(
        "POST",
        "/v1/apps/{name}/connections",
        expect=201,
        params={"name": name},
        json={"connection_id": f"{name}-1", "metadata": {"tenant": 7}},
    )
    cid = started["connection_id"]
    second = await call(
        "POST", "/v1/apps/{name}/connections", expect=201, params={"name": name}, json={}
    )
    third = await call(
        "POST", "/v1/apps/{name}/connections", expect=201, params={"name": name}, json={}
    )
    await call(
        "POST",
        "/v1/apps/{name}/connections",
        expect=409,
        params={"name": other},
        json={"connection_id": cid},
    )
    await call(
        "POST",
        "/v1/apps/{name}/connections",
        expect=400,
        params={"name": name},
        json={"connection_id": "bad id!"},
    )
    await call(
        "POST", "/v1/apps/{name}/connections", expect=404, params={"name": "no-such-app"}, json={}
    )

    # Listing and showing connections.
    page = await call("GET", f"/v1/connections?app={name}&limit=1", expect=200)
    assert len(page["items"]) == 1 and page["next"]
    rest = await call("GET", f"/v1/connections?app={name}&after={page['next']}", expect=200)
    assert rest["next"] is None and len(rest["items"]) == 2
    await call("GET", "/v1/connections?status=pending&limit=1000", expect=200)
    await call("GET", "/v1/connections?status=bogus", expect=400)
    await call("GET", "/v1/connections?limit=0", expect=400)
    await call("GET", "/v1/connections?limit=ten", expect=400)
    shown = await call(
        "GET", "/v1/connections/{connection_id}", expect=200, params={"connection_id": cid}
    )
    assert shown["status"] == "pending" and shown["metadata"] == {"tenant": 7}
    await call(
        "GET", "/v1/connections/{connection_id}", expect=404, params={"connection_id": "nope"}
    )
    await call(
        "GET",
        "/v1/connections/{connection_id}/diagnosis",
        expect=200,
        params={"connection_id": cid},
    )
    await call(
        "GET",
        "/v1/connections/{connection_id}/diagnosis",
        expect=404,
        params={"connection_id": "nope"},
    )

    # Connect links: made with the key, opened without one (not followed: on to the provider).
    link = await call(
        "POST",
        "/v1/apps/{name}/connect-links",
        expect=201,
        params={"name": name},
        json={"connection_id": cid, "scopes": ["read"], "expires_in": 3600},
    )
    assert link["connection_id"] == cid
    fresh = await call("POST", "/v1/apps/{name}/connect-links", expect=201, params={"name": name})
    assert fresh["connection_id"] != cid
    await call(
        "POST",
        "/v1/apps/{name}/connect-links",
        expect=400,
        params={"name": name},
        json={"expires_in": 1},
    )
    await call(
        "POST",
        "/v1/apps/{name}/connect-links",
        expect=409,
        params={"name": other},
        json={"connection_id": cid},
    )
    await call("POST", "/v1/apps/{name}/connect-links", expect=404, params={"name": "no-such-app"})
    token = {"token": urlsplit(link["url"]).path.rsplit("/", 1)[1]}
    await call("GET", "/connect/{token}", expect=302, params=token, allow_redirects=False, **anon)
    for accept in ("application/json", "text/html"):
        await call("GET", "/connect/{token}", expect=410, params=token, accept=accept, **anon)
        await call(
            "GET", "/connect/{token}", expect=404, params={"token": "x" * 43}, accept=accept, **anon
        )

    # A pending connection has no credentials, nothing to refresh.
    refused = await call(
        "GET",
        "/v1/connections/{connection_id}/credentials",
        expect=409,
        params={"connection_id": cid},
    )
    assert refused["error"] == "connection_not_active" and refused["status"] == "pending"
    await call(
        "GET",
        "/v1/connections/{connection_id}/credentials",
        expect=404,
        params={"connection_id": "nope"},
    )
    await call(
        "POST",
        "/v1/connections/{connection_id}/refresh",
        expect=409,
        params={"connection_id": cid},
    )
    await call(
        "POST",
        "/v1/connections/{connection_id}/refresh",
        expect=404,
        params={"connection_id": "nope"},
    )

    # Reports.
    hint = await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=200,
        params={"connection_id": cid},
        json={"status": 403},
    )
    assert hint["action"] == "none"
    recorded = await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=200,
        params={"connection_id": cid},
        json={"status": 403, "www_authenticate": 'Bearer error="insufficient_scope", scope="a b"'},
    )
    assert recorded["required_scopes"] == ["a", "b"]
    await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=409,
        params={"connection_id": cid},
        json={"status": 401},
    )
    await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=400,
        params={"connection_id": cid},
        json={"status": 500},
    )
    await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=404,
        params={"connection_id": "nope"},
        json={"status": 403},
    )

    # Active states, set up as the worker would leave them.
    await seal_tokens(resources, cid, expires_in="1 hour", refresh=False)
    credentials = await call(
        "GET",
        "/v1/connections/{connection_id}/credentials",
        expect=200,
        params={"connection_id": cid},
    )
    assert credentials["authorization"] == f"Bearer at-{cid}"
    missing = await call(
        "POST",
        "/v1/connections/{connection_id}/refresh",
        expect=409,
        params={"connection_id": cid},
    )
    assert missing["error"] == "refresh_token_missing"
    await call("GET", "/v1/connections/{connection_id}", expect=200, params={"connection_id": cid})
    diagnosis = await call(
        "GET",
        "/v1/connections/{connection_id}/diagnosis",
        expect=200,
        params={"connection_id": cid},
    )
    assert diagnosis["summary"] == "failing"  # no refresh token, an expiring token, a 403 report
    # Without a refresh token, a bare 401 is counted and invalid_token ends the token.
    counted = await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=200,
        params={"connection_id": cid},
        json={"status": 401},
    )
    assert (counted["action"], counted["reports"]) == ("counted", 1)
    ended = await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=200,
        params={"connection_id": cid},
        json={"status": 401, "www_authenticate": 'Bearer error="invalid_token"'},
    )
    assert (ended["action"], ended["problem"]) == ("invalidated", "token_revoked")
    # Expired with no refresh token: 409; expiring with the app paused: 503.
    await seal_tokens(resources, cid, expires_in="-1 minute", refresh=False)
    expired = await call(
        "GET",
        "/v1/connections/{connection_id}/credentials",
        expect=409,
        params={"connection_id": cid},
    )
    assert expired["error"] == "token_expired"
    await seal_tokens(resources, cid, expires_in="-1 minute", refresh=True)
    await resources.pool.execute(
        "UPDATE apps SET paused_at = now(), paused_problem = 'invalid_settings' WHERE name = $1",
        name,
    )
    paused = await call(
        "GET",
        "/v1/connections/{connection_id}/credentials",
        expect=503,
        params={"connection_id": cid},
    )
    assert paused["problem"] == "invalid_settings"
    await call(
        "POST",
        "/v1/connections/{connection_id}/refresh",
        expect=503,
        params={"connection_id": cid},
    )
    await call("GET", "/v1/apps/{name}/diagnosis", expect=200, params={"name": name})
    await call("GET", "/v1/apps/{name}", expect=200, params={"name": name})
    # Transient trouble recorded on the connection shows in its view.
    await resources.pool.execute(
        """UPDATE connections SET failed_attempts = 2, next_attempt_at = now() + interval '1 min',
               last_error = $2, last_report = NULL WHERE id = $1""",
        cid,
        {"stage": "refresh", "error": "server_error", "description": None, "status": 503},
    )
    shown = await call(
        "GET", "/v1/connections/{connection_id}", expect=200, params={"connection_id": cid}
    )
    assert shown["last_error"]["status"] == 503

    # The browser's side: a provider error ends an authorization; bad links are refused.
    state = parse_qs(urlsplit(second["authorize_url"]).query)["state"][0]
    outcome = await call(
        "GET",
        f"/oauth/callback?state={state}&error=access_denied&error_description=no",
        expect=200,
        **anon,
    )
    assert outcome["status"] == "failed" and outcome["problem"] == "access_denied"
    for accept in ("application/json", "text/html"):
        await call(
            "GET",
            "/oauth/status/{authorization_id}",
            expect=200,
            params={"authorization_id": second["authorization_id"]},
            accept=accept,
            **anon,
        )
        await call("GET", "/oauth/callback", expect=400, accept=accept, **anon)
        await call("GET", "/oauth/callback?state=unknown&code=x", expect=400, accept=accept, **anon)
        await call(
            "GET",
            "/oauth/status/{authorization_id}",
            expect=404,
            params={"authorization_id": "00000000-0000-4000-8000-000000000000"},
            accept=accept,
            **anon,
        )
    await call(
        "GET",
        "/v1/connections/{connection_id}",
        expect=200,
        params={"connection_id": second["connection_id"]},
    )

    # Deleting connections and apps.
    gone = await call(
        "DELETE",
        "/v1/connections/{connection_id}",
        expect=202,
        params={"connection_id": third["connection_id"]},
    )
    assert gone["status"] == "revoking"
    await resources.pool.execute(
        "UPDATE connections SET status = 'revoked' WHERE id = $1", third["connection_id"]
    )
    await call(
        "DELETE",
        "/v1/connections/{connection_id}",
        expect=204,
        params={"connection_id": third["connection_id"]},
    )
    await call(
        "DELETE", "/v1/connections/{connection_id}", expect=404, params={"connection_id": "nope"}
    )
    has = await call("DELETE", "/v1/apps/{name}", expect=409, params={"name": name})
    assert has["connections"] >= 1
    deleting = await call(
        "DELETE", "/v1/apps/{name}?cascade=true", expect=202, params={"name": name}
    )
    assert deleting["status"] == "deleting"
    await call("POST", "/v1/apps/{name}/connections", expect=409, params={"name": name}, json={})
    await call("GET", "/v1/apps/{name}/diagnosis", expect=200, params={"name": name})
    await call("DELETE", "/v1/apps/{name}", expect=204, params={"name": other})
    await call("DELETE", "/v1/apps/{name}", expect=204, params={"name": preset})
    await call("DELETE", "/v1/apps/{name}", expect=404, params={"name": other})

    # Basic credentials.
    basic = unique("basic")
    await call(
        "PUT",
        "/v1/basic/{name}",
        expect=201,
        params={"name": basic},
        json={"login": "svc", "password": "pw"},
    )
    await call(
        "PUT",
        "/v1/basic/{name}",
        expect=200,
        params={"name": basic},
        json={"login": "svc2", "password": "pw2"},
    )
    await call(
        "PUT",
        "/v1/basic/{name}",
        expect=400,
        params={"name": basic},
        json={"login": "a:b", "password": "pw"},
    )
    await call(
        "PUT",
        "/v1/basic/{name}",
        expect=400,
        params={"name": "bad name"},
        json={"login": "a", "password": "b"},
    )
    listing = await call("GET", "/v1/basic", expect=200)
    assert basic in {b["name"] for b in listing["items"]}
    secret = await call("GET", "/v1/basic/{name}/credentials", expect=200, params={"name": basic})
    assert secret["authorization"] == "Basic " + base64.b64encode(b"svc2:pw2").decode()
    await call("GET", "/v1/basic/{name}/credentials", expect=404, params={"name": "no-such"})
    exported = await call("GET", "/v1/basic/export", expect=200)
    assert {"name": basic, "login": "svc2"} in exported["credentials"]
    waiting = unique("basicimport")
    document = {"version": 1, "credentials": [{"name": waiting, "login": "svc"}]}
    imported = await call("POST", "/v1/basic/import", expect=200, json=document)
    assert imported["created"] == [waiting]
    await call("POST", "/v1/basic/import?replace=true", expect=200, json=document)
    await call("POST", "/v1/basic/import", expect=400, json={"version": 1, "credentials": [{}]})
    awaiting = await call(
        "GET", "/v1/basic/{name}/credentials", expect=409, params={"name": waiting}
    )
    assert awaiting["error"] == "awaiting_password"
    await call("GET", "/v1/basic/{name}/credentials", expect=400, params={"name": "bad name"})
    await call("DELETE", "/v1/basic/{name}", expect=204, params={"name": basic})
    await call("DELETE", "/v1/basic/{name}", expect=404, params={"name": basic})
    await call("DELETE", "/v1/basic/{name}", expect=400, params={"name": "bad name"})

    # Webhooks, with a delivery to a receiver on loopback.
    receiver = await FakeProvider().start()
    try:
        await exercise_webhooks(call, resources, receiver, unique("oashook"))
    finally:
        await receiver.stop()
    # API keys, roles and the audit.
    made = await call(
        "POST",
        "/v1/api-keys",
        expect=201,
        json={"name": f"{name}-runtime", "role": "runtime", "apps": [other]},
    )
    assert made["key"].startswith("ab_") and made["apps"] == [other]
    runtime = {"auth": f"Bearer {made['key']}"}
    await call("POST", "/v1/api-keys", expect=400, json={"name": "x", "role": "root"})
    await call("GET", "/v1/apps", expect=403, **runtime)
    await call("GET", "/v1/api-keys", expect=403, **runtime)
    listed_keys = await call("GET", "/v1/api-keys", expect=200)
    assert made["id"] in {k["id"] for k in listed_keys["items"]}
    one_key = {"key_id": made["id"]}
    shown_key = await call("GET", "/v1/api-keys/{key_id}", expect=200, params=one_key)
    assert shown_key["role"] == "runtime" and shown_key["reads"] == []
    await call("GET", "/v1/api-keys/{key_id}", expect=404, params={"key_id": "nope"})
    await call("GET", "/v1/credential-reads", expect=200)
    await call("GET", "/v1/credential-reads?days=0", expect=400)
    await call("DELETE", "/v1/api-keys/{key_id}", expect=204, params=one_key)
    await call("DELETE", "/v1/api-keys/{key_id}", expect=404, params={"key_id": "nope"})

    # Every documented operation was exercised, and checked.
    exercised = {(path, method) for path, method, _ in call.seen}
    assert operations_of(call.doc) - exercised == set()


async def exercise_webhooks(call: Api, resources, receiver: FakeProvider, app: str) -> None:
    async def received(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    receiver.handlers["/hook"] = received
    made = await call(
        "POST",
        "/v1/webhooks",
        expect=201,
        json={"url": receiver.url("/hook"), "types": ["connection."], "apps": [app]},
    )
    assert made["secret"].startswith("whsec_")
    await call("POST", "/v1/webhooks", expect=400, json={"url": "https://169.254.169.254/"})
    hook = {"webhook_id": made["id"]}
    nowhere = {"webhook_id": str(uuid.uuid4())}
    listed = await call("GET", "/v1/webhooks", expect=200)
    assert made["id"] in {w["id"] for w in listed["items"]}
    assert "secret" not in await call("GET", "/v1/webhooks/{webhook_id}", expect=200, params=hook)
    await call("GET", "/v1/webhooks/{webhook_id}", expect=404, params=nowhere)
    await call(
        "PATCH", "/v1/webhooks/{webhook_id}", expect=200, params=hook, json={"description": "x"}
    )
    await call(
        "PATCH", "/v1/webhooks/{webhook_id}", expect=400, params=hook, json={"enabled": None}
    )
    await call("PATCH", "/v1/webhooks/{webhook_id}", expect=404, params=nowhere, json={})
    rotated = await call(
        "POST",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        expect=200,
        params=hook,
        json={"previous_expires_in": 60},
    )
    assert rotated["previous_secret_expires_at"] and rotated["secret"] != made["secret"]
    await call("POST", "/v1/webhooks/{webhook_id}/rotate-secret", expect=404, params=nowhere)

    event = make_event(EventType.REFRESHED, app=app, connection_id=f"{app}-c", status="active")
    async with resources.pool.acquire() as conn, conn.transaction():
        await outbox.append(conn, event)
    deliveries = "/v1/webhooks/{webhook_id}/deliveries"
    for _ in range(600):
        page = await call("GET", deliveries + "?limit=1", expect=200, params=hook)
        if page["items"]:
            break
        await asyncio.sleep(0.1)
    [attempt] = page["items"]
    assert attempt["event_id"] == event["id"] and attempt["status_code"] == 204
    await call("GET", deliveries + "?limit=0", expect=400, params=hook)
    await call("GET", deliveries + "?after=x", expect=400, params=hook)
    await call("GET", deliveries, expect=404, params=nowhere)
    replay = "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"
    one = {**hook, "delivery_id": str(attempt["delivery_id"])}
    again = await call("POST", replay, expect=202, params=one)
    assert again["event_id"] == event["id"]
    await call("POST", replay, expect=404, params={**hook, "delivery_id": "0"})
    await call(
        "PATCH", "/v1/webhooks/{webhook_id}", expect=200, params=hook, json={"enabled": False}
    )
    await call("POST", replay, expect=409, params=one)
    await call("DELETE", "/v1/webhooks/{webhook_id}", expect=204, params=hook)
    await call("DELETE", "/v1/webhooks/{webhook_id}", expect=404, params=hook)


async def test_a_real_connection_matches_the_document(
    api_doc: Api, api, anonymous, oauth_server, worker, unique
):
    """The states the real worker writes (tokens, refresh, reports) match the schemas too."""
    call = api_doc
    name = unique("oasreal")
    await create_oauth_app(api, oauth_server, name)
    started = await call(
        "POST",
        "/v1/apps/{name}/connections",
        expect=201,
        params={"name": name},
        json={"connection_id": f"{name}-1"},
    )
    cid = started["connection_id"]
    location = await oauth_server.approve(started["authorize_url"])
    status, outcome = await follow_callback(anonymous, location)
    assert status == 200 and outcome["status"] == "succeeded", outcome
    one = {"connection_id": cid}
    shown = await call("GET", "/v1/connections/{connection_id}", expect=200, params=one)
    assert shown["status"] == "active" and shown["has_refresh_token"] is True
    await call("GET", "/v1/connections/{connection_id}/credentials", expect=200, params=one)
    refreshed = await call(
        "POST", "/v1/connections/{connection_id}/refresh", expect=200, params=one
    )
    assert refreshed["outcome"] == "refreshed"
    reported = await call(
        "POST",
        "/v1/connections/{connection_id}/report",
        expect=200,
        params=one,
        json={"status": 401, "www_authenticate": 'Bearer error="invalid_token"'},
    )
    assert reported["action"] == "refreshed"
    diagnosis = await call(
        "GET", "/v1/connections/{connection_id}/diagnosis", expect=200, params=one
    )
    assert diagnosis["summary"] == "ok", diagnosis
    await call("GET", "/v1/apps/{name}/diagnosis", expect=200, params={"name": name})
    await call("DELETE", "/v1/connections/{connection_id}", expect=202, params=one)
