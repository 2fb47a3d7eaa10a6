"""What use cases that talk to providers need, opened once per process: the resources, one
HTTP session, and the state a process keeps across refreshes (its leases, its opened clients,
the refresh answers waiting to be stored together)."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from authbroker import oauth
from services.batching import Batcher
from storage import connections
from storage.apps import App
from storage.resources import Resources


@dataclass
class Context:
    resources: Resources
    http: aiohttp.ClientSession
    # Identifies this process as a lease holder; unique across hosts and restarts.
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
    )
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

    def new_holder(self) -> str:
        """A lease holder name unique to one claim: this process, and which of its claims."""
        return f"{self.worker_id}:{next(self._claims)}"

    def client(self, app: App, settings: Mapping[str, str] | None = None) -> oauth.Client:
        """The app as the protocol needs it for a connection with these connection `settings`
        (its URLs filled with them), its secrets opened once per version of the app row and
        settings rather than once per refresh."""
        used = tuple(sorted((settings or {}).items())) if app.connection_settings else ()
        key = (
            app.id,
            app.updated_at,
            app.client_auth_detected,
            app.client_secret,
            app.client_secrets_previous,
            used,
        )
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) > 1000:
                self._clients.clear()
            client = self._clients[key] = app.for_connection(settings).client(self.resources.ring)
        return client

    @contextmanager
    def holding(self, connection_id: str, holder: str) -> Iterator[None]:
        """Keep a lease renewed while the block runs (the refresh engine renews them)."""
        self.leases[connection_id] = holder
        try:
            yield
        finally:
            if self.leases.get(connection_id) == holder:
                del self.leases[connection_id]
