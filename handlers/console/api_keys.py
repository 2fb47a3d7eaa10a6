"""The console's API keys: create one (its key is shown on the next page, once), list them, see
what one read, revoke one. Through the same use cases as `/v1/api-keys` (services/api_keys.py);
the console is signed in with an admin key, so it may."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from authbroker.roles import APP_LIMITED, Role
from authbroker.schemas import ApiKeyCreate
from handlers.console import forms
from handlers.console.render import FORM, PREFIX, action, page, render, see_other
from handlers.context import resources
from services import api_keys as service

routes = web.RouteTableDef()

KEYS = PREFIX + "/api-keys"
ROLES = {
    Role.ADMIN: "everything, keys included",
    Role.OPERATOR: "apps, connections, diagnosis, events; never a token or a password",
    Role.RUNTIME: "credentials, refresh, report, events; optionally limited to some apps",
}


def key_url(key_id: str) -> str:
    return f"{KEYS}/{quote(key_id, safe='')}"


async def _keys_page(
    request: web.Request,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    *,
    created: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    found = await service.list_all(resources(request).pool)
    return render(
        request,
        "api_keys.html",
        {
            "keys": [{**k.__dict__, "url": key_url(k.id)} for k in found],
            "roles": {str(role): text for role, text in ROLES.items()},
            "limited": sorted(APP_LIMITED),
            "form": form or {"role": str(Role.RUNTIME)},
            "errors": errors or {},
            "created": created,
        },
        status=status,
    )


@routes.get(KEYS)
@page
async def keys_list(request: web.Request) -> web.StreamResponse:
    return await _keys_page(request)


@routes.post(KEYS)
@action
async def create_key(request: web.Request) -> web.StreamResponse:
    form = request[FORM]
    shown = forms.raw(form)
    apps = str(form.get("apps", "")).split()
    data = {"name": str(form.get("name", "")), "role": str(form.get("role", ""))}
    if apps:
        data["apps"] = apps
    model, errors = forms.validate(ApiKeyCreate, data)
    if model is None:
        return await _keys_page(request, shown, errors, status=400)
    key, plaintext = await service.create(resources(request).pool, model, via="console")  # type: ignore[arg-type]
    # Shown in this answer only (never in a redirect's cookie): the page is not cached.
    return await _keys_page(request, created={"id": key.id, "name": key.name, "key": plaintext})


@routes.get(KEYS + "/{key_id}")
@page
async def show_key(request: web.Request) -> web.StreamResponse:
    found = await service.show(resources(request).pool, request.match_info["key_id"])
    return render(
        request,
        "api_key.html",
        {
            "key": found.key,
            "reads": found.reads,
            "revoke_url": key_url(found.key.id) + "/revoke",
        },
    )


@routes.post(KEYS + "/{key_id}/revoke")
@action
async def revoke_key(request: web.Request) -> web.StreamResponse:
    key = await service.revoke(resources(request).pool, request.match_info["key_id"], via="console")
    return see_other(request, KEYS, f"API key {key.name} ({key.id}) revoked.")
