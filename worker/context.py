"""What every job needs, opened once per worker process and kept in arq's `ctx`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from authbroker import netguard
from services.context import Context

CTX_KEY = "authbroker"


@dataclass
class WorkerContext(Context):
    """The context of a worker process, kept in arq's `ctx`, with the tasks it runs besides
    jobs (the refresh engine's, the relay, the gauges)."""

    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> WorkerContext:
        return ctx[CTX_KEY]


def provider_session(
    rules: netguard.Rules | None = None, *, per_host: int = 20
) -> aiohttp.ClientSession:
    """One HTTP session for all provider calls of a process: pooled connections, no cookies
    (a provider's cookies must not leak from one connection's request into another's), and
    sockets only to addresses the outbound `rules` allow (by default: no metadata or link-local
    address), whether a name resolved to it or a URL wrote it. `per_host` should cover the
    refreshes a worker runs at once: a request waiting for a pooled connection is waiting to
    connect."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max(100, per_host),
            limit_per_host=per_host,
            ttl_dns_cache=300,
            socket_factory=netguard.socket_factory(rules or netguard.Rules()),
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "authbroker"},
    )
