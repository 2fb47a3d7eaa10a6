"""Client authentication at the token and revocation endpoints: building a request with the
client's credentials where its method puts them (RFC 6749 §2.3.1 body and Basic, Facebook's
query, RFC 7523 §2.2 client assertions), and trying the credentials and placements that may work.

Building is pure (`build_request`); `with_client_auth` runs an attempt per credential and
placement, in this order:

1. The configured placement with the current secret (or signing key), then with each previous
   one while the provider refuses the credentials themselves (a rotation in progress).
2. Only if every one was refused with a client-authentication error (invalid_client,
   unauthorized_client, a 401, ...): the other placements, each once more with the same
   secrets. `auto` is Basic then the body; a fixed body or Basic setting tries the other of the
   two; a fixed `query` setting (a GET token endpoint) tries the query, then the body, then
   Basic. The query is never tried for a client not set to it, nor for revocation (RFC 7009
   requires a POST). A client assertion is never moved elsewhere, nor a public client's id.

When another placement than a fixed setting's worked, `Authenticated.refused_placement` says
so, and the caller records the settings problem though the request succeeded. When every
placement was refused, the error says so with the evidence of each (never a secret).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import quote_plus, urlencode

from yarl import URL

from authbroker.oauth import jwt
from authbroker.oauth.errors import ProviderRejected
from authbroker.oauth.model import Authenticated, Client, ParamValue, Placement
from authbroker.oauth.transport import Request
from authbroker.problems import Problem

__all__ = ["Credential", "Outcome", "build_request", "with_client_auth"]

T = TypeVar("T")
Credential = str | jwt.SigningKey | None
"""What authenticates one attempt: a secret, a signing key (private_key_jwt), or nothing (a
public client, which sends its client_id alone)."""

USER_AGENT = "authbroker"
_CREDENTIAL_PARAMS = frozenset(
    {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
)
_SECRET_REFUSED = frozenset({"invalid_client", "incorrect_client_credentials", "bad_client_secret"})
_AUTH_FAILURE_HINTS = re.compile(r"authenticat|credential|client_secret|client_id|basic")
_EVIDENCE_LIMIT = 80


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What an attempt gave, and how the client authenticated for it."""

    value: T
    authenticated: Authenticated


def basic_credentials(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then base64 (RFC 7617) of "id:secret":
    the value of the Basic header, as secret as the secret itself."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return base64.b64encode(pair.encode("ascii")).decode("ascii")


def _credentials(client: Client) -> tuple[Credential, ...]:
    """The credentials to try in order: the current one first."""
    if client.client_auth == "private_key_jwt":
        if not client.signing_keys:
            raise ValueError("private_key_jwt needs a signing key; the app has none")
        return client.signing_keys
    if not client.client_secret:
        return (None,)  # a public client identifies itself with client_id only
    return (client.client_secret, *(s for s in client.previous_secrets if s))


def placements(client: Client, *, public: bool, query_allowed: bool) -> tuple[Placement, ...]:
    """The placements to try, in order (see the module's docstring)."""
    setting = client.client_auth
    if public or setting not in {"body", "basic", "query", "auto"}:
        return ("body",)  # a public client's id, or a client assertion
    if setting == "auto":
        return ("basic", "body")
    first: Placement = "body" if setting == "query" and not query_allowed else setting
    return (first, *(p for p in ("body", "basic") if p != first))


def _may_be_wrong_placement(exc: ProviderRejected) -> bool:
    """Whether the refusal may be about where the credentials were (so another placement may
    work): a client-authentication error, which providers answer alike for a wrong secret and
    for credentials in the wrong place."""
    code = exc.error.lower()
    text = (exc.description or "").lower()
    if exc.problem is Problem.GRANT_NOT_ALLOWED:
        return False  # the client was recognised: it may not use this grant
    if exc.status == 401 or exc.problem is Problem.CLIENT_AUTH_METHOD:
        return True
    if code in _SECRET_REFUSED or code in {"invalid_client_id", "unauthorized_client"}:
        return True
    return code == "invalid_request" and bool(_AUTH_FAILURE_HINTS.search(text))


def _secret_refused(exc: ProviderRejected) -> bool:
    """Whether another secret might work: the provider refused the credentials themselves."""
    return exc.error.lower() in _SECRET_REFUSED and exc.problem is not Problem.CLIENT_AUTH_METHOD


async def with_client_auth(
    client: Client,
    attempt: Callable[[Placement, Credential], Awaitable[T]],
    *,
    query_allowed: bool,
) -> Outcome[T]:
    """Run `attempt` with each credential and placement in turn (see the module's docstring)
    while the provider refuses the client's authentication; any other failure (transient, a
    grant error) ends the search at once."""
    credentials = _credentials(client)
    order = placements(client, public=credentials == (None,), query_allowed=query_allowed)
    refused: list[tuple[Placement, ProviderRejected]] = []
    for placement in order:
        refusal: ProviderRejected | None = None
        for credential in credentials:
            try:
                value = await attempt(placement, credential)
            except ProviderRejected as exc:
                if not _may_be_wrong_placement(exc):
                    raise
                refusal = refusal or exc  # the current credential's answer is the one to show
                if not _secret_refused(exc):
                    break  # not about the secret: another one will not do better here
                continue
            corrected = placement != order[0] and client.fixed_placement
            return Outcome(value, Authenticated(placement, order[0] if corrected else None))
        assert refusal is not None
        refused.append((placement, refusal))
    if len(refused) == 1:
        raise refused[0][1]
    raise _every_placement_refused(refused)


def _every_placement_refused(refused: list[tuple[Placement, ProviderRejected]]) -> ProviderRejected:
    """The provider refused the client wherever its credentials went: the id or secret is wrong
    (INVALID_SETTINGS), or, when every answer said the method itself is wrong, the provider
    wants another method, such as a client assertion (CLIENT_AUTH_METHOD). The error is the
    first (configured) placement's, with each placement's answer as evidence."""
    first = refused[0][1]
    evidence = "; ".join(f"{placement}: {_evidence(exc)}" for placement, exc in refused)
    method = all(exc.problem is Problem.CLIENT_AUTH_METHOD for _, exc in refused)
    return ProviderRejected(
        first.error,
        f"the client credentials were refused in every placement tried ({evidence})",
        status=first.status,
        problem=Problem.CLIENT_AUTH_METHOD if method else Problem.INVALID_SETTINGS,
        placements_refused=tuple(placement for placement, _ in refused),
    )


def _evidence(exc: ProviderRejected) -> str:
    text = exc.error
    if exc.description:
        description = exc.description
        if len(description) > _EVIDENCE_LIMIT:
            description = description[: _EVIDENCE_LIMIT - 1] + "…"
        text += f" {description!r}"
    return text + (f" (HTTP {exc.status})" if exc.status is not None else "")


def build_request(
    client: Client,
    url: str,
    params: Mapping[str, ParamValue],
    placement: Placement,
    credential: Credential,
) -> Request:
    """The HTTP request for `params` with the client's credentials where its method says, the
    body encoded as the client's `token_request_format` says. Pure: nothing is sent.

    Credentials come only from here: client_id, client_secret and client assertions in `params`
    are dropped. A client assertion's audience is the token endpoint unless the client names
    another, for revocation too (one audience identifies the authorization server).
    """
    fields: dict[str, ParamValue] = {
        key: value if isinstance(value, str) else list(value)
        for key, value in params.items()
        if key not in _CREDENTIAL_PARAMS
    }
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    made: tuple[str, ...] = ()
    if client.client_auth in {"private_key_jwt", "client_secret_jwt"} and credential is not None:
        assertion = jwt.client_assertion(
            client.client_id,
            client.assertion_audience or client.token_url,
            key=credential if isinstance(credential, jwt.SigningKey) else None,
            secret=credential if isinstance(credential, str) else None,
        )
        fields["client_id"] = client.client_id
        fields["client_assertion_type"] = jwt.CLIENT_ASSERTION_TYPE
        fields["client_assertion"] = assertion
        made = (assertion,)
    elif placement == "basic" and isinstance(credential, str):
        headers["Authorization"] = "Basic " + basic_credentials(client.client_id, credential)
    else:
        fields["client_id"] = client.client_id
        if isinstance(credential, str):
            fields["client_secret"] = credential
    if placement == "query":
        # Encoded by us, exactly as a form would be, and kept so: yarl must not re-encode it.
        base = str(URL(url))
        separator = "&" if URL(url).query_string else "?"
        query = URL(f"{base}{separator}{urlencode(fields, doseq=True)}", encoded=True)
        return Request("GET", query, None, headers, made)
    if client.token_request_format == "json":
        headers["Content-Type"] = "application/json"
        body = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(fields, doseq=True).encode("ascii")
    return Request("POST", URL(url), body, headers, made)
