"""Secrets at rest: AES-256-GCM under a key ring.

A sealed value is `0x01 | len(kid) | kid | nonce(12) | ciphertext+tag`. The key id lets old keys
keep opening values after a rotation; the associated data (`table:row:column`) binds a value to
its place, so a ciphertext copied into another row or column fails to open instead of leaking.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE_BYTES = 12
_KID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class SealError(Exception):
    """A sealed value cannot be opened: unknown key id, wrong key, wrong place or damaged."""


@dataclass(frozen=True)
class KeyRing:
    """The first key seals; every key opens."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Parse `kid:base64key,kid:base64key` (commas, spaces or newlines between pairs)."""
        pairs: list[tuple[str, bytes]] = []
        for item in re.split(r"[\s,]+", text.strip()):
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            if not sep or not _KID.match(kid):
                raise ValueError(
                    "expected kid:base64key pairs, where kid is 1-32 letters, digits, '.', '_' or '-'"
                )
            standard = encoded.replace("-", "+").replace("_", "/")
            try:
                key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"key {kid!r} is not valid base64") from None
            if len(key) != 32:
                raise ValueError(f"key {kid!r} must be 32 bytes (AES-256), got {len(key)}")
            if any(kid == known for known, _ in pairs):
                raise ValueError(f"key id {kid!r} appears twice")
            pairs.append((kid, key))
        if not pairs:
            raise ValueError("no keys given")
        return cls(tuple(pairs))

    @staticmethod
    def generate_line(kid: str | None = None) -> str:
        """A new `kid:base64key` pair, ready to put first in AUTHBROKER_ENCRYPTION_KEYS."""
        kid = kid or "k" + os.urandom(4).hex()
        return f"{kid}:{base64.urlsafe_b64encode(AESGCM.generate_key(256)).decode().rstrip('=')}"

    @property
    def current_kid(self) -> str:
        return self.keys[0][0]

    def seal(self, plaintext: str | bytes, *, aad: str) -> bytes:
        kid, key = self.keys[0]
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(NONCE_BYTES)
        kid_bytes = kid.encode()
        sealed = AESGCM(key).encrypt(nonce, data, aad.encode())
        return bytes([VERSION, len(kid_bytes)]) + kid_bytes + nonce + sealed

    def open_bytes(self, sealed: bytes, *, aad: str) -> bytes:
        kid, nonce, body = self._split(sealed)
        key = next((k for known, k in self.keys if known == kid), None)
        if key is None:
            raise SealError(
                f"sealed with key {kid!r}, which is not in AUTHBROKER_ENCRYPTION_KEYS "
                "(add it back after the new key, then run `authbroker keys rotate`)"
            )
        try:
            return AESGCM(key).decrypt(nonce, body, aad.encode())
        except InvalidTag:
            raise SealError(
                f"value for {aad} does not open with key {kid!r}: wrong key, or the value was "
                "moved from another row or column or damaged"
            ) from None

    def open(self, sealed: bytes, *, aad: str) -> str:
        return self.open_bytes(sealed, aad=aad).decode()

    def kid_of(self, sealed: bytes) -> str:
        return self._split(sealed)[0]

    @staticmethod
    def _split(sealed: bytes) -> tuple[str, bytes, bytes]:
        if len(sealed) < 2 or sealed[0] != VERSION:
            raise SealError("not a sealed value (unknown format)")
        end = 2 + sealed[1]
        if len(sealed) < end + NONCE_BYTES + 16:
            raise SealError("sealed value is truncated")
        try:
            kid = sealed[2:end].decode()
        except UnicodeDecodeError:
            raise SealError("sealed value is damaged (key id unreadable)") from None
        return kid, sealed[end : end + NONCE_BYTES], sealed[end + NONCE_BYTES :]


def aad(table: str, row: object, column: str) -> str:
    """The associated data that binds a sealed value to its table, row and column."""
    return f"{table}:{row}:{column}"
