"""Secrets at rest (storage/sealing.py) and key rotation (storage/rotation.py).

What an operator notices: a value opens only where it was sealed, a missing or wrong key is named
in a clear SealError (never garbage, never a bare cryptography exception), a bad
AUTHBROKER_ENCRYPTION_KEYS says what is wrong with it, and `keys rotate` leaves every secret
readable with the new key alone.

The rotation test re-seals a whole database, so it runs against a database of its own (created
and dropped here), never the one the other tests of this run share.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from authbroker.oauth import TokenResponse
from storage import apps, authorizations, basic, connections, webhooks
from storage.pool import create_pool
from storage.rotation import rotate
from storage.sealing import KeyRing, SealError, aad
from tests.databases import private_database


def _ring(kid: str = "k1") -> KeyRing:
    return KeyRing.parse(KeyRing.generate_line(kid))


def _key_material(line: str) -> str:
    return line.partition(":")[2]


# --------------------------------------------------------------------------- sealing


def test_round_trip_str_and_bytes() -> None:
    ring = _ring()
    where = aad("apps", uuid.uuid4(), "client_secret")
    sealed = ring.seal("s3cr3t-välue", aad=where)
    assert isinstance(sealed, bytes)
    assert b"s3cr3t" not in sealed
    assert ring.open(sealed, aad=where) == "s3cr3t-välue"
    assert ring.kid_of(sealed) == "k1"

    raw = bytes(range(256))
    assert ring.open_bytes(ring.seal(raw, aad=where), aad=where) == raw


def test_sealing_twice_gives_different_ciphertexts() -> None:
    """A fresh nonce each time: equal secrets do not show up as equal bytes in the database."""
    ring = _ring()
    where = aad("basic_credentials", "x", "password")
    first, second = ring.seal("same", aad=where), ring.seal("same", aad=where)
    assert first != second
    assert ring.open(first, aad=where) == ring.open(second, aad=where) == "same"


def test_value_moved_to_another_row_does_not_open() -> None:
    ring = _ring()
    row_a, row_b = uuid.uuid4(), uuid.uuid4()
    sealed = ring.seal("token-of-a", aad=aad("connections", row_a, "access_token"))
    with pytest.raises(SealError) as info:
        ring.open(sealed, aad=aad("connections", row_b, "access_token"))
    assert str(row_b) in str(info.value)
    assert "token-of-a" not in str(info.value)


def test_value_moved_to_another_column_does_not_open() -> None:
    ring = _ring()
    row = "conn-1"
    sealed = ring.seal("refresh-value", aad=aad("connections", row, "refresh_token"))
    with pytest.raises(SealError):
        ring.open(sealed, aad=aad("connections", row, "access_token"))
    with pytest.raises(SealError):
        ring.open(sealed, aad=aad("basic_credentials", row, "refresh_token"))


def test_value_sealed_under_a_key_missing_from_the_ring_names_the_key() -> None:
    old = _ring("retired-2023")
    new = _ring("current")
    where = aad("apps", uuid.uuid4(), "client_secret")
    sealed = old.seal("secret", aad=where)
    with pytest.raises(SealError) as info:
        new.open(sealed, aad=where)
    message = str(info.value)
    assert "'retired-2023'" in message
    assert "AUTHBROKER_ENCRYPTION_KEYS" in message
    assert not isinstance(info.value, InvalidTag)


def test_wrong_key_with_the_same_kid_fails_clearly() -> None:
    sealer, other = _ring("k1"), _ring("k1")
    where = aad("basic_credentials", "svc", "password")
    sealed = sealer.seal("pw", aad=where)
    with pytest.raises(SealError) as info:
        other.open(sealed, aad=where)
    message = str(info.value)
    assert "'k1'" in message
    assert "wrong key" in message
    # The cryptography exception does not leak out as the cause shown in tracebacks.
    assert info.value.__suppress_context__ or info.value.__cause__ is None


def test_every_key_of_the_ring_opens_and_only_the_first_seals() -> None:
    old_line = KeyRing.generate_line("old")
    new_line = KeyRing.generate_line("new")
    old = KeyRing.parse(old_line)
    both = KeyRing.parse(f"{new_line},{old_line}")
    where = aad("apps", "row", "client_secret")
    from_old = old.seal("v", aad=where)
    assert both.open(from_old, aad=where) == "v"
    assert both.current_kid == "new"
    assert both.kid_of(both.seal("v", aad=where)) == "new"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda s: b"", id="empty"),
        pytest.param(lambda s: s[:1], id="one-byte"),
        pytest.param(lambda s: s[:20], id="truncated-inside-nonce"),
        pytest.param(lambda s: s[:-1], id="last-byte-cut"),
        pytest.param(lambda s: s[:-1] + bytes([s[-1] ^ 1]), id="bit-flipped-tag"),
        pytest.param(lambda s: s[:10] + bytes([s[10] ^ 0x80]) + s[11:], id="bit-flipped-nonce"),
        pytest.param(lambda s: b"\x02" + s[1:], id="unknown-version"),
        pytest.param(lambda s: b"not a sealed value at all, just text", id="garbage-text"),
        pytest.param(lambda s: b"plaintext-password", id="plaintext"),
    ],
)
def test_damaged_or_garbage_input_raises_seal_error(damage: Callable[[bytes], bytes]) -> None:
    ring = _ring()
    where = aad("connections", "c1", "access_token")
    sealed = ring.seal("the-access-token", aad=where)
    with pytest.raises(SealError):
        ring.open(damage(sealed), aad=where)


def test_damaged_key_id_bytes_raise_seal_error() -> None:
    ring = _ring()
    damaged = bytes([1, 2, 0xFF, 0xFE]) + bytes(40)
    with pytest.raises(SealError):
        ring.open(damaged, aad="connections:c1:access_token")


# --------------------------------------------------------------------------- KeyRing.parse


def test_parse_accepts_commas_spaces_and_newlines() -> None:
    a, b, c = (KeyRing.generate_line(k) for k in ("a", "b", "c"))
    ring = KeyRing.parse(f"  {a},\n{b}  {c}\n")
    assert [kid for kid, _ in ring.keys] == ["a", "b", "c"]
    assert ring.current_kid == "a"


def test_parse_accepts_standard_base64_with_padding() -> None:
    key = bytes(range(32))
    ring = KeyRing.parse(f"std:{base64.b64encode(key).decode()}")
    assert ring.keys == (("std", key),)


@pytest.mark.parametrize("text", ["", "   ", " , \n ,"])
def test_parse_without_keys_fails(text: str) -> None:
    with pytest.raises(ValueError, match="no keys"):
        KeyRing.parse(text)


def test_parse_bad_base64_names_the_key() -> None:
    with pytest.raises(ValueError) as info:
        KeyRing.parse("k1:a")
    assert "'k1'" in str(info.value)
    assert "base64" in str(info.value)


@pytest.mark.parametrize("where", ["only-junk", "junk-inside-valid-key"])
def test_parse_rejects_characters_outside_base64(where: str) -> None:
    if where == "only-junk":
        text = "k1:" + "!" * 43
    else:
        material = _key_material(KeyRing.generate_line("k1"))
        text = f"k1:{material[:20]}%%{material[20:]}"
    with pytest.raises(ValueError, match="base64"):
        KeyRing.parse(text)


@pytest.mark.parametrize("size", [16, 31, 33, 64])
def test_parse_wrong_length_names_key_and_length_without_showing_it(size: int) -> None:
    material = base64.urlsafe_b64encode(bytes([7]) * size).decode()
    with pytest.raises(ValueError) as info:
        KeyRing.parse(f"short:{material}")
    message = str(info.value)
    assert "'short'" in message
    assert "32 bytes" in message
    assert str(size) in message
    assert material.rstrip("=") not in message


def test_parse_duplicate_kid_fails() -> None:
    first, second = KeyRing.generate_line("dup"), KeyRing.generate_line("dup")
    with pytest.raises(ValueError) as info:
        KeyRing.parse(f"{first},{second}")
    assert "'dup'" in str(info.value)
    assert "twice" in str(info.value)


@pytest.mark.parametrize(
    "kid",
    ["b@d", "x" * 33, "bad/kid", "ké"],
)
def test_parse_bad_kid_fails(kid: str) -> None:
    material = _key_material(KeyRing.generate_line())
    with pytest.raises(ValueError) as info:
        KeyRing.parse(f"{kid}:{material}")
    message = str(info.value)
    assert "kid" in message
    assert material not in message


def test_parse_missing_colon_fails_without_echoing_the_key() -> None:
    material = _key_material(KeyRing.generate_line())
    with pytest.raises(ValueError) as info:
        KeyRing.parse(material)
    assert "kid:base64key" in str(info.value)
    assert material not in str(info.value)


def test_generate_line_parses() -> None:
    named = KeyRing.generate_line("prod-2024.1")
    assert named.startswith("prod-2024.1:")
    ring = KeyRing.parse(named)
    assert ring.current_kid == "prod-2024.1"
    assert len(ring.keys[0][1]) == 32

    random_a, random_b = KeyRing.generate_line(), KeyRing.generate_line()
    ring_a, ring_b = KeyRing.parse(random_a), KeyRing.parse(random_b)
    assert ring_a.current_kid != ring_b.current_kid
    assert ring_a.keys[0][1] != ring_b.keys[0][1]
    # Two generated lines form a ring together, and the ring works.
    both = KeyRing.parse(f"{random_a},{random_b}")
    assert both.open(both.seal("x", aad="t:r:c"), aad="t:r:c") == "x"


def test_key_ring_repr_does_not_show_keys() -> None:
    line = KeyRing.generate_line("k1")
    ring = KeyRing.parse(line)
    assert _key_material(line) not in repr(ring)
    assert repr(ring.keys[0][1]) not in repr(ring)


# --------------------------------------------------------------------------- rotation


@pytest.fixture
async def private_pool(admin_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of this test alone, dropped afterwards."""
    async with private_database(admin_dsn, purpose="rotation") as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


SECRET_COLUMNS = {
    "apps": ("id", ("client_secret", "client_secrets_previous")),
    "basic_credentials": ("name", ("password",)),
    "connections": ("id", ("access_token", "refresh_token", "extra")),
    "authorizations": ("id", ("code_verifier", "code")),
    "webhooks": ("id", ("secret", "previous_secret")),
}


async def _open_everything(pool: asyncpg.Pool, ring: KeyRing) -> dict[str, str]:
    """Every sealed value in the database, opened with `ring`, keyed by its associated data."""
    opened: dict[str, str] = {}
    for table, (key, columns) in SECRET_COLUMNS.items():
        for row in await pool.fetch(f"SELECT {key}, {', '.join(columns)} FROM {table}"):
            for column in columns:
                if row[column] is not None:
                    where = aad(table, row[key], column)
                    opened[where] = ring.open(row[column], aad=where)
    return opened


async def _kids(pool: asyncpg.Pool) -> set[str]:
    ring_reader = KeyRing.parse(KeyRing.generate_line("reader"))
    kids = set()
    for table, (_key, columns) in SECRET_COLUMNS.items():
        for row in await pool.fetch(f"SELECT {', '.join(columns)} FROM {table}"):
            kids |= {ring_reader.kid_of(row[c]) for c in columns if row[c] is not None}
    return kids


async def test_rotate_reseals_everything_under_the_new_key(
    private_pool: asyncpg.Pool, settings: Any, unique: Callable[[str], str]
) -> None:
    assert settings.encryption_keys
    older_line = KeyRing.generate_line("older")
    old_ring = KeyRing.parse(settings.encryption_keys)  # what the service seals with today
    older_ring = KeyRing.parse(older_line)  # a key retired before that, still in the ring
    pool = private_pool

    async with pool.acquire() as conn:
        app = await apps.create(
            conn,
            old_ring,
            {
                "name": unique("rot-app"),
                "client_id": "client-1",
                "client_secret": "app-secret-now",
                "client_secrets_previous": ["app-secret-before", "app-secret-long-ago"],
                "authorization_url": "https://provider.example.com/authorize",
                "token_url": "https://provider.example.com/token",
            },
        )
        connection_id = unique("rot-conn")
        assert await connections.start(
            conn, connection_id=connection_id, app_id=app.id, requested_scopes=["r"], metadata=None
        )
        now = datetime.now(UTC)
        stored = await connections.store_tokens(
            conn,
            old_ring,
            connection_id,
            TokenResponse(
                access_token="access-value",
                token_type="Bearer",
                expires_in=3600,
                refresh_token="refresh-value",
                refresh_token_expires_in=None,
                scopes=["r"],
                extra={"id_token": "id-token-value"},
                placement="body",
            ),
            expires_at=now + timedelta(hours=1),
            refresh_at=now + timedelta(minutes=50),
            refresh_token_expires_at=None,
            requested_scopes=None,
            granted_scopes=["r"],
            problem=None,
            authorized=True,
        )
        assert stored is not None and stored.status == "active"
        authorization_id, _ = await authorizations.create(
            conn,
            old_ring,
            state_hash=hashlib.sha256(uuid.uuid4().bytes).digest(),
            app_id=app.id,
            connection_id=connection_id,
            code_verifier="verifier-value",
            requested_scopes=["r"],
            redirect_uri="http://127.0.0.1/oauth/callback",
            lifetime_seconds=600,
        )
        await authorizations.store_code(conn, old_ring, authorization_id, "code-value")
        # A webhook in a rotation's window: two signing secrets.
        webhook_id = uuid.uuid4()
        await webhooks.create(
            conn, old_ring, webhook_id, {"url": "https://hooks.example.com/"}, "whsec_b2xk"
        )
        async with conn.transaction():
            await webhooks.rotate(conn, old_ring, webhook_id, "whsec_bmV3", 3600)

    # Five Basic credentials (more than one batch of 2), one sealed under the older key.
    basic_names = [unique(f"rot-basic-{i}") for i in range(5)]
    for i, name in enumerate(basic_names):
        await basic.put(pool, older_ring if i == 0 else old_ring, name, f"login{i}", f"pw-{i}")

    before = await _open_everything(pool, KeyRing.parse(f"{settings.encryption_keys},{older_line}"))
    assert len(before) == 2 + 5 + 3 + 2 + 2

    new_line = KeyRing.generate_line(unique("new")[:32])
    new_ring = KeyRing.parse(f"{new_line},{settings.encryption_keys},{older_line}")
    counts = await rotate(pool, new_ring, batch=2)
    assert counts == {
        "apps": 2,
        "basic_credentials": 5,
        "connections": 3,
        "authorizations": 2,
        "webhooks": 2,
    }

    # Everything now opens with the new key alone, to the same plaintext.
    only_new = KeyRing.parse(new_line)
    assert await _open_everything(pool, only_new) == before
    assert await _kids(pool) == {new_ring.current_kid}
    # ... and no longer with the old keys: the values really were re-sealed.
    row = await pool.fetchrow(
        "SELECT password FROM basic_credentials WHERE name = $1", basic_names[1]
    )
    with pytest.raises(SealError, match=new_ring.current_kid):
        old_ring.open(row["password"], aad=aad("basic_credentials", basic_names[1], "password"))

    # The repositories read the rotated rows as before.
    reread = await apps.get(pool, app.name)
    assert reread is not None
    client = reread.client(only_new)
    assert client.client_secret == "app-secret-now"
    assert client.previous_secrets == ("app-secret-before", "app-secret-long-ago")
    conn_row = await connections.get(pool, connection_id)
    assert conn_row is not None
    assert conn_row.open_access_token(only_new) == "access-value"
    assert conn_row.open_refresh_token(only_new) == "refresh-value"
    extra = only_new.open(conn_row.extra or b"", aad=aad("connections", connection_id, "extra"))
    assert json.loads(extra) == {"id_token": "id-token-value"}
    auth_row = await authorizations.get(pool, authorization_id)
    assert auth_row is not None
    assert auth_row.open_code(only_new) == "code-value"
    assert auth_row.open_verifier(only_new) == "verifier-value"
    cred = await basic.get(pool, basic_names[0])
    assert cred is not None and cred.open_password(only_new) == "pw-0"
    hook = await webhooks.get(pool, webhook_id)
    assert hook is not None
    assert webhooks.open_secrets(only_new, hook.id, hook.secret, hook.previous_secret) == [
        "whsec_bmV3",
        "whsec_b2xk",
    ]

    # A second run finds nothing to do.
    assert await rotate(pool, new_ring, batch=2) == {
        "apps": 0,
        "basic_credentials": 0,
        "connections": 0,
        "authorizations": 0,
        "webhooks": 0,
    }
    assert await _open_everything(pool, only_new) == before


async def test_rotate_with_a_value_under_an_unknown_key_fails_clearly(
    private_pool: asyncpg.Pool, unique: Callable[[str], str]
) -> None:
    """A value sealed under a key the operator dropped from the ring stops the rotation with a
    SealError naming that key; nothing is silently skipped or corrupted."""
    lost = _ring("lost-key")
    name = unique("orphan")
    await basic.put(private_pool, lost, name, "login", "pw")
    new_line = KeyRing.generate_line("fresh")
    with pytest.raises(SealError, match="'lost-key'"):
        await rotate(private_pool, KeyRing.parse(new_line))
    row = await private_pool.fetchrow(
        "SELECT password FROM basic_credentials WHERE name = $1", name
    )
    assert lost.open(row["password"], aad=aad("basic_credentials", name, "password")) == "pw"
