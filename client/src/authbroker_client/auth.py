"""Send a connection's token with every request, and get a new one when the web service
refuses it, for httpx and for aiohttp.

    http = httpx.AsyncClient(auth=AuthbrokerAuth(broker, "acme-google"))
    session = aiohttp.ClientSession(middlewares=(AuthbrokerMiddleware(broker, "acme-google"),))

On a 401 or 403 the answer is reported to authbroker with its `WWW-Authenticate` header
(authbroker refreshes a token the service calls invalid), the cached token is dropped, and the
request is sent once more if authbroker then hands out a different token. Otherwise (a missing
scope, a refresh still pending) the service's answer is returned as it was. When authbroker
has no token any more the typed error (`ConnectionNotActive`, …) is raised from the request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse

    from authbroker_client.client import AuthbrokerClient

REFUSED = frozenset({401, 403})


async def _retry_authorization(
    broker: AuthbrokerClient,
    connection_id: str,
    sent: str,
    status: int,
    www_authenticate: str | None,
) -> str | None:
    """The `authorization` value to send again after `sent` was refused, or None when
    authbroker has nothing different to offer (sending the same again would be refused again)."""
    fresh = await broker.renew(connection_id, sent, status, www_authenticate)
    return None if fresh.authorization == sent else fresh.authorization


class AuthbrokerAuth(httpx.Auth):
    """httpx authentication with a connection's token (`httpx.AsyncClient` only)."""

    def __init__(self, broker: AuthbrokerClient, connection_id: str) -> None:
        self.broker = broker
        self.connection_id = connection_id

    def __repr__(self) -> str:
        return f"AuthbrokerAuth(connection_id={self.connection_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("AuthbrokerAuth works with httpx.AsyncClient, not httpx.Client")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response, None]:
        credentials = await self.broker.credentials(self.connection_id)
        request.headers["Authorization"] = credentials.authorization
        response = yield request
        if response.status_code not in REFUSED:
            return
        again = await _retry_authorization(
            self.broker,
            self.connection_id,
            credentials.authorization,
            response.status_code,
            response.headers.get("WWW-Authenticate"),
        )
        if again is not None:
            request.headers["Authorization"] = again
            yield request


class AuthbrokerMiddleware:
    """aiohttp client middleware (aiohttp 3.12 or later) with a connection's token: for every
    request of a session (`ClientSession(middlewares=(…,))`) or for one
    (`session.get(url, middlewares=(…,))`). Importing it does not need aiohttp."""

    def __init__(self, broker: AuthbrokerClient, connection_id: str) -> None:
        self.broker = broker
        self.connection_id = connection_id

    def __repr__(self) -> str:
        return f"AuthbrokerMiddleware(connection_id={self.connection_id!r})"

    async def __call__(
        self,
        request: ClientRequest,
        handler: Callable[[ClientRequest], Awaitable[ClientResponse]],
    ) -> Any:
        credentials = await self.broker.credentials(self.connection_id)
        request.headers["Authorization"] = credentials.authorization
        response = await handler(request)
        if response.status not in REFUSED:
            return response
        again = await _retry_authorization(
            self.broker,
            self.connection_id,
            credentials.authorization,
            response.status,
            response.headers.get("WWW-Authenticate"),
        )
        if again is None:
            return response
        response.release()
        request.headers["Authorization"] = again
        return await handler(request)
