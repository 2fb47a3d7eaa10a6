"""What every job needs, opened once per worker process and kept in arq's `ctx`."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from authbroker import netguard
from storage.resources import Resources

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

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> WorkerContext:
        return ctx[CTX_KEY]


def provider_session(allow_link_local: bool = False) -> aiohttp.ClientSession:
    """One HTTP session for all provider calls of a process: pooled connections, no cookies
    (a provider's cookies must not leak from one connection's request into another's), and a
    resolver that will not hand out metadata or link-local addresses."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=100,
            limit_per_host=20,
            ttl_dns_cache=300,
            resolver=netguard.resolver(allow_link_local),
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "authbroker"},
    )
