"""The console's pages and actions: applications, connections, Basic credentials, sign-in.

Every change goes through the same use cases as the API (`services/`) and is validated with the
API's models; a use case's refusal (`services.errors.DomainError`) is shown on the page.
Secrets are write-only: a page says whether one is set, never what it is.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from aiohttp import web

from authbroker import diagnosis, presets
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.roles import Role
from authbroker.schemas import (
    AppCreate,
    AppUpdate,
    BasicCredentialIn,
    ConnectionStart,
    is_valid_name,
)
from handlers import diagnosis as diagnosis_facts
from handlers import models
from handlers.apps import load_app
from handlers.connections import load_connection
from handlers.console import forms, live
from handlers.console import session as sessions
from handlers.console.render import (
    FORM,
    PREFIX,
    SESSION,
    action,
    error_page,
    page,
    redirect,
    refused_form,
    render,
    see_other,
)
from handlers.context import caller, resources
from handlers.throttle import SIGN_IN_FAILURES, client_address
from services import apps as apps_service
from services import authorizations as authorizations_service
from services import connections as connections_service
from services import revocation, service_connections
from services.errors import DomainError
from storage import api_keys, apps, authorizations, basic, connections
from storage.apps import App
from storage.connections import Connection
from storage.resources import Resources
from storage.sealing import KeyRing, aad

routes = web.RouteTableDef()
log = get_logger("authbroker.console")

CONNECTIONS_SHOWN = 200
SEVERITY = {"failing": 2, "warning": 1, "ok": 0}
STATUS_ORDER = {"failed": 0, "expired": 1, "pending": 2, "active": 3, "revoking": 4, "revoked": 5}


def app_url(name: str) -> str:
    return f"{PREFIX}/apps/{quote(name, safe='')}"


def _host(url: str | None) -> str:
    try:
        return urlsplit(url or "").hostname or ""
    except ValueError:
        return ""


def _event_kind(request: web.Request) -> str | None:
    return live.clean_filter(request.query.get("events"))


def _stream_url(events: dict[str, Any]) -> str:
    query = {k: v for k, v in (("type", events["kind"]), ("app", events["app"])) if v}
    if events["since"]:
        query["since"] = events["since"]
    return f"{PREFIX}/events" + (f"?{urlencode(query)}" if query else "")


async def _strip(request: web.Request, app: str | None = None) -> dict[str, Any]:
    events = await live.recent(request, kind=_event_kind(request), app=app)
    events["stream_url"] = _stream_url(events)
    return events


# ------------------------------------------------------------------------------- sign-in


def _next(value: str | None) -> str:
    """Only a console path may be where sign-in returns to (no open redirect)."""
    if (
        value
        and value.startswith(PREFIX)
        and not value.startswith("//")
        and "\\" not in value
        and (len(value) == len(PREFIX) or value[len(PREFIX)] in "/?")
    ):
        return value
    return PREFIX


def _login_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    secret = request.app[sessions.SECRET]
    nonce = sessions.login_nonce(request)
    cookie = None
    if nonce is None:
        cookie, nonce = sessions.login_form_cookie(secret)
    response = render(
        request,
        "login.html",
        {
            "error": error,
            "login_csrf": sessions.token(secret, "login", nonce),
            "next": _next(request.query.get("next")),
            "signed_out": request.query.get("signed_out") == "1",
        },
        status=status,
    )
    if cookie is not None:
        sessions.set_cookie(
            request, response, sessions.LOGIN_COOKIE, cookie, sessions.LOGIN_FORM_SECONDS
        )
    return response


@routes.get(PREFIX + "/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    if await sessions.load_session(request) is not None:
        return redirect(_next(request.query.get("next")))
    return _login_page(request)


@routes.post(PREFIX + "/login")
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nonce = sessions.login_nonce(request)
    if (
        not sessions.same_origin(request)
        or nonce is None
        or not sessions.check_token(request.app[sessions.SECRET], "login", nonce, form.get("csrf"))
    ):
        return error_page(
            request,
            403,
            "Refused",
            "This sign-in form is stale or came from another site. Open the sign-in page again.",
        )
    flawed = forms.form_flaw(form)
    if flawed:
        return refused_form(request, flawed)
    key = str(form.get("key", "")).strip()
    limiter = request.app[SIGN_IN_FAILURES]
    address = client_address(request)
    wait = limiter.refused(address, key)
    if wait is not None:
        log.info("console_sign_in_throttled")
        response = _login_page(
            request,
            error=f"Too many failed sign-ins from this address. Try again in {wait} seconds.",
            status=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    found = None
    if key and len(key) <= 200:
        found = await api_keys.verify(resources(request).pool, key)
    if found is None or found.role != Role.ADMIN:
        limiter.failed(address)
        log.info("console_sign_in_refused", key_id=found.id if found else None)
        return _login_page(
            request, error="That key is not a valid admin API key (or it was revoked).", status=401
        )
    limiter.trust(key)
    await api_keys.touch(resources(request).pool, found.id)
    value, _ = sessions.new_session_cookie(request.app[sessions.SECRET], found.id)
    response = redirect(_next(str(form.get("next", ""))))
    sessions.set_cookie(request, response, sessions.SESSION_COOKIE, value, sessions.SESSION_SECONDS)
    sessions.clear_cookie(request, response, sessions.LOGIN_COOKIE)
    log.info("console_signed_in", key_id=found.id)
    return response


@routes.post(PREFIX + "/logout")
@action
async def logout(request: web.Request) -> web.StreamResponse:
    found: sessions.Session = request[SESSION]
    await sessions.end_session(request, found)
    response = redirect(f"{PREFIX}/login?signed_out=1")
    sessions.clear_cookie(request, response, sessions.SESSION_COOKIE)
    log.info("console_signed_out", key_id=found.key_id)
    return response


# ---------------------------------------------------------------------------- applications


def _app_state(app: App) -> tuple[str, str]:
    if app.deleting:
        return "deleting", "muted"
    if app.awaiting_secret:
        return "awaiting secret", "warn"
    if app.paused_at is not None:
        return f"paused: {app.paused_problem or 'invalid_settings'}", "bad"
    return "active", "ok"


@routes.get(PREFIX)
@page
async def apps_list(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    found = await apps.list_all(res.pool)
    counts = await connections.counts_by_app(res.pool)
    items = []
    for app in found:
        state, tone = _app_state(app)
        items.append(
            {
                "name": app.name,
                "url": app_url(app.name),
                "provider": _host(app.authorization_url),
                "preset": app.preset,
                "state": state,
                "tone": tone,
                "secret_set": app.client_secret is not None,
                "counts": sorted(
                    counts.get(app.id, {}).items(), key=lambda kv: STATUS_ORDER.get(kv[0], 9)
                ),
            }
        )
    return render(request, "apps.html", {"apps": items, "events": await _strip(request)})


@routes.get(PREFIX + "/")
async def console_slash(request: web.Request) -> web.StreamResponse:
    return redirect(PREFIX, 301)


def _preset_choices(presets: Any) -> list[dict[str, str]]:
    choices = []
    try:
        for name in presets.names():
            preset = presets.get(name)
            choices.append(
                {
                    "name": name,
                    "title": preset.title,
                    "host": _host(preset.values.get("authorization_url")),
                }
            )
    except Exception as exc:  # a broken presets file must not take the console down
        log.warning("console_presets_unavailable", error=type(exc).__name__)
        return []
    return choices


def _preset(name: str | None) -> Any:
    if not name:
        return None
    try:
        return presets.get(name)
    except KeyError:
        return None


def _placeholders(preset: Any) -> list[dict[str, Any]]:
    if preset is None:
        return []
    defaults = getattr(preset, "placeholder_defaults", {}) or {}
    later = getattr(preset, "per_connection", ()) or ()
    return [
        {"name": p, "default": defaults.get(p, ""), "per_connection": p in later}
        for p in preset.placeholders
    ]


def _new_app_page(
    request: web.Request,
    preset: Any,
    form: dict[str, str],
    errors: dict[str, str],
    *,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "app_form.html",
        {
            "mode": "create",
            "title": f"New application from the {preset.title} preset"
            if preset
            else "New application",
            "preset": preset,
            "placeholders": _placeholders(preset),
            "form": form,
            "errors": errors,
            "secret_set": False,
            "action_url": f"{PREFIX}/apps/new",
            "separators": forms.SEPARATORS,
            "client_auths": forms.CLIENT_AUTH,
            "redirect_url": resources(request).settings.redirect_url,
        },
        status=status,
    )


@routes.get(PREFIX + "/apps/new")
@page
async def new_app(request: web.Request) -> web.StreamResponse:
    if "preset" not in request.query:
        return render(
            request,
            "app_new.html",
            {"presets": _preset_choices(presets)},
        )
    preset = _preset(request.query.get("preset"))
    if request.query.get("preset") and preset is None:
        return error_page(request, 404, "No such preset", "Pick a preset from the list.")
    form = forms.app_form_values(preset.values if preset else {})
    for item in _placeholders(preset):
        form[f"ph_{item['name']}"] = item["default"]
    return _new_app_page(request, preset, form, {})


IDENTITY = ("name", "client_id", "client_secret")


def _preset_definition(
    preset: Any, values: dict[str, Any], placeholders: dict[str, str]
) -> dict[str, Any]:
    """The preset's settings with what the operator changed on the form laid over them: a
    field left as the preset showed it keeps the preset's meaning (placeholders filled), and
    one the preset leaves out, left at the form's default, was not given."""
    shown = preset.values
    given = {
        k: v
        for k, v in values.items()
        if k in IDENTITY or (shown[k] != v if k in shown else forms.DEFAULTS.get(k) != v)
    }
    definition = presets.apply(preset.name, given, placeholders)
    for key in forms.PARAM_FIELDS:  # the form showed the whole dict: what it holds is meant
        if key in given:
            definition[key] = given[key]
    return definition


@routes.post(PREFIX + "/apps/new")
@action
async def create_app(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    form = request[FORM]
    shown = forms.raw(form)
    values, errors = forms.parse_app_form(form)
    preset = _preset(str(form.get("preset", "")) or None)
    if form.get("preset") and preset is None:
        return error_page(request, 400, "No such preset", "Pick a preset from the list.")
    definition: dict[str, Any] = values
    if preset is not None and not errors:
        placeholders = {
            p: str(form.get(f"ph_{p}", "")).strip()
            for p in preset.placeholders
            if str(form.get(f"ph_{p}", "")).strip()
        }
        try:
            definition = _preset_definition(preset, values, placeholders)
        except ValueError as exc:
            errors["placeholders"] = str(exc)
    if errors:
        return _new_app_page(request, preset, shown, errors, status=400)
    preset_name = definition.pop("preset", None)
    data, separator = forms.create_payload(definition)
    if preset_name and forms.app_create_model_has("preset"):
        data["preset"] = preset_name
    model, errors = forms.validate(AppCreate, data, **res.settings.validation_context)
    if model is None:
        return _new_app_page(request, preset, shown, errors, status=400)
    stored = model.model_dump()
    if separator is not None:
        stored["scope_separator"] = separator
    if preset_name:
        stored["preset"] = preset_name
    try:
        app = await apps_service.create(res, stored, via="console")
    except DomainError as exc:
        if exc.code == "app_exists":
            errors = {"name": "An app with this name already exists."}
        else:
            errors = _by_field(exc.details.get("fields", []))
        return _new_app_page(request, preset, shown, errors, status=exc.http_status)
    return see_other(
        request,
        app_url(app.name),
        f"Application {app.name} created. Register its redirect URL at the provider.",
    )


def _edit_page(
    request: web.Request,
    app: App,
    form: dict[str, str],
    errors: dict[str, str],
    *,
    status: int = 200,
) -> web.Response:
    separators = dict(forms.SEPARATORS)
    separators.setdefault(app.scope_separator, repr(app.scope_separator))
    return render(
        request,
        "app_form.html",
        {
            "mode": "edit",
            "title": f"Edit {app.name}",
            "app": models.App.of(app, resources(request).settings.redirect_url).model_dump(),
            "app_url": app_url(app.name),
            "preset": None,
            "placeholders": [],
            "form": form,
            "errors": errors,
            "secret_set": app.client_secret is not None,
            "action_url": f"{app_url(app.name)}/edit",
            "separators": separators,
            "client_auths": forms.CLIENT_AUTH,
            "redirect_url": resources(request).settings.redirect_url,
        },
        status=status,
    )


@routes.get(PREFIX + "/apps/{name}/edit")
@page
async def edit_app(request: web.Request) -> web.StreamResponse:
    app = await load_app(request)
    return _edit_page(request, app, forms.app_form_values(models.App.of(app, "").model_dump()), {})


@routes.post(PREFIX + "/apps/{name}/edit")
@action
async def update_app(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    app = await load_app(request)
    form = request[FORM]
    shown = forms.raw(form)
    shown.pop("name", None)
    values, errors = forms.parse_app_form(form)
    values.pop("name", None)
    if errors:
        return _edit_page(request, app, shown, errors, status=400)
    current = models.App.of(app, "").model_dump()
    changes = {k: v for k, v in values.items() if k == "client_secret" or current.get(k) != v}
    separator = changes.pop("scope_separator", None)
    if separator is not None and separator not in forms.SEPARATORS:
        return _edit_page(
            request, app, shown, {"scope_separator": "Pick a separator from the list."}, status=400
        )
    model, errors = forms.validate(AppUpdate, changes, **res.settings.validation_context)
    if model is None:
        return _edit_page(request, app, shown, errors, status=400)
    update = model.changes()  # type: ignore[attr-defined]
    if separator is not None:
        update["scope_separator"] = separator  # a choice from a fixed list; " " cannot pass
    if not update and app.paused_at is None:
        return see_other(request, app_url(app.name), "Nothing changed.", "info")
    try:
        await apps_service.update(
            res,
            app,
            update,
            caller=caller(request),
            confirmed=form.get("confirm_secret_destination") == "on",
            via="console",
        )
    except DomainError as exc:
        errors = _by_field(exc.details.get("fields", []))
        if exc.code == "secret_destination":
            errors["confirm_secret_destination"] = exc.message
        return _edit_page(request, app, shown, errors, status=exc.http_status)
    changed = ", ".join(sorted(update)) or "nothing"
    resumed = " Refreshes resume." if app.paused_at is not None else ""
    return see_other(request, app_url(app.name), f"Saved ({changed}).{resumed}")


def _refresh_outcome(c: Connection) -> dict[str, str]:
    error = c.last_error or {}
    reason = " ".join(str(error[k]) for k in ("error", "description") if error.get(k)) or (
        f"HTTP {error['status']}" if error.get("status") else ""
    )
    if c.status == "active" and c.failed_attempts:
        return {
            "text": f"retrying after {c.failed_attempts} failed attempt(s)"
            + (f": {reason}" if reason else ""),
            "tone": "warn",
        }
    if c.status in ("failed", "expired") and error:
        return {"text": f"failed at {error.get('stage', 'refresh')}: {reason}", "tone": "bad"}
    if c.last_refresh_at is not None:
        return {"text": "succeeded", "tone": "ok"}
    return {"text": "not refreshed yet", "tone": "muted"}


def connection_item(c: Connection, ring: KeyRing) -> dict[str, Any]:
    view = models.Connection.of(c, ring).model_dump()
    requested = c.requested_scopes or []
    granted = c.granted_scopes
    view.update(
        {
            "url_id": quote(c.id, safe=""),
            "missing_scopes": [s for s in requested if granted is not None and s not in granted],
            "extra_scopes": [s for s in (granted or []) if s not in requested],
            "refresh": _refresh_outcome(c),
            "can_refresh": c.status == "active" and c.renewable,
            "can_delete": c.status not in ("revoked", "revoking"),
        }
    )
    return view


def _by_field(errors: list[dict[str, str]]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in errors}


async def app_checks(res: Resources, app: App) -> dict[str, Any] | None:
    """The app's diagnosis for display; None if it could not be made (the page still shows)."""
    try:
        checks = await diagnosis_facts.app_checks(res, app)
    except Exception as exc:
        log.warning("console_diagnosis_failed", app=app.name, error=type(exc).__name__)
        return None
    return _checks_view(checks)


def _checks_view(checks: list[diagnosis.Check]) -> dict[str, Any]:
    items = [c.as_dict() for c in checks]
    items.sort(key=lambda item: -SEVERITY.get(item["status"], 0))  # what is wrong comes first
    for item in items:
        item["evidence_text"] = json.dumps(item.get("evidence") or {}, indent=2, default=str)
    counts = {s: sum(1 for i in items if i["status"] == s) for s in ("failing", "warning", "ok")}
    return {"checks": items, "summary": diagnosis.worst(checks), "counts": counts}


async def _app_page(
    request: web.Request,
    app: App,
    *,
    connect_form: dict[str, str] | None = None,
    connect_errors: dict[str, str] | None = None,
    service_form: dict[str, str] | None = None,
    service_errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    res = resources(request)
    found = await connections.page(
        res.pool, apps=[app.name], status=None, after=None, limit=CONNECTIONS_SHOWN
    )
    found.sort(key=lambda c: (STATUS_ORDER.get(c.status, 9), c.id))
    state, tone = _app_state(app)
    return render(
        request,
        "app.html",
        {
            "app": models.App.of(app, res.settings.redirect_url).model_dump(),
            "app_url": app_url(app.name),
            "state": state,
            "tone": tone,
            "provider": _host(app.authorization_url),
            "connections": [connection_item(c, resources(request).ring) for c in found],
            "truncated": len(found) >= CONNECTIONS_SHOWN,
            "diagnosis": await app_checks(res, app),
            "connect_form": connect_form or {},
            "connect_errors": connect_errors or {},
            "service_form": service_form or {},
            "service_errors": service_errors or {},
            "events": await _strip(request, app.name),
        },
        status=status,
    )


@routes.get(PREFIX + "/apps/{name}")
@page
async def show_app(request: web.Request) -> web.StreamResponse:
    return await _app_page(request, await load_app(request))


@routes.get(PREFIX + "/apps/{name}/diagnosis")
@page
async def app_diagnosis(request: web.Request) -> web.StreamResponse:
    app = await load_app(request)
    return render(
        request,
        "diagnosis.html",
        {
            "title": f"Diagnosis of {app.name}",
            "subject": "application",
            "app_url": app_url(app.name),
            "app_name": app.name,
            "diagnosis": await app_checks(resources(request), app),
        },
    )


@routes.get(PREFIX + "/apps/{name}/delete")
@page
async def confirm_delete_app(request: web.Request) -> web.StreamResponse:
    app = await load_app(request)
    live_count = await connections.count_live(resources(request).pool, app.id)
    return render(
        request,
        "confirm.html",
        {
            "title": f"Delete application {app.name}?",
            "lines": [
                f"{live_count} live connection(s) of this application will be revoked at the "
                "provider and deleted with it."
                if live_count
                else "It has no live connection.",
                "Integrations that use it stop getting credentials. This cannot be undone.",
            ],
            "action_url": f"{app_url(app.name)}/delete",
            "button": "Delete the application",
            "cancel_url": app_url(app.name),
        },
    )


@routes.post(PREFIX + "/apps/{name}/delete")
@action
async def delete_app(request: web.Request) -> web.StreamResponse:
    app = await load_app(request)
    pending = await apps_service.delete(resources(request), app, cascade=True)
    message = (
        f"Application {app.name} is being deleted: {pending} connection(s) are being revoked."
        if pending
        else f"Application {app.name} deleted."
    )
    return see_other(request, PREFIX, message)


# ------------------------------------------------------------------------------- connecting


def _authorize_key(res: Resources, authorization_id: str) -> str:
    return f"{res.settings.redis_prefix}:console:authorize:{authorization_id}"


async def _keep_authorize_url(
    res: Resources, authorization_id: str, url: str, key_id: str, expires_at: datetime
) -> bool:
    """Keep the authorize URL (it holds the state) sealed in Redis while it is valid, so the
    waiting page can offer it on every reload; only the signed-in key may read it back."""
    sealed = res.ring.seal(url, aad=aad("console_authorize", authorization_id, "url"))
    ttl = max(1, int((expires_at - datetime.now(UTC)).total_seconds()))
    value = json.dumps({"u": base64.b64encode(sealed).decode(), "k": key_id})
    try:
        await res.redis.set(_authorize_key(res, authorization_id), value.encode(), ex=ttl)
    except Exception as exc:
        log.warning("console_authorize_url_not_kept", error=type(exc).__name__)
        return False
    return True


async def _authorize_url(res: Resources, authorization_id: str, key_id: str) -> str | None:
    try:
        stored = await res.redis.get(_authorize_key(res, authorization_id))
    except Exception:
        return None
    if not stored:
        return None
    try:
        value = json.loads(stored)
        if value.get("k") != key_id:
            return None
        sealed = base64.b64decode(value["u"])
        return res.ring.open(sealed, aad=aad("console_authorize", authorization_id, "url"))
    except Exception:
        return None


@routes.post(PREFIX + "/apps/{name}/connect")
@action
async def connect(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    app = await load_app(request)
    shown, data = forms.start_body(request[FORM], app.connection_settings)
    model, errors = forms.validate(ConnectionStart, data)
    if model is None:
        return await _app_page(request, app, connect_form=shown, connect_errors=errors, status=400)
    try:
        started = await authorizations_service.start(
            res,
            app,
            connection_id=model.connection_id,
            scopes=model.scopes,
            metadata=None,
            settings=model.settings,  # type: ignore[attr-defined]
        )
    except DomainError as exc:
        return await _app_page(
            request,
            app,
            connect_form=shown,
            connect_errors=forms.start_errors(exc),
            status=exc.http_status,
        )
    authorization_id = str(started.authorization_id)
    kept = await _keep_authorize_url(
        res, authorization_id, started.authorize_url, request[SESSION].key_id, started.expires_at
    )
    if not kept:  # no Redis: show the link once, on this answer
        return await _connect_page(request, started.authorization_id, started.authorize_url)
    return redirect(f"{PREFIX}/connect/{authorization_id}")


@routes.post(PREFIX + "/apps/{name}/service-connection")
@action
async def service_connection(request: web.Request) -> web.StreamResponse:
    """A service connection (client credentials): requested now, followed on the app's page."""
    res = resources(request)
    app = await load_app(request)
    shown, data = forms.start_body(
        request[FORM],
        app.connection_settings,
        texts=("connection_id", "audience"),
        lists=("scopes", "resource"),
    )
    model, errors = forms.validate(ConnectionStart, {"grant": "client_credentials", **data})
    if model is None:
        return await _app_page(request, app, service_form=shown, service_errors=errors, status=400)
    try:
        started = await service_connections.start(
            res,
            app,
            connection_id=model.connection_id,
            scopes=model.scopes,
            token_params=model.request_params(),
            metadata=None,
            settings=model.settings,
        )
    except DomainError as exc:
        return await _app_page(
            request,
            app,
            service_form=shown,
            service_errors=forms.start_errors(exc),
            status=exc.http_status,
        )
    return see_other(
        request,
        app_url(app.name) + f"#conn-{quote(started.connection_id, safe='')}",
        f"Requesting a token for {started.connection_id} (client credentials); its status "
        "below says when it arrives.",
    )


async def _connect_page(
    request: web.Request, authorization_id: uuid.UUID, authorize_url: str | None = None
) -> web.StreamResponse:
    res = resources(request)
    found = await authorizations.get(res.pool, authorization_id)
    if found is None:
        return error_page(request, 404, "Not found", "There is no such authorization.")
    back = app_url(found.app) + f"#conn-{quote(found.connection_id, safe='')}"
    outcome = models.CallbackOutcome.of(found)
    if outcome.status == "succeeded":
        connection = await connections.get(res.pool, found.connection_id)
        problem = connection.problem if connection else None
        if problem:
            remedy = Problem(problem).remedy if problem in Problem.__members__.values() else ""
            return see_other(
                request,
                back,
                f"Connected {found.connection_id}, with a problem: {problem}. {remedy}",
                "warn",
            )
        return see_other(request, back, f"Connected: {found.connection_id} is active.")
    if outcome.status == "failed":
        return see_other(
            request,
            back,
            f"The connection {found.connection_id} did not succeed: {outcome.problem}. "
            f"{outcome.detail or ''}",
            "bad",
        )
    expired = found.expires_at <= datetime.now(UTC)
    if authorize_url is None and not expired:
        authorize_url = await _authorize_url(res, str(authorization_id), request[SESSION].key_id)
    app = await apps.get_by_id(res.pool, found.app_id)
    return render(
        request,
        "connect.html",
        {
            "authorization": found,
            "authorize_url": authorize_url,
            "provider": _host(app.for_connection(found.settings).authorization_url if app else None)
            or "the provider",
            "expired": expired,
            "back": back,
            "self_url": f"{PREFIX}/connect/{authorization_id}",
            "refresh": not expired,
        },
    )


@routes.get(PREFIX + "/connect/{authorization_id}")
@page
async def connect_status(request: web.Request) -> web.StreamResponse:
    try:
        authorization_id = uuid.UUID(request.match_info["authorization_id"])
    except ValueError:
        return error_page(request, 404, "Not found", "There is no such authorization.")
    return await _connect_page(request, authorization_id)


# ------------------------------------------------------------------------------ connections


@routes.post(PREFIX + "/connections/{connection_id}/refresh")
@action
async def refresh_now(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    found = await load_connection(request)
    back = app_url(found.app) + f"#conn-{quote(found.id, safe='')}"
    try:
        done = await connections_service.refresh_now(res, found)
    except DomainError as exc:
        if exc.code == "refresh_pending":
            return see_other(
                request,
                back,
                f"The refresh of {found.id} did not finish within 10 seconds; it goes on in "
                "the background.",
                "warn",
            )
        detail = exc.details.get("detail") or ""
        return see_other(request, back, f"{found.id}: {exc.message}. {detail}", "bad")
    outcome, after = done.outcome, done.connection
    if outcome == "refreshed":
        return see_other(request, back, f"Refreshed {found.id}.")
    if outcome == "failed":
        return see_other(
            request,
            back,
            f"The refresh of {found.id} failed: {after.problem or after.status}. "
            f"{after.problem_detail or ''}",
            "bad",
        )
    return see_other(
        request, back, f"The refresh of {found.id} failed for now; it will be retried.", "warn"
    )


@routes.get(PREFIX + "/connections/{connection_id}/diagnosis")
@page
async def connection_diagnosis(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    found = await load_connection(request)
    view = None
    try:
        view = _checks_view(await diagnosis_facts.connection_checks(res, found))
    except Exception as exc:
        log.warning("console_diagnosis_failed", connection_id=found.id, error=type(exc).__name__)
    return render(
        request,
        "diagnosis.html",
        {
            "title": f"Diagnosis of connection {found.id}",
            "subject": "connection",
            "app_url": app_url(found.app),
            "app_name": found.app,
            "connection": connection_item(found, resources(request).ring),
            "diagnosis": view,
        },
    )


@routes.get(PREFIX + "/connections/{connection_id}/delete")
@page
async def confirm_delete_connection(request: web.Request) -> web.StreamResponse:
    found = await load_connection(request)
    return render(
        request,
        "confirm.html",
        {
            "title": f"Delete connection {found.id}?",
            "lines": [
                f"Its tokens are revoked at the provider of {found.app} (when the app has a "
                "revoke URL) and wiped here.",
                "Integrations that use this connection stop getting credentials. To use the "
                "account again, connect it again.",
            ],
            "action_url": f"{PREFIX}/connections/{quote(found.id, safe='')}/delete",
            "button": "Delete and revoke",
            "cancel_url": app_url(found.app) + f"#conn-{quote(found.id, safe='')}",
        },
    )


@routes.post(PREFIX + "/connections/{connection_id}/delete")
@action
async def delete_connection(request: web.Request) -> web.StreamResponse:
    found = await load_connection(request)
    started = await revocation.request_delete(resources(request), found)
    message = (
        f"Connection {found.id} is being revoked and deleted."
        if started
        else f"Connection {found.id} was already revoked."
    )
    return see_other(request, app_url(found.app), message)


# -------------------------------------------------------------------------- Basic credentials


async def _basic_page(
    request: web.Request,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    found = await basic.list_all(resources(request).pool)
    return render(
        request,
        "basic.html",
        {
            "credentials": [
                {
                    "name": c.name,
                    "login": c.login,
                    "awaiting_password": c.password is None,
                    "updated_at": c.updated_at,
                    "url_name": quote(c.name, safe=""),
                }
                for c in found
            ],
            "form": form or {},
            "errors": errors or {},
            "events": None,
        },
        status=status,
    )


@routes.get(PREFIX + "/basic")
@page
async def basic_list(request: web.Request) -> web.StreamResponse:
    form: dict[str, str] = {}
    name = request.query.get("name", "")
    if name and is_valid_name(name):
        existing = await basic.get(resources(request).pool, name)
        if existing is not None:
            form = {"name": existing.name, "login": existing.login}
    return await _basic_page(request, form)


@routes.post(PREFIX + "/basic")
@action
async def basic_set(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    form = request[FORM]
    shown = forms.raw(form)
    name = str(form.get("name", "")).strip()
    errors: dict[str, str] = {}
    if not is_valid_name(name):
        errors["name"] = forms.NAME_HINT
    model, model_errors = forms.validate(
        BasicCredentialIn,
        {"login": str(form.get("login", "")), "password": str(form.get("password", ""))},
    )
    errors.update(model_errors)
    if errors or model is None:
        return await _basic_page(request, shown, errors, status=400)
    _, created = await basic.put(
        res.pool,
        res.ring,
        name,
        model.login,  # type: ignore[attr-defined]
        model.password,  # type: ignore[attr-defined]
    )
    log.info("basic_credential_set", name=name, created=created, via="console")
    return see_other(
        request, f"{PREFIX}/basic", f"Basic credential {name} {'created' if created else 'saved'}."
    )


@routes.get(PREFIX + "/basic/{name}/delete")
@page
async def confirm_delete_basic(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    found = await basic.get(resources(request).pool, name) if is_valid_name(name) else None
    if found is None:
        return error_page(request, 404, "Not found", f"There is no Basic credential {name!r}.")
    return render(
        request,
        "confirm.html",
        {
            "title": f"Delete Basic credential {name}?",
            "lines": [
                "Integrations that ask for it get a 404 from then on. This cannot be undone."
            ],
            "action_url": f"{PREFIX}/basic/{quote(name, safe='')}/delete",
            "button": "Delete the credential",
            "cancel_url": f"{PREFIX}/basic",
        },
    )


@routes.post(PREFIX + "/basic/{name}/delete")
@action
async def delete_basic(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    deleted = is_valid_name(name) and await basic.delete(resources(request).pool, name)
    if deleted:
        log.info("basic_credential_deleted", name=name, via="console")
    return see_other(
        request,
        f"{PREFIX}/basic",
        f"Basic credential {name} deleted." if deleted else f"There was no credential {name}.",
        "ok" if deleted else "info",
    )


# ------------------------------------------------------------------------------------ events


@routes.get(PREFIX + "/events")
async def events(request: web.Request) -> web.StreamResponse:
    return await live.stream(request)
