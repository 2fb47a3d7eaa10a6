"""Verify a webhook request, per the Standard Webhooks specification
(https://www.standardwebhooks.com):

- `webhook-id`: the message id, the same on every retry of a delivery;
- `webhook-timestamp`: integer seconds since the epoch when it was sent;
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` signatures of
  `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64-decoded part of the secret
  `whsec_<base64>`. More than one is sent while the sender rotates its secret: any may match.

    event = verify_webhook(request.headers, await request.read(), secret)

Pass the body exactly as received (bytes): parsing and re-serialising JSON changes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from authbroker_client.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> Any:
    """The parsed JSON body of a genuine, fresh webhook request; raises
    `WebhookVerificationError` (with its `reason`) otherwise. `secret`: `whsec_<base64>` (or
    the raw key as bytes). `tolerance`: seconds the timestamp may differ from `now` (Unix
    time, default the clock) either way; older messages are refused as replays."""
    key = _key(secret)
    message_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError(
            "invalid_timestamp", "webhook-timestamp is not an integer"
        ) from None
    age = (time.time() if now is None else now) - sent_at
    if age > tolerance:
        raise WebhookVerificationError("timestamp_too_old", "the message is too old")
    if age < -tolerance:
        raise WebhookVerificationError("timestamp_too_new", "the message is from the future")

    raw = body.encode() if isinstance(body, str) else bytes(body)
    signed = f"{message_id}.{timestamp}.".encode() + raw
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    matched = False
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Every candidate is compared, in constant time, so timing tells nothing either way.
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise WebhookVerificationError("no_matching_signature", "no signature matches")
    try:
        return json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("invalid_payload", "the body is not JSON") from None


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the webhook secret is not whsec_<base64>") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header by name, whatever the mapping's case handling (dict, httpx, aiohttp)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise WebhookVerificationError("missing_header", f"the {name} header is missing")
    return value
