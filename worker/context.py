"""What every job needs, opened once per worker process and kept in arq's `ctx`."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from authbroker import oauth
from authbroker.netguard import provider_session
from storage import connections
from storage.apps import App
from storage.resources import Resources
from worker.batching import Batcher

__all__ = ["CTX_KEY", "WorkerContext", "provider_session"]

CTX_KEY = "authbroker"


@dataclass
class WorkerContext:
    resources: Resources
    http: aiohttp.ClientSession
    # Identifies this process as a lease holder; unique across hosts and restarts.
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
    )
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # The refresh leases this process holds (connection id -> holder), renewed while held.
    leases: dict[str, str] = field(default_factory=dict)
    _claims: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _clients: dict[tuple[Any, ...], oauth.Client] = field(default_factory=dict, repr=False)
    # Refresh answers of this process, stored together when they arrive together.
    refreshes: Batcher[connections.Refreshed, bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.refreshes = Batcher(self._store_refreshes)

    async def _store_refreshes(self, batch: Sequence[connections.Refreshed]) -> list[bool]:
        stored = await connections.store_refreshes(self.resources.pool, self.resources.ring, batch)
        return [r.connection_id in stored for r in batch]

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> WorkerContext:
        return ctx[CTX_KEY]

    def new_holder(self) -> str:
        """A lease holder name unique to one claim: this process, and which of its claims."""
        return f"{self.worker_id}:{next(self._claims)}"

    def client(self, app: App) -> oauth.Client:
        """The app as the protocol needs it, its secrets opened once per version of the app row
        rather than once per refresh."""
        key = (
            app.id,
            app.updated_at,
            app.client_auth_detected,
            app.client_secret,
            app.client_secrets_previous,
        )
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) > 1000:
                self._clients.clear()
            client = self._clients[key] = app.client(self.resources.ring)
        return client

    @contextmanager
    def holding(self, connection_id: str, holder: str) -> Iterator[None]:
        """Keep a lease renewed while the block runs (see `worker.engine`)."""
        self.leases[connection_id] = holder
        try:
            yield
        finally:
            if self.leases.get(connection_id) == holder:
                del self.leases[connection_id]
