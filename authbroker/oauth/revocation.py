"""Token revocation (RFC 7009), authenticated as the token requests are."""

from __future__ import annotations

from typing import Literal

import aiohttp

from authbroker.oauth.answers import error_in, parse_body, raise_for_error
from authbroker.oauth.client_auth import Credential, build_request, with_client_auth
from authbroker.oauth.model import Authenticated, Client, Placement, TokenShape
from authbroker.oauth.redact import Redactor
from authbroker.oauth.transport import Reply, Timeouts, send

__all__ = ["revoke_token"]

_REVOKE_MAX_BODY = 64 * 1024
_ALREADY_GONE = frozenset(
    {"invalid_token", "invalid_grant", "token_revoked", "expired_token", "bad_refresh_token"}
)


async def revoke_token(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    token: str,
    token_type_hint: Literal["access_token", "refresh_token"] | None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
) -> Authenticated:
    """Revoke a token (RFC 7009 §2.1): POST the token and its hint with client authentication.

    Returns (how the client authenticated) when the token is gone: a 2xx (RFC 7009 §2.2 answers
    200 for unknown tokens too), or an error saying the token is already invalid
    (invalid_token, invalid_grant, ...), which some providers send instead of the 200. The
    "query" placement sends credentials in the body here: RFC 7009 requires POST and RFC 6749
    §2.3.1 forbids credentials in the URI. The body is encoded as the client's
    `token_request_format` says.
    """
    if not client.revoke_url:
        raise ValueError("the client has no revoke_url")
    revoke_url = client.revoke_url
    params = {"token": token}
    if token_type_hint is not None:
        params["token_type_hint"] = token_type_hint
    redactor = Redactor.for_request(client, params)
    limits = Timeouts.of(timeout, connect_timeout)

    async def attempt(placement: Placement, credential: Credential) -> None:
        request = build_request(client, revoke_url, params, placement, credential)
        reply = await send(session, request, timeouts=limits, max_body=_REVOKE_MAX_BODY)
        _revocation_outcome(reply, redactor.including(request.secrets), client.token_shape)

    outcome = await with_client_auth(client, attempt, query_allowed=False)
    return outcome.authenticated


def _revocation_outcome(reply: Reply, redactor: Redactor, shape: TokenShape) -> None:
    data = None if reply.too_large or 300 <= reply.status < 400 else parse_body(reply)
    found = error_in(data, redactor, shape)
    if found is not None and found.code.lower() in _ALREADY_GONE and reply.status < 500:
        return
    raise_for_error(reply, found, grant="revoke")
