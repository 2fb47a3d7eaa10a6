"""One HTTP exchange with a provider: send a request built elsewhere, read its answer within
limits, and turn transport failures into `ProviderUnavailable`.

Redirects are never followed (RFC 9700 §4.11, SSRF hygiene) and bodies are read up to a cap.
Each request has two limits: a short one to connect (a request never sent is safe to retry at
once) and a long one for the answer once it is sent. When a sent request's answer is lost
(timed out, connection dropped), `ProviderUnavailable.answer_lost` says so.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Literal

import aiohttp
from yarl import URL

from authbroker import netguard
from authbroker.oauth.errors import ProviderMalformed, ProviderUnavailable

__all__ = ["Reply", "Request", "Timeouts", "retry_after_seconds", "send"]

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str  # media type, lower case, no parameters ("" when absent)
    body: bytes = field(repr=False)
    too_large: bool
    retry_after: float | None


@dataclass(frozen=True)
class Request:
    """A request as built, ready to send: the body already encoded (form or JSON)."""

    method: Literal["GET", "POST"]
    url: URL = field(repr=False)  # carries secrets with the "query" placement
    body: bytes | None = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    # Secrets made for this request alone (a client assertion), for the redactor.
    secrets: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Timeouts:
    """How long one request may take: `connect` to get a connection (pool wait, DNS, TCP, TLS),
    then `answer` for the provider's answer once the request is sent. The answer wait is the
    long one: a refresh's answer carries the only copy of a rotated refresh token."""

    answer: float = 60.0
    connect: float = 10.0

    @classmethod
    def of(cls, answer: float, connect: float | None = None) -> Timeouts:
        return cls(answer, min(answer, 10.0) if connect is None else connect)


async def send(
    session: aiohttp.ClientSession, request: Request, *, timeouts: Timeouts, max_body: int
) -> Reply:
    """Send one request and read its answer, turning transport failures into OAuthErrors.

    A failure before the connection stood (refused, unresolvable, connect timeout) means the
    provider never saw the request; any later one means it may have (`answer_lost`).
    Exceptions are raised `from None`: the underlying aiohttp error may quote the URL, which
    carries the secret and the code with the "query" placement.
    """
    host = request.url.host
    try:
        # asyncio.timeout bounds the whole exchange, reading the body included; aiohttp's own
        # limits tell the connect phase apart.
        async with (
            asyncio.timeout(timeouts.connect + timeouts.answer),
            session.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                allow_redirects=False,
                raise_for_status=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeouts.connect, sock_read=timeouts.answer
                ),
            ) as response,
        ):
            return await _read(response, max_body)
    except aiohttp.ConnectionTimeoutError:
        raise ProviderUnavailable(
            "connect_timeout", f"no connection to {host} within {timeouts.connect:g} s"
        ) from None
    except TimeoutError:
        raise ProviderUnavailable(
            "timeout", f"no answer from {host} within {timeouts.answer:g} s", answer_lost=True
        ) from None
    except aiohttp.InvalidURL:
        raise ProviderMalformed("invalid_url", "the endpoint URL is not a valid URL") from None
    except aiohttp.ClientConnectorError as exc:
        # The outbound rules refused the address, not the provider: nothing was sent.
        if isinstance(exc.os_error, netguard.ForbiddenAddress):
            raise ProviderUnavailable("address_refused", str(exc.os_error)) from None
        raise ProviderUnavailable(
            "connection_error", f"{type(exc).__name__} connecting to {host}"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ProviderUnavailable(
            "connection_error", f"{type(exc).__name__} talking to {host}", answer_lost=True
        ) from None


async def _read(response: aiohttp.ClientResponse, max_body: int) -> Reply:
    """Read at most `max_body` bytes; a redirect's body is not read at all."""
    mime = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if 300 <= response.status < 400:
        return Reply(response.status, mime, b"", False, retry_after)
    declared = response.content_length
    if declared is not None and declared > max_body:
        response.close()
        return Reply(response.status, mime, b"", True, retry_after)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_body:
            response.close()
            return Reply(response.status, mime, b"", True, retry_after)
    return Reply(response.status, mime, bytes(body), False, retry_after)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Garbage gives None (no advice); a date in the past gives 0. No upper bound is imposed here:
    the caller's backoff policy decides how long it is willing to wait.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC without a claim about the origin's zone
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - time.time())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
