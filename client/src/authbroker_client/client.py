"""`AuthbrokerClient`: authbroker's HTTP API as a runtime uses it.

    async with AuthbrokerClient("http://authbroker:8080", api_key) as broker:
        credentials = await broker.credentials("acme-google")
        response = await http.get(url, headers=credentials.headers)

Credentials are cached (see `credentials.py`); a 503 is retried as its `Retry-After` says
while that fits in `max_wait`; every other error is raised typed (see `errors.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from authbroker_client.credentials import BASIC_TTL, CredentialCache, Credentials, keep_for
from authbroker_client.errors import AuthbrokerError, ServiceUnavailable, Unreachable, error_for
from authbroker_client.events import EventStream

log = logging.getLogger("authbroker_client")

USER_AGENT = "authbroker-client/0.1"
T = TypeVar("T")


class AuthbrokerClient:
    """One per runtime process (it holds the cache and a connection pool); async only.

    `http`: an `httpx.AsyncClient` of your own (proxies, TLS settings, event hooks); it is
    left open on `aclose()`. `timeout`: seconds for one request; keep it above 10 s, the
    longest authbroker waits for a refresh before answering. `max_wait`: seconds
    `credentials()` and `basic()` may spend waiting as a 503's `Retry-After` asks; 0 raises
    at once. `basic_ttl`: seconds Basic credentials are cached.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_wait: float = 30.0,
        basic_ttl: float = BASIC_TTL,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self.max_wait = max_wait
        self.basic_ttl = basic_ttl
        self._cache = CredentialCache()

    def __repr__(self) -> str:
        return f"AuthbrokerClient({self.base_url!r})"

    async def __aenter__(self) -> AuthbrokerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------ credentials

    async def credentials(self, connection_id: str) -> Credentials:
        """A valid access token of the connection, from the cache while it has well over a
        minute to live. Raises `NotFound`, `ConnectionNotActive` (authorize again: see
        `problem`, `detail`), `TokenUnavailable` (retry after `retry_after`)."""
        return await self._cache.get(_oauth2(connection_id), lambda: self._fetch(connection_id))

    async def renew(
        self,
        connection_id: str,
        refused: str,
        status: int,
        www_authenticate: str | None = None,
    ) -> Credentials:
        """Credentials to retry with after the web service refused the `authorization` value
        `refused` with `status` (401, 403): reported to authbroker (which refreshes a token the
        service calls invalid), then asked for afresh. Concurrent callers that saw the same
        value refused share one report. The answer may be the same value when authbroker has
        nothing better (a missing scope, a refresh still pending)."""

        async def fetch() -> tuple[Credentials, float]:
            try:
                await self.report(connection_id, status, www_authenticate)
            except AuthbrokerError as exc:  # asking for credentials says what is wrong, if any
                log.warning("report to authbroker failed: %s", exc)
            return await self._fetch(connection_id)

        return await self._cache.get(_oauth2(connection_id), fetch, replacing=refused)

    async def _fetch(self, connection_id: str) -> tuple[Credentials, float]:
        path = f"/v1/connections/{quote(connection_id, safe='')}/credentials"
        found = Credentials.from_answer(await self._waiting(lambda: self._call("GET", path)))
        return found, keep_for(found.expires_at)

    async def basic(self, name: str) -> Credentials:
        """The Basic credential `name` (`login`, `password`, `authorization`), cached for
        `basic_ttl` seconds. Raises `NotFound`."""

        async def fetch() -> tuple[Credentials, float]:
            path = f"/v1/basic/{quote(name, safe='')}/credentials"
            body = await self._waiting(lambda: self._call("GET", path))
            return Credentials.from_answer(body), self.basic_ttl

        return await self._cache.get(f"basic:{name}", fetch)

    def invalidate(self, connection_id: str) -> None:
        """Forget the connection's cached token: the next `credentials()` asks authbroker."""
        self._cache.invalidate(_oauth2(connection_id))

    def invalidate_basic(self, name: str) -> None:
        self._cache.invalidate(f"basic:{name}")

    async def report(
        self, connection_id: str, status: int, www_authenticate: str | None = None
    ) -> dict[str, Any]:
        """Tell authbroker the web service refused the token (401 or 403) and what its
        `WWW-Authenticate` said: it refreshes a token the service calls invalid (waiting up to
        10 s for the outcome) and records a missing scope; a token without a refresh token is
        checked (`invalidated` when confirmed dead, else `counted`). Returns authbroker's
        answer (`action`: `refreshed`, `refresh_attempted`, `recorded`, `invalidated`,
        `counted` or `none`)."""
        body: dict[str, Any] = {"status": status}
        if www_authenticate:
            body["www_authenticate"] = www_authenticate
        path = f"/v1/connections/{quote(connection_id, safe='')}/report"
        return await self._call("POST", path, json=body)

    def events(self, *, group: str, consumer: str, **options: Any) -> EventStream:
        """The auth events, each handed to one consumer of `group`. Options: `redis_url`,
        `prefix` (`authbroker`), `from_start` (False), `dedup_size` (10,000); see
        `EventStream`."""
        return EventStream(self, group=group, consumer=consumer, **options)

    # ------------------------------------------------------------------ HTTP

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "User-Agent": USER_AGENT}

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        """One request; the JSON answer, or the typed error."""
        try:
            response = await self._http.request(
                method,
                self.base_url + path,
                json=json,
                headers={**self._headers(), "Accept": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            raise Unreachable(f"{method} {self.base_url}{path}: {type(exc).__name__}") from exc
        if response.is_success:
            return response.json()
        raise error_for(response.status_code, _json_or_text(response), response.headers)

    async def _waiting(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """`call()`, again after each 503's `Retry-After` while the waits fit in `max_wait`."""
        deadline = time.monotonic() + self.max_wait
        while True:
            try:
                return await call()
            except ServiceUnavailable as exc:
                wait = exc.retry_after
                if wait is None or time.monotonic() + wait > deadline:
                    raise
                log.info("authbroker unavailable (%s); retrying in %g s", exc.error, wait)
                await asyncio.sleep(wait)

    @asynccontextmanager
    async def stream(
        self, path: str, *, params: Any = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET (server-sent events): the open response, or the typed error."""
        timeout = httpx.Timeout(self._timeout, read=60.0)  # keepalives come every 15 s
        try:
            async with self._http.stream(
                "GET",
                self.base_url + path,
                params=params,
                headers={**self._headers(), **(headers or {})},
                timeout=timeout,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_for(response.status_code, _json_or_text(response), response.headers)
                yield response
        except httpx.TransportError as exc:
            raise Unreachable(f"GET {self.base_url}{path}: {type(exc).__name__}") from exc


def _oauth2(connection_id: str) -> str:
    return f"oauth2:{connection_id}"


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
