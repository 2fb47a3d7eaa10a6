"""OAuth applications: rows in `apps`, client secrets and private keys sealed to their row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from authbroker import connection_settings, oauth, presets
from storage import connections
from storage.sealing import KeyRing, aad

COLUMNS = """id, name, client_id, client_secret, client_secrets_previous, authorization_url,
    token_url, revoke_url, scopes, scope_separator, client_auth, client_auth_detected,
    client_auth_works, client_auth_works_at, authorize_params, token_params, pkce,
    refresh_margin, default_token_lifetime, refresh_token_lifetime, probe_url, probe_interval,
    issuer, require_iss, preset, paused_at, paused_problem, paused_error, deleting,
    awaiting_secret, client_keys, jwks, jwks_public, client_assertion_audience,
    token_request_format, reconnect_links, reports_to_invalidate, connection_settings,
    created_at, updated_at"""

SECRET_COLUMNS = ("client_secret", "client_secrets_previous", "client_keys")
KEYS_KEPT = 2
"""The signing key and one previous key (see `set_keys`)."""


@dataclass(frozen=True)
class App:
    id: uuid.UUID
    name: str
    client_id: str
    client_secret: bytes | None = field(repr=False)
    client_secrets_previous: bytes | None = field(repr=False)
    authorization_url: str | None  # None: service connections only (client credentials)
    token_url: str
    revoke_url: str | None
    scopes: list[str]
    scope_separator: str
    client_auth: str
    client_auth_detected: str | None
    # A fixed placement the provider refused while this one worked, and since when (None: none).
    client_auth_works: str | None
    client_auth_works_at: datetime | None
    authorize_params: dict[str, str]
    token_params: dict[str, str]
    pkce: bool
    refresh_margin: int
    default_token_lifetime: int | None
    refresh_token_lifetime: int | None
    probe_url: str | None
    probe_interval: int | None
    issuer: str | None
    require_iss: bool
    preset: str | None
    paused_at: datetime | None
    paused_problem: str | None
    # What the provider answered when it paused the app (never a secret).
    paused_error: dict[str, Any] | None
    deleting: bool
    awaiting_secret: bool
    client_keys: bytes | None = field(repr=False)
    jwks: dict[str, Any]
    jwks_public: bool
    client_assertion_audience: str | None
    token_request_format: str
    reconnect_links: bool
    reports_to_invalidate: int
    # Placeholders its URLs keep for each connection to fill (authbroker/connection_settings.py).
    connection_settings: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> App:
        return cls(**dict(row))

    def for_connection(self, settings: Mapping[str, str] | None) -> App:
        """The app as a connection with `settings` uses it: its URLs filled with them (the
        app itself when it has no connection settings)."""
        if not self.connection_settings:
            return self
        given = settings or {}
        filled = {
            name: connection_settings.fill(value, given)
            for name in connection_settings.TEMPLATED_FIELDS
            if isinstance(value := getattr(self, name), str)
        }
        return replace(self, **filled)

    def client(self, ring: KeyRing) -> oauth.Client:
        """The protocol's view of this app, with its secrets opened for one request."""
        secret = (
            ring.open(self.client_secret, aad=aad("apps", self.id, "client_secret"))
            if self.client_secret
            else None
        )
        previous: tuple[str, ...] = ()
        if self.client_secrets_previous:
            previous = tuple(
                json.loads(
                    ring.open(
                        self.client_secrets_previous,
                        aad=aad("apps", self.id, "client_secrets_previous"),
                    )
                )
            )
        return oauth.Client(
            client_id=self.client_id,
            client_secret=secret,
            authorization_url=self.authorization_url or "",
            token_url=self.token_url,
            revoke_url=self.revoke_url,
            scope_separator=self.scope_separator,
            # Once `auto` has found what the provider accepts, use it directly.
            client_auth=self.client_auth_detected or self.client_auth,  # type: ignore[arg-type]
            authorize_params=self.authorize_params,
            token_params=self.token_params,
            pkce=self.pkce,
            previous_secrets=previous,
            signing_keys=tuple(key for key, _ in self.signing_keys(ring)),
            assertion_audience=self.client_assertion_audience,
            token_request_format=self.token_request_format,  # type: ignore[arg-type]
            token_shape=oauth.TokenShape.of(presets.token_response(self.preset)),
        )

    def signing_keys(self, ring: KeyRing) -> list[tuple[oauth.SigningKey, str]]:
        """The app's private keys with when each was made, the signing key first."""
        if not self.client_keys:
            return []
        stored = json.loads(ring.open(self.client_keys, aad=aad("apps", self.id, "client_keys")))
        return [
            (oauth.SigningKey(kid=k["kid"], alg=k["alg"], pem=k["pem"]), k["created_at"])
            for k in stored
        ]


def _sealed_values(ring: KeyRing, app_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
    """Replace plaintext secrets in `values` with sealed bytes bound to the app's row."""
    out = dict(values)
    if "client_secret" in out and out["client_secret"] is not None:
        out["client_secret"] = ring.seal(
            out["client_secret"], aad=aad("apps", app_id, "client_secret")
        )
    if "client_secrets_previous" in out:
        previous = out["client_secrets_previous"] or []
        out["client_secrets_previous"] = (
            ring.seal(json.dumps(previous), aad=aad("apps", app_id, "client_secrets_previous"))
            if previous
            else None
        )
    return out


async def create(conn: asyncpg.Connection, ring: KeyRing, values: dict[str, Any]) -> App:
    app_id = uuid.uuid4()
    sealed = _sealed_values(ring, app_id, values)
    sealed.update(_first_key(ring, app_id, values.get("client_auth"), has_keys=False))
    names = ["id", *sealed]
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO apps ({', '.join(names)}) VALUES ({placeholders}) RETURNING {COLUMNS}",
        app_id,
        *sealed.values(),
    )
    return App.from_row(row)


async def update(conn: asyncpg.Connection, ring: KeyRing, app: App, changes: dict[str, Any]) -> App:
    """Apply changes; any change resumes an app paused for invalid settings. A change of the
    placement (or of the token URL) forgets what was learnt of the old one: the placement `auto`
    detected, and the placement that worked where a fixed one was refused."""
    sealed = _sealed_values(ring, app.id, changes)
    sealed.update(
        _first_key(ring, app.id, changes.get("client_auth"), has_keys=app.client_keys is not None)
    )
    sets = [f"{name} = ${i}" for i, name in enumerate(sealed, start=2)]
    sets += ["updated_at = now()", "paused_at = NULL", "paused_problem = NULL"]
    sets.append("paused_error = NULL")
    if "client_auth" in changes or "token_url" in changes:
        sets += ["client_auth_detected = NULL", "client_auth_works = NULL"]
        sets.append("client_auth_works_at = NULL")
    if changes.get("client_secret"):
        sets.append("awaiting_secret = false")
    row = await conn.fetchrow(
        f"UPDATE apps SET {', '.join(sets)} WHERE id = $1 RETURNING {COLUMNS}",
        app.id,
        *sealed.values(),
    )
    if app.paused_at is not None:
        await connections.resume_app(conn, app.id)
    return App.from_row(row)


def _keys_values(
    ring: KeyRing, app_id: uuid.UUID, keys: list[tuple[oauth.SigningKey, str]]
) -> dict[str, Any]:
    """The columns holding `keys`: sealed private keys, and their public JWK Set."""
    stored = [{"kid": k.kid, "alg": k.alg, "pem": k.pem, "created_at": made} for k, made in keys]
    return {
        "client_keys": ring.seal(json.dumps(stored), aad=aad("apps", app_id, "client_keys")),
        "jwks": oauth.jwt.jwks([k for k, _ in keys]),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _first_key(
    ring: KeyRing, app_id: uuid.UUID, client_auth: str | None, has_keys: bool
) -> dict[str, Any]:
    """An app set to private_key_jwt always has a key: one is made (RS256) when it has none, so
    its token requests can be signed from the start and its JWKS is there to register."""
    if client_auth != "private_key_jwt" or has_keys:
        return {}
    return _keys_values(ring, app_id, [(oauth.jwt.generate_key("RS256"), _now())])


async def set_keys(
    conn: asyncpg.Connection,
    ring: KeyRing,
    app: App,
    key: oauth.SigningKey,
    *,
    keep_previous: bool,
) -> App:
    """Make `key` the app's signing key. The key it replaces stays as the previous one (tried
    after it, and published in the JWKS, until the next change) unless `keep_previous` is
    false; older ones go. The same key given again only moves to the front."""
    kept = [(k, made) for k, made in app.signing_keys(ring) if k.kid != key.kid]
    keys = [(key, _now()), *(kept[: KEYS_KEPT - 1] if keep_previous else [])]
    values = _keys_values(ring, app.id, keys)
    row = await conn.fetchrow(
        f"""UPDATE apps SET client_keys = $2, jwks = $3, updated_at = now()
            WHERE id = $1 RETURNING {COLUMNS}""",
        app.id,
        values["client_keys"],
        values["jwks"],
    )
    return App.from_row(row)


async def public_jwks(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> dict[str, Any] | None:
    """The JWK Set of an app that publishes it (`jwks_public`); None otherwise. Reads no
    secret."""
    return await conn.fetchval(
        "SELECT jwks FROM apps WHERE name = $1 AND jwks_public AND NOT deleting", name
    )


async def get(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> App | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM apps WHERE name = $1", name)
    return App.from_row(row) if row else None


async def get_by_id(conn: asyncpg.Connection | asyncpg.Pool, app_id: uuid.UUID) -> App | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM apps WHERE id = $1", app_id)
    return App.from_row(row) if row else None


async def preset_of(conn: asyncpg.Connection | asyncpg.Pool, app_id: uuid.UUID) -> str | None:
    return await conn.fetchval("SELECT preset FROM apps WHERE id = $1", app_id)


async def list_all(conn: asyncpg.Connection | asyncpg.Pool) -> list[App]:
    return [App.from_row(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM apps ORDER BY name")]


async def remember_placement(conn: asyncpg.Connection, app_id: uuid.UUID, placement: str) -> bool:
    """Record what `auto` found; true when it was news (so the caller logs it once)."""
    result = await conn.execute(
        """UPDATE apps SET client_auth_detected = $2
           WHERE id = $1 AND client_auth = 'auto' AND client_auth_detected IS DISTINCT FROM $2""",
        app_id,
        placement,
    )
    return result.endswith(" 1")


async def record_client_auth_works(
    conn: asyncpg.Connection, app_id: uuid.UUID, *, configured: str, works: str
) -> datetime | None:
    """Record that the provider refused the app's fixed placement `configured` and accepted
    `works`; written only when that is news (and only while the app is still set to
    `configured`). Returns when it was recorded, None when nothing changed."""
    return await conn.fetchval(
        """UPDATE apps SET client_auth_works = $3, client_auth_works_at = now()
           WHERE id = $1 AND client_auth = $2 AND client_auth_works IS DISTINCT FROM $3
           RETURNING client_auth_works_at""",
        app_id,
        configured,
        works,
    )


async def pause(
    conn: asyncpg.Connection,
    app_id: uuid.UUID,
    problem: str,
    error: dict[str, Any] | None = None,
) -> bool:
    """Pause refreshes for an app, keeping the provider's answer (`error`) as evidence; true
    only for the call that paused it (one event, not many)."""
    result = await conn.execute(
        """UPDATE apps SET paused_at = now(), paused_problem = $2, paused_error = $3
           WHERE id = $1 AND paused_at IS NULL""",
        app_id,
        problem,
        error,
    )
    return result.endswith(" 1")


async def mark_deleting(conn: asyncpg.Connection, app_id: uuid.UUID) -> None:
    """The app goes once its last connection is revoked (the revoke job needs its secrets)."""
    await conn.execute(
        "UPDATE apps SET deleting = true, paused_at = coalesce(paused_at, now()) WHERE id = $1",
        app_id,
    )


async def delete(conn: asyncpg.Connection, app_id: uuid.UUID) -> None:
    """Delete the app with its ended connections (they hold no secrets any more)."""
    await conn.execute("DELETE FROM connections WHERE app_id = $1 AND status = 'revoked'", app_id)
    await conn.execute("DELETE FROM apps WHERE id = $1", app_id)
