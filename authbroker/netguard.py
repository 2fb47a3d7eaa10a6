"""Which addresses a provider endpoint may not be: cloud metadata services and link-local
addresses, however the host is spelt (legacy numeric forms, Unicode digits) and whatever a host
name resolves to.

Checked twice: when an operator saves a URL (a clear 400), and when authbroker connects (a host
whose DNS changes later still cannot reach the metadata service: every request to a provider
goes through `provider_session`). AUTHBROKER_ALLOW_LINK_LOCAL=1 lifts both for the rare
provider that really lives there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services outside the link-local ranges: AWS's IPv6 endpoint, Alibaba Cloud's.
METADATA = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)


def normalized_host(url: str) -> str | None:
    """The host a client will really contact (IDNA: '169。254。169。254' is 169.254.169.254)."""
    try:
        host = URL(url).host
    except (ValueError, UnicodeError):
        return None
    return host.rstrip(".").strip("[]") if host else None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally, including the legacy IPv4 spellings resolvers still
    accept (`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`)."""
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fA-Fx.]+", host):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def forbidden_reason(address: IPAddress) -> str | None:
    if address.is_link_local or address in METADATA:
        return "is a link-local or cloud metadata address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "is not a unicast address"
    return None


def host_reason(host: str) -> str | None:
    """Why a host, as written, must not be contacted; None when it is a name or a fine address."""
    address = literal_address(host)
    reason = forbidden_reason(address) if address is not None else None
    if reason and str(address) != host:
        return f"means {address}, which {reason}"
    return reason


async def resolved_reason(host: str) -> str | None:
    """Why a host name must not be contacted, judged by what it resolves to now. A name that does
    not resolve here is not refused: it may resolve where the workers run."""
    if literal_address(host) is not None:
        return host_reason(host)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        address = literal_address(str(info[4][0]))
        reason = forbidden_reason(address) if address is not None else None
        if reason:
            return f"resolves to {address}, which {reason}"
    return None


class ForbiddenAddress(OSError):
    """A host resolves only to addresses authbroker may not contact."""


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses to hand out forbidden addresses."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not forbidden_reason(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise ForbiddenAddress(
                f"refusing to connect to {host}: it resolves only to forbidden addresses"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def resolver(allow_link_local: bool) -> Any:
    return DefaultResolver() if allow_link_local else GuardedResolver()


def provider_session(
    allow_link_local: bool = False, *, per_host: int = 20
) -> aiohttp.ClientSession:
    """One HTTP session for all provider calls of a process: pooled connections, no cookies
    (a provider's cookies must not leak from one connection's request into another's), and a
    resolver that will not hand out metadata or link-local addresses. `per_host` should cover
    the refreshes a worker runs at once: a request waiting for a pooled connection is waiting
    to connect."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max(100, per_host),
            limit_per_host=per_host,
            ttl_dns_cache=300,
            resolver=resolver(allow_link_local),
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "authbroker"},
    )
