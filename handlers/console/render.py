"""Templates, security headers, and the two decorators every console handler wears:
`page` (a signed-in GET) and `action` (a signed-in POST with a valid CSRF token)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import jinja2
from aiohttp import web

from authbroker.logs import get_logger
from authbroker.oauth import TokenRequestFormat
from handlers.console import session as sessions
from handlers.console.forms import form_flaw
from handlers.context import CALLER
from handlers.responses import ApiError
from services.errors import DomainError

log = get_logger("authbroker.console")
HERE = Path(__file__).resolve().parent
PREFIX = "/console"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ENV = web.AppKey("console_templates", jinja2.Environment)
# Typed request keys where this aiohttp has them (3.12+), plain strings before.
_RequestKey: Any = getattr(web, "RequestKey", None)
SESSION: Any = (
    _RequestKey("console_session", sessions.Session) if _RequestKey else "console_session"
)
FORM: Any = _RequestKey("console_form", object) if _RequestKey else "console_form"

CSP = (
    "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # `same-origin`, not `no-referrer`: with no-referrer Chromium sends `Origin: null` on form
    # posts, which would blind the Origin check; same-origin still sends nothing to any other
    # site (the provider never learns a console URL).
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _when(value: Any) -> str:
    """A timestamp for people: `2025-01-31 14:05:09 UTC`."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value or "")


def _relative(value: Any) -> str:
    """`in 59 min`, `3 h ago`: how far a moment is from now."""
    if not isinstance(value, datetime):
        return ""
    seconds = (value - datetime.now(UTC)).total_seconds()
    ahead = seconds >= 0
    seconds = abs(seconds)
    if seconds < 90:
        amount = f"{int(seconds)} s"
    elif seconds < 90 * 60:
        amount = f"{round(seconds / 60)} min"
    elif seconds < 36 * 3600:
        amount = f"{round(seconds / 3600)} h"
    else:
        amount = f"{round(seconds / 86400)} days"
    return f"in {amount}" if ahead else f"{amount} ago"


def create_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["relative"] = _relative
    env.filters["urlpart"] = lambda value: quote(str(value), safe="")
    # The choices of a setting no view passes (the form shows every setting of AppCreate).
    env.globals["token_request_formats"] = get_args(TokenRequestFormat)
    return env


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    session: sessions.Session | None = request.get(SESSION)
    flash = sessions.take_flash(request) if session is not None else None
    values = {
        "session": session,
        "csrf": session.csrf if session else "",
        "flash": flash,
        "path": request.path,
        "prefix": PREFIX,
        "events": None,
        **(context or {}),
    }
    html = request.app[ENV].get_template(template).render(values)
    response = web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=headers
    )
    if flash is not None:
        sessions.clear_cookie(request, response, sessions.FLASH_COOKIE)
    return response


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect returned, not raised: the web app's error middleware turns raised
    HTTPExceptions outside /v1 into JSON without their Location header."""
    return web.Response(status=status, headers={"Location": location})


def see_other(
    request: web.Request, location: str, message: str | None = None, tone: str = "ok"
) -> web.Response:
    """Post/redirect/get, with an optional message for the page it lands on."""
    response = redirect(location)
    if message:
        sessions.flash(request, response, message, tone)
    return response


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def refused_form(request: web.Request, why: str) -> web.Response:
    """A posted form holding what storage could not keep (`forms.form_flaw`)."""
    return error_page(request, 400, "Refused", f"{why} Nothing changed.")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every console answer, pages, redirects and files alike."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _login_location(request: web.Request) -> str:
    target = request.path_qs if request.method == "GET" else PREFIX
    return f"{PREFIX}/login?next={quote(target, safe='')}"


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        # The API's refusals (409 app being deleted, …) as a console page, not JSON.
        message = str(exc.body.get("message") or exc.body.get("error") or "refused")
        return error_page(request, exc.status, "That did not work", message)
    except DomainError as exc:
        return error_page(request, exc.http_status, "That did not work", exc.message)
    except web.HTTPNotFound:
        return error_page(request, 404, "Not found", "There is nothing at this address.")
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("console_request_failed", method=request.method, path=request.path)
        return error_page(
            request,
            500,
            "Something went wrong",
            "The console could not do this; the details are in the server's log.",
        )


def page(handler: Handler) -> Handler:
    """A signed-in page: without a valid session, the sign-in page (then back here)."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        found = await sessions.load_session(request)
        if found is None:
            return redirect(_login_location(request))
        request[SESSION] = found
        request[CALLER] = found.caller
        return await _guarded(request, handler)

    return wrapper


def action(handler: Handler) -> Handler:
    """A signed-in POST: refused (403) without a valid session, from another origin, or without
    the session's CSRF token. The parsed form is in `request[FORM]`."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        found = await sessions.load_session(request)
        if found is None:
            return error_page(
                request,
                403,
                "Please sign in again",
                "Your console session has ended (signed out, expired, or its key was revoked). "
                "Nothing was changed.",
            )
        request[SESSION] = found
        if not sessions.same_origin(request):
            return error_page(
                request, 403, "Refused", "This form was sent from another site. Nothing changed."
            )
        form = await request.post()
        if not sessions.check_token(
            request.app[sessions.SECRET], "csrf", found.nonce, form.get("csrf")
        ):
            return error_page(
                request,
                403,
                "Refused",
                "This form is missing its security token or the token is stale. Reload the "
                "page and try again. Nothing changed.",
            )
        flawed = form_flaw(form)
        if flawed:
            return refused_form(request, flawed)
        request[FORM] = form
        request[CALLER] = found.caller
        return await _guarded(request, handler)

    return wrapper
