"""Authorization server discovery (RFC 8414, OpenID Connect Discovery 1.0).

`discover` reads an issuer's metadata and turns it into app fields, so that an operator can add
an app from nothing but the issuer URL. It is strict where being lenient would be unsafe:

- The metadata's `issuer` must equal the requested one (RFC 8414 §3.3): a document naming
  another issuer may be an impersonation and would send client secrets elsewhere.
- Redirects are not followed (a 3xx is an error naming its Location), bodies are capped at 1 MB,
  and the whole exchange has a timeout: the issuer URL comes from an operator, but what answers
  it does not.
- Endpoint URLs pass the same checks as an app's URLs (https, or http for loopback hosts).
- The issuer becomes the app's `issuer`, so that callbacks naming another are refused (RFC 9207
  mix-up defence); a server whose metadata says `authorization_response_iss_parameter_supported`
  always names it, so the app also gets `require_iss`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from authbroker.schemas import check_url

__all__ = ["MAX_BODY", "DiscoveryError", "discover", "well_known_urls"]

MAX_BODY = 1024 * 1024
_CHUNK = 64 * 1024


class DiscoveryError(Exception):
    """Metadata could not be read or used; the message names the URL and says why."""


class _NotHere(DiscoveryError):
    """This well-known URL has no metadata (a 4xx, or a page that is not JSON): try the next."""


def well_known_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be, in the order they are tried.

    RFC 8414 §3.1 inserts the well-known segment between the host and the issuer's path
    (`https://as.example/tenant1` → `https://as.example/.well-known/oauth-authorization-server
    /tenant1`); OpenID Connect Discovery §4 appends it to the issuer.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    origin = f"{parts.scheme}://{parts.netloc}"
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


async def discover(
    session: aiohttp.ClientSession,
    issuer: str,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - per request, like the token requests in oauth
    has_signing_key: bool = False,
) -> dict[str, Any]:
    """The app fields an issuer's metadata gives: authorization_url, token_url, revoke_url,
    client_auth, pkce, issuer, require_iss and scopes (always [], scopes are the operator's
    choice), plus `_scopes_supported` and `_metadata_url` for display. `has_signing_key`: the
    app has a private key, so private_key_jwt is preferred where the server takes it. Raises
    DiscoveryError.
    """
    _check_issuer(issuer)
    misses: list[str] = []
    for url in well_known_urls(issuer):
        try:
            metadata = await _fetch(session, url, timeout)
        except _NotHere as exc:
            misses.append(str(exc))
            continue
        return _app_fields(metadata, issuer, url, has_signing_key)
    raise DiscoveryError(f"no authorization server metadata for {issuer}: {'; '.join(misses)}")


def _check_issuer(issuer: str) -> None:
    try:
        check_url(issuer, allow_http=False)
    except ValueError as exc:
        raise DiscoveryError(f"issuer {issuer!r} {exc}") from None
    if urlsplit(issuer).query:
        raise DiscoveryError(f"issuer {issuer!r} must not have a query (RFC 8414 §2)")


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    timeout: float,  # noqa: ASYNC109 - passed on from discover()
) -> dict[str, Any]:
    """The JSON object at `url`, read without following redirects and up to MAX_BODY bytes."""
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(
                url,
                headers={"Accept": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response,
        ):
            if 300 <= response.status < 400:
                location = response.headers.get("Location", "(no Location)")
                raise DiscoveryError(
                    f"{url} redirects ({response.status}) to {location}; redirects are not "
                    "followed: use the issuer the server names there"
                )
            if 400 <= response.status < 500:
                raise _NotHere(f"{url} answered {response.status}")
            if response.status != 200:
                raise DiscoveryError(f"{url} answered {response.status}")
            body = await _read(response, url)
    except TimeoutError:
        raise DiscoveryError(f"{url} did not answer within {timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise DiscoveryError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from None
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NotHere(f"{url} is not JSON") from None
    if not isinstance(data, dict):
        raise _NotHere(f"{url} is not a JSON object")
    return data


async def _read(response: aiohttp.ClientResponse, url: str) -> bytes:
    too_large = DiscoveryError(f"{url} is larger than {MAX_BODY // 1024} KiB")
    if (response.content_length or 0) > MAX_BODY:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > MAX_BODY:
            raise too_large
    return bytes(body)


def _app_fields(
    metadata: dict[str, Any], issuer: str, url: str, has_signing_key: bool
) -> dict[str, Any]:
    if metadata.get("issuer") != issuer:
        raise DiscoveryError(
            f"{url} names issuer {metadata.get('issuer')!r}, not {issuer!r} (RFC 8414 §3.3 "
            "requires them identical); if the server is the right one, discover with its issuer"
        )
    return {
        "authorization_url": _endpoint(metadata, "authorization_endpoint", url, required=True),
        "token_url": _endpoint(metadata, "token_endpoint", url, required=True),
        "revoke_url": _endpoint(metadata, "revocation_endpoint", url, required=False),
        "client_auth": _client_auth(
            metadata.get("token_endpoint_auth_methods_supported"), url, has_signing_key
        ),
        "pkce": _pkce(metadata.get("code_challenge_methods_supported")),
        "issuer": issuer,
        "require_iss": metadata.get("authorization_response_iss_parameter_supported") is True,
        "scopes": [],
        "_scopes_supported": _strings(metadata.get("scopes_supported")),
        "_metadata_url": url,
    }


def _endpoint(metadata: dict[str, Any], key: str, url: str, *, required: bool) -> str | None:
    value = metadata.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"{url} has no {key}")
    try:
        return check_url(value, allow_http=False)
    except ValueError as exc:
        raise DiscoveryError(f"{url}: {key} {value!r} {exc}") from None


def _client_auth(methods: Any, url: str, has_signing_key: bool) -> str:
    """RFC 8414 §2: absent means client_secret_basic. private_key_jwt first when the app has a
    key to sign with (no shared secret crosses the wire); then Basic, preferred over the body
    because RFC 6749 §2.3.1 makes it the method every server must support; a server that takes
    only JWTs gets private_key_jwt (a key is made for the app), or client_secret_jwt."""
    if methods is None:
        return "basic"
    methods = _strings(methods)
    if has_signing_key and "private_key_jwt" in methods:
        return "private_key_jwt"
    if "client_secret_basic" in methods:
        return "basic"
    if "client_secret_post" in methods:
        return "body"
    if "none" in methods:
        return "body"  # public clients only: the client_id goes in the body
    for method in ("private_key_jwt", "client_secret_jwt"):
        if method in methods:
            return method
    raise DiscoveryError(
        f"{url}: token endpoint supports none of client_secret_basic, client_secret_post, "
        f"private_key_jwt and client_secret_jwt (it lists {', '.join(methods) or 'nothing'})"
    )


def _pkce(methods: Any) -> bool:
    """Absent says nothing, and PKCE costs nothing where it is ignored: on unless S256 is not
    among the listed methods."""
    return methods is None or "S256" in _strings(methods)


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]
