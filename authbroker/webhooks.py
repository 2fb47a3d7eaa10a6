"""Webhooks by the Standard Webhooks specification (https://www.standardwebhooks.com), as pure
functions: the secret, the body, the signed headers, which events a subscription takes, and
when a failed delivery is tried again. Sending is the worker's (`services.webhook_delivery`).

A delivery is `POST url` with the event's JSON, byte for byte as the Redis stream carries it,
and the headers `webhook-id` (the event id: the same on every retry and replay, so receivers
deduplicate on it), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under the base64-decoded secret; one per
secret, space-separated, while a rotation keeps the previous secret signing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Sequence
from typing import Any

from authbroker.events import EventType

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "authbroker"
# A type, or every type under a prefix ending in '.' (`connection.`).
PREFIXES = tuple(sorted({str(t).split(".")[0] + "." for t in EventType}))
TYPES = tuple(str(t) for t in EventType)

# Retries: waits from 5 s growing to an hour, for a day from the first failure; then the
# subscription is disabled. One attempt may take ATTEMPT_TIMEOUT seconds.
FIRST_RETRY = 5.0
MAX_RETRY = 3600.0
RETRY_FOR = 24 * 3600.0
ATTEMPT_TIMEOUT = 10.0


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def body(event: dict[str, Any]) -> bytes:
    """The event as the relay writes it to the Redis stream."""
    return json.dumps(event, separators=(",", ":")).encode()


def signature(secret: str, message_id: str, timestamp: int, payload: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_: Sequence[str], message_id: str, timestamp: int, payload: bytes
) -> dict[str, str]:
    """The request's headers, signed with each of `secrets_` (the current one first)."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, message_id, timestamp, payload) for s in secrets_
        ),
    }


def valid_filter(value: str) -> bool:
    """Whether `value` names an event type or a prefix of some (`connection.`)."""
    return value in TYPES or value in PREFIXES


def retry_delay(failing_for: float) -> float:
    """Seconds until the next attempt of a delivery that has been failing for `failing_for`
    seconds: about as long again (so waits roughly double), at least FIRST_RETRY, at most
    MAX_RETRY, drawn from the upper half so that retries neither bunch up nor march in step."""
    ceiling = min(MAX_RETRY, max(FIRST_RETRY, failing_for))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret
