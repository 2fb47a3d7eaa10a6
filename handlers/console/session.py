"""Console sessions: a signed cookie naming the admin API key that signed in, CSRF tokens
derived from it, and one-shot flash messages. Only admin keys sign in: the console can do
everything.

Nothing secret is in the cookie: the key id (not the key), a random nonce and the expiry, signed
with HMAC-SHA256 under a secret derived (HKDF) from the first key of the encryption key ring, so
every web process agrees on it and rotating the ring signs everyone out. Each request checks the
signature and the expiry, that the key is still not revoked (Postgres) and that the session was
not signed out (a Redis key that lives until the session would have expired).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authbroker.logs import get_logger
from authbroker.roles import Role
from handlers.context import resources
from services.access import Caller
from storage import api_keys
from storage.resources import Resources

log = get_logger("authbroker.console")

SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
FLASH_SECONDS = 120
COOKIE_PATH = "/console"

SECRET = web.AppKey("console_secret", bytes)


def derive_secret(res: Resources) -> bytes:
    """The signing secret: HKDF-SHA256 over the ring's sealing key, for this purpose only."""
    _, key = res.ring.keys[0]
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"authbroker console",
        info=b"console session signing v1",
    ).derive(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: str, body: str) -> bytes:
    return hmac.new(secret, f"{purpose}.{body}".encode(), hashlib.sha256).digest()


def sign(secret: bytes, purpose: str, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_b64(_mac(secret, purpose, body))}"


def unsign(secret: bytes, purpose: str, value: str | None) -> dict[str, Any] | None:
    """The payload of a value signed for `purpose` and not expired, else None."""
    if not value or len(value) > 4096 or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    try:
        given = _unb64(mac)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(secret, purpose, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        return None
    if payload["exp"] <= time.time():
        return None
    return payload


def token(secret: bytes, purpose: str, nonce: str) -> str:
    """A CSRF token bound to a nonce (the session's, or the sign-in form's)."""
    return _b64(_mac(secret, purpose, nonce))


def check_token(secret: bytes, purpose: str, nonce: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(str(given), token(secret, purpose, nonce))


# ------------------------------------------------------------------------------- cookies


def secure(request: web.Request) -> bool:
    return urlsplit(resources(request).settings.public_url).scheme == "https"


def cookie_name(request: web.Request, base: str) -> str:
    # `__Secure-` makes browsers refuse the cookie from plain http (no downgrade can plant one).
    return f"__Secure-{base}" if secure(request) else base


def set_cookie(
    request: web.Request, response: web.StreamResponse, base: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
    )


def clear_cookie(request: web.Request, response: web.StreamResponse, base: str) -> None:
    response.del_cookie(
        cookie_name(request, base),
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
    )


SESSION_COOKIE = "authbroker_console"
LOGIN_COOKIE = "authbroker_console_login"
FLASH_COOKIE = "authbroker_console_flash"


# ------------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    key_id: str
    key_name: str
    nonce: str
    expires_at: int
    csrf: str
    caller: Caller


def new_session_cookie(secret: bytes, key_id: str) -> tuple[str, str]:
    """A fresh session for `key_id`: (cookie value, nonce)."""
    nonce = secrets.token_urlsafe(18)
    now = int(time.time())
    value = sign(
        secret, "session", {"k": key_id, "n": nonce, "iat": now, "exp": now + SESSION_SECONDS}
    )
    return value, nonce


def _signed_out_key(res: Resources, nonce: str) -> str:
    return f"{res.settings.redis_prefix}:console:signed-out:{nonce}"


async def load_session(request: web.Request) -> Session | None:
    """The request's session if it is valid now, else None."""
    res = resources(request)
    secret = request.app[SECRET]
    payload = unsign(secret, "session", request.cookies.get(cookie_name(request, SESSION_COOKIE)))
    if payload is None:
        return None
    key_id, nonce = payload.get("k"), payload.get("n")
    if not isinstance(key_id, str) or not isinstance(nonce, str):
        return None
    try:
        if await res.redis.exists(_signed_out_key(res, nonce)):
            return None
    except Exception as exc:  # Redis away: the key check below still applies
        log.warning("console_signout_check_failed", error=type(exc).__name__)
    key = await api_keys.get_active(res.pool, key_id)
    if key is None or key.role != Role.ADMIN:
        return None
    await api_keys.touch(res.pool, key_id)  # at most one write a minute per key
    return Session(
        key_id=key_id,
        key_name=key.name,
        nonce=nonce,
        expires_at=payload["exp"],
        csrf=token(secret, "csrf", nonce),
        caller=Caller.of(key),
    )


async def end_session(request: web.Request, session: Session) -> None:
    """Remember the signed-out nonce until the cookie would have expired anyway."""
    res = resources(request)
    ttl = max(1, session.expires_at - int(time.time()))
    try:
        await res.redis.set(_signed_out_key(res, session.nonce), b"1", ex=ttl)
    except Exception as exc:
        log.warning("console_signout_record_failed", error=type(exc).__name__)


# ----------------------------------------------------------------------------- sign-in form


def login_form_cookie(secret: bytes) -> tuple[str, str]:
    """A pre-session cookie whose nonce the sign-in form's CSRF token is bound to."""
    nonce = secrets.token_urlsafe(18)
    return sign(secret, "login", {"n": nonce, "exp": int(time.time()) + LOGIN_FORM_SECONDS}), nonce


def login_nonce(request: web.Request) -> str | None:
    payload = unsign(
        request.app[SECRET], "login", request.cookies.get(cookie_name(request, LOGIN_COOKIE))
    )
    nonce = payload.get("n") if payload else None
    return nonce if isinstance(nonce, str) else None


# ---------------------------------------------------------------------------------- origin


def same_origin(request: web.Request) -> bool:
    """Whether the Origin (or, without it, the Referer) names this site; true when the browser
    sent neither (the CSRF token still has to match)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return True
    parts = urlsplit(source)
    if source == "null" or not parts.scheme or not parts.netloc:
        return False
    allowed = {
        f"{request.scheme}://{request.host}".lower(),
        "{0.scheme}://{0.netloc}".format(urlsplit(resources(request).settings.public_url)).lower(),
    }
    return f"{parts.scheme}://{parts.netloc}".lower() in allowed


# ----------------------------------------------------------------------------------- flash


def flash(request: web.Request, response: web.StreamResponse, message: str, tone: str) -> None:
    """A message for the next page this browser shows (after a redirect)."""
    value = sign(
        request.app[SECRET],
        "flash",
        {"m": message[:600], "t": tone, "exp": int(time.time()) + FLASH_SECONDS},
    )
    set_cookie(request, response, FLASH_COOKIE, value, FLASH_SECONDS)


def take_flash(request: web.Request) -> dict[str, str] | None:
    payload = unsign(
        request.app[SECRET], "flash", request.cookies.get(cookie_name(request, FLASH_COOKIE))
    )
    if payload is None:
        return None
    return {"message": str(payload.get("m", "")), "tone": str(payload.get("t", "info"))}
