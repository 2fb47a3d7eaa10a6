"""`verify_webhook` per the Standard Webhooks specification: vectors built here from the spec's
definition, the spec's published example, and a cross-check with the `standardwebhooks`
reference package in both directions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime

import httpx
import pytest
from authbroker_client import WebhookVerificationError, verify_webhook
from standardwebhooks.webhooks import Webhook

KEY = secrets.token_bytes(24)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = json.dumps({"id": "evt-1", "type": "connection.refreshed", "data": {}}).encode()


def signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, as the spec defines it."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    body: bytes = BODY, *, key: bytes = KEY, at: int | None = None, message_id: str = "msg_1"
) -> dict[str, str]:
    timestamp = str(int(time.time()) if at is None else at)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature(key, message_id, timestamp, body),
    }


def reason(headers: dict[str, str], body: bytes = BODY, secret: str = SECRET, **kw) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_webhook(headers, body, secret, **kw)
    return caught.value.reason


def test_a_genuine_request_gives_the_parsed_event():
    assert verify_webhook(signed_headers(), BODY, SECRET) == json.loads(BODY)
    # Headers in any case and any mapping type; the body as text works too.
    title_case = {k.title(): v for k, v in signed_headers().items()}
    assert verify_webhook(title_case, BODY, SECRET)["id"] == "evt-1"
    assert verify_webhook(httpx.Headers(signed_headers()), BODY.decode(), SECRET)["id"] == "evt-1"
    assert verify_webhook(signed_headers(), BODY, KEY)["id"] == "evt-1"  # raw key bytes


def test_the_specifications_example():
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert verify_webhook(headers, body, secret, now=1614265330) == {"test": 2432232314}
    assert reason(headers, body, secret) == "timestamp_too_old"  # today it is a replay


def test_any_listed_signature_may_match_during_secret_rotation():
    headers = signed_headers()
    old = signed_headers(key=secrets.token_bytes(24))["webhook-signature"]
    headers["webhook-signature"] = (
        f"{old} v2,whatever not-even,base64!! {headers['webhook-signature']}"
    )
    assert verify_webhook(headers, BODY, SECRET)["id"] == "evt-1"
    headers["webhook-signature"] = old
    assert reason(headers) == "no_matching_signature"


def test_only_v1_signatures_count():
    headers = signed_headers()
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    assert reason(headers) == "no_matching_signature"


def test_tampering_and_wrong_secrets_are_refused():
    headers = signed_headers()
    assert reason(headers, BODY.replace(b"refreshed", b"revoked")) == "no_matching_signature"
    assert reason({**headers, "webhook-id": "msg_2"}) == "no_matching_signature"
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert reason(headers, secret=other) == "no_matching_signature"


def test_timestamps_outside_the_tolerance_are_refused():
    now = int(time.time())
    assert reason(signed_headers(at=now - 301)) == "timestamp_too_old"
    assert reason(signed_headers(at=now + 301)) == "timestamp_too_new"
    assert verify_webhook(signed_headers(at=now - 290), BODY, SECRET)["id"] == "evt-1"
    assert reason(signed_headers(at=now - 60), tolerance=30) == "timestamp_too_old"
    headers = signed_headers()
    headers["webhook-timestamp"] = "yesterday"
    assert reason(headers) == "invalid_timestamp"


def test_missing_headers_and_bodies_that_are_not_json():
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = signed_headers()
        del headers[name]
        assert reason(headers) == "missing_header"
    assert reason(signed_headers(b"not json"), b"not json") == "invalid_payload"


def test_a_malformed_secret_is_a_programming_error():
    with pytest.raises(ValueError, match="whsec_"):
        verify_webhook(signed_headers(), BODY, "whsec_not base64!")
    with pytest.raises(ValueError, match="empty"):
        verify_webhook(signed_headers(), BODY, "whsec_")


def test_agrees_with_the_reference_package():
    reference = Webhook(SECRET)
    at = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": reference.sign("msg_ref", at, BODY.decode()),
    }
    assert verify_webhook(headers, BODY, SECRET) == json.loads(BODY)  # theirs, verified here
    assert reference.verify(BODY, signed_headers()) == json.loads(BODY)  # ours, verified there
