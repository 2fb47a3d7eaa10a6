"""The token endpoint (RFC 6749 §4.1.3, §4.4, §6): exchanging a code, refreshing, and the client
credentials grant, with the client authenticated as its method says (see `client_auth`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import aiohttp

from authbroker.oauth.answers import token_response_from
from authbroker.oauth.client_auth import Credential, build_request, with_client_auth
from authbroker.oauth.model import Client, Grant, ParamValue, Placement, TokenResponse
from authbroker.oauth.redact import Redactor
from authbroker.oauth.transport import Timeouts, send

__all__ = ["client_credentials", "exchange_code", "refresh_token", "request_token"]


async def request_token(
    session: aiohttp.ClientSession,
    client: Client,
    params: Mapping[str, ParamValue],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
    grant: Grant,
) -> TokenResponse:
    """One token request (RFC 6749 §4.1.3, §6), with the client's authentication method.

    `client.token_params` are added under the grant parameters (which win). After a
    client-authentication failure, previous secrets and then the other placements are tried
    (see `client_auth`); `TokenResponse.refused_placement` tells a fixed placement that was
    refused before another worked. `timeout` is each HTTP request's wait for its answer,
    `connect_timeout` its wait for a connection (default: 10 s, or `timeout` if shorter).
    """
    if not client.token_url:
        raise ValueError("the client has no token_url")
    merged: dict[str, ParamValue] = {**params}
    for key, value in client.token_params.items():
        merged.setdefault(key, value)
    redactor = Redactor.for_request(client, merged)
    limits = Timeouts.of(timeout, connect_timeout)

    async def attempt(placement: Placement, credential: Credential) -> TokenResponse:
        request = build_request(client, client.token_url, merged, placement, credential)
        reply = await send(session, request, timeouts=limits, max_body=max_body)
        return token_response_from(
            reply,
            grant=grant,
            placement=placement,
            redactor=redactor.including(request.secrets),
            shape=client.token_shape,
        )

    outcome = await with_client_auth(client, attempt, query_allowed=True)
    return dataclasses.replace(
        outcome.value, refused_placement=outcome.authenticated.refused_placement
    )


async def exchange_code(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
) -> TokenResponse:
    """Exchange an authorization code (RFC 6749 §4.1.3) with its PKCE verifier (RFC 7636 §4.5)."""
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        params["code_verifier"] = code_verifier
    return await request_token(
        session,
        client,
        params,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_body=max_body,
        grant="authorization_code",
    )


async def refresh_token(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    refresh_token: str,
    scopes: Sequence[str] | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
) -> TokenResponse:
    """Refresh (RFC 6749 §6). `scope` is sent only when given: omitted means "as granted"."""
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scopes:
        params["scope"] = client.scope_separator.join(scopes)
    return await request_token(
        session,
        client,
        params,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_body=max_body,
        grant="refresh_token",
    )


async def client_credentials(
    session: aiohttp.ClientSession,
    client: Client,
    *,
    scopes: Sequence[str] = (),
    params: Mapping[str, ParamValue] | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109 - per HTTP request, so each retry gets its own
    connect_timeout: float | None = None,
    max_body: int = 1_000_000,
) -> TokenResponse:
    """A token for the client itself (RFC 6749 §4.4): no user, and no refresh token expected
    (§4.4.3): the next token is asked for the same way. `params` are the connection's own
    (`audience`, RFC 8707's `resource`, repeated for several); they win over the app's
    `token_params` and lose to the grant's."""
    merged: dict[str, ParamValue] = {**(params or {}), "grant_type": "client_credentials"}
    if scopes:
        merged["scope"] = client.scope_separator.join(scopes)
    return await request_token(
        session,
        client,
        merged,
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_body=max_body,
        grant="client_credentials",
    )
