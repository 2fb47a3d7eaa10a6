"""What a provider returned besides tokens: Salesforce's `instance_url`, Slack's `team` and
`authed_user`, Zoom's `api_url`, QuickBooks' `realmId` (from the redirect), an OpenID
`id_token`. Runtimes need these to call the API, so the credentials answer carries them; the
connection view carries them without anything secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from authbroker.logs import is_secret_key


def for_runtime(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the provider said, plus the OpenID subject read from the id_token's payload
    (received from the token endpoint itself, over TLS: OpenID Connect Core §3.1.3.7 lets the
    client rely on that instead of the signature for what it only displays)."""
    data = dict(extra)
    subject = id_token_subject(data.get("id_token"))
    if subject is not None:
        data.setdefault("subject", subject)
    return data


def shown(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The same without secrets (the id_token, anything named like a token or secret)."""
    return _without_secrets(for_runtime(extra))


def _without_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def id_token_subject(id_token: Any) -> str | None:
    """The `sub` claim of a JWT's payload, or None if it is not one."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None
