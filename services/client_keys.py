"""An app's private keys for `private_key_jwt` (RFC 7523 §2.2): made here or given by an
operator, sealed at rest, their public halves handed out for registering at the provider and,
where the app asks for it, published for the provider to fetch."""

from __future__ import annotations

from typing import Any

from authbroker import oauth
from authbroker.logs import get_logger
from authbroker.oauth import jwt
from services.errors import Invalid, NotFound
from storage import apps
from storage.apps import App
from storage.resources import Resources

log = get_logger("authbroker.apps")


async def add(
    res: Resources,
    app: App,
    *,
    alg: oauth.KeyAlgorithm | None = None,
    private_key_pem: str | None = None,
    keep_previous: bool = True,
    via: str = "api",
) -> App:
    """Make a new signing key for the app: the operator's PEM private key, or a generated one
    (RS256 unless `alg` says ES256). The key it replaces stays as the previous one unless
    `keep_previous` is false."""
    if private_key_pem is not None:
        try:
            key = jwt.import_key(private_key_pem, alg)
        except ValueError as exc:
            message = str(exc)
            raise Invalid(
                "invalid_key", message, fields=[{"field": "private_key_pem", "message": message}]
            ) from None
    else:
        key = jwt.generate_key(alg or "RS256")
    async with res.pool.acquire() as conn:
        updated = await apps.set_keys(conn, res.ring, app, key, keep_previous=keep_previous)
    log.info(
        "app_key_added",
        app=app.name,
        kid=key.kid,
        alg=key.alg,
        source="uploaded" if private_key_pem is not None else "generated",
        keys=len(updated.jwks.get("keys", [])),
        via=via,
    )
    return updated


async def published_jwks(res: Resources, name: str) -> dict[str, Any]:
    """The JWK Set an app publishes for its provider (`jwks_public`); NotFound for an app that
    does not publish one, or none of that name (the same answer: a public URL tells nothing
    about which apps exist)."""
    found = await apps.public_jwks(res.pool, name)
    if found is None:
        raise NotFound("jwks_not_found", f"no published JWKS named {name!r}")
    return found
