"""The CLI's client of authbroker's HTTP API: all of its network I/O, in one small class.

It knows URLs, the API key and the shape of errors (`{"error", "message", "fields"}`); it knows
nothing about commands or output, so the CLI's commands stay plain functions of data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

USER_AGENT = "authbroker-cli"


class ClientFailure(Exception):
    """Anything that kept a request from getting an answer it could use."""


class Unreachable(ClientFailure):
    """No HTTP answer at all: refused, unknown host, timeout, dropped connection."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach authbroker at {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(ClientFailure):
    """The API answered with an error status; `body` is its JSON error (or a stand-in)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(str(body.get("message") or f"HTTP {status}"))
        self.status = status
        self.body = body

    @property
    def error(self) -> str:
        return str(self.body.get("error") or "")

    @property
    def message(self) -> str:
        return str(self.body.get("message") or f"HTTP {self.status}")

    @property
    def fields(self) -> list[dict[str, str]]:
        fields = self.body.get("fields")
        return [f for f in fields if isinstance(f, dict)] if isinstance(fields, list) else []


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its stream id and its parsed JSON data."""

    id: str | None
    data: dict[str, Any]


def segment(value: str) -> str:
    """A path segment, escaped (names and connection ids may hold `:` or `@`)."""
    return quote(value, safe="")


class AuthbrokerClient:
    """`async with AuthbrokerClient(url, key) as api: await api.get("/v1/apps")`."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AuthbrokerClient:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use AuthbrokerClient in `async with`")
        return self._session

    def _headers(self, path: str, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        # The key goes only to the API, never to the browser-facing /oauth pages.
        if self.api_key and path.startswith("/v1/"):
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Any = None,
    ) -> tuple[int, Any]:
        """Send one request; the status and the decoded JSON body (None when empty).
        Raises ApiError for 4xx/5xx and Unreachable when there is no answer."""
        url = self.base_url + path
        try:
            async with self.session.request(
                method,
                url,
                json=body,
                params=params,
                headers=self._headers(path),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                text = await response.text()
                data = _decode(text)
                if response.status >= 400:
                    if not isinstance(data, dict) or "message" not in data:
                        snippet = " ".join(text.split())[:200]
                        data = {
                            "error": f"http_{response.status}",
                            "message": f"HTTP {response.status} {response.reason or ''}".strip()
                            + (f": {snippet}" if snippet else ""),
                        }
                    raise ApiError(response.status, data)
                return response.status, data
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(self.base_url, _reason(exc)) from None
        except TimeoutError:
            raise Unreachable(self.base_url, f"no answer within {self.timeout:g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise Unreachable(self.base_url, _reason(exc)) from None

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return (await self.request("GET", path, params=clean or None))[1]

    async def post(self, path: str, body: Any = None, params: Any = None) -> tuple[int, Any]:
        return await self.request("POST", path, body=body, params=params)

    async def patch(self, path: str, body: Any) -> Any:
        return (await self.request("PATCH", path, body=body))[1]

    async def put(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, params: Any = None) -> tuple[int, Any]:
        return await self.request("DELETE", path, params=params)

    async def authorization_status(self, authorization_id: str) -> dict[str, Any]:
        """The outcome of a started authorization (the page the callback follows, as JSON);
        the server holds the request up to 2 s while it is pending."""
        _, data = await self.request("GET", f"/oauth/status/{segment(authorization_id)}")
        if not isinstance(data, dict):
            raise ApiError(502, {"error": "bad_answer", "message": "status is not JSON"})
        return data

    async def events(
        self, params: list[tuple[str, str]], last_event_id: str | None = None
    ) -> AsyncIterator[ServerEvent]:
        """Follow `GET /v1/events` (server-sent events) until the server ends the stream."""
        headers = self._headers("/v1/events", accept="text/event-stream")
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = self.base_url + "/v1/events"
        # Keepalives come every 15 s: a minute of silence means the server is gone.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=60)
        try:
            async with self.session.get(
                url, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    data = _decode(text)
                    if not isinstance(data, dict) or "message" not in data:
                        data = {"error": f"http_{response.status}", "message": text[:200]}
                    raise ApiError(response.status, data)
                async for event in _parse_sse(response.content):
                    yield event
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(self.base_url, _reason(exc)) from None
        except TimeoutError:
            raise Unreachable(self.base_url, "the event stream went silent") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise Unreachable(self.base_url, _reason(exc)) from None


async def _parse_sse(content: aiohttp.StreamReader) -> AsyncIterator[ServerEvent]:
    """The text/event-stream format: `field: value` lines, events end at a blank line,
    lines starting with `:` are comments (keepalives)."""
    event_id: str | None = None
    data: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == "":
            if data:
                try:
                    parsed = json.loads("\n".join(data))
                except ValueError:
                    parsed = {"raw": "\n".join(data)}
                yield ServerEvent(event_id, parsed if isinstance(parsed, dict) else {"raw": parsed})
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def _decode(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        return str(os_error.strerror or os_error) if os_error else str(exc)
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
