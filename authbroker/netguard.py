"""Which addresses a provider endpoint may be: never a cloud metadata service or a link-local
address, and in production never a loopback or private one unless the operator allows its
network, however the host is spelt (legacy numeric forms, Unicode digits) and whatever a host
name resolves to.

Checked twice: when an operator saves a URL (a clear 400), and when authbroker connects: every
request to a provider goes through `provider_session`, whose connector's socket factory sees
every address it is about to connect to, names' and IP literals' alike (a host whose DNS changes
later still cannot reach the metadata service).
AUTHBROKER_ALLOW_LINK_LOCAL=1 lifts the link-local rule for the rare provider that really lives
there; AUTHBROKER_ALLOWED_NETWORKS lets production reach the private networks it lists.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services outside the link-local ranges: AWS's IPv6 endpoint, Alibaba Cloud's.
METADATA = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# Loopback, private (RFC 1918, RFC 4193) and carrier-grade NAT (RFC 6598) networks: what a
# production broker must not be steered into reaching (server-side request forgery).
PRIVATE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
    )
)


@dataclass(frozen=True)
class Rules:
    """What provider addresses this deployment may reach (`Settings.outbound`)."""

    allow_link_local: bool = False
    # Production: loopback and private addresses only within `allowed_networks`.
    refuse_private: bool = False
    allowed_networks: tuple[Network, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` must not be contacted, or None."""
        # ::1 lies in IPv6's reserved ::/8, yet is a plain unicast loopback address.
        reserved = address.is_reserved and not address.is_loopback
        if address.is_multicast or address.is_unspecified or reserved:
            return "is not a unicast address"
        if not self.allow_link_local and (address.is_link_local or address in METADATA):
            return "is a link-local or cloud metadata address"
        if (
            self.refuse_private
            and any(address in n for n in PRIVATE)
            and not any(address in n for n in self.allowed_networks)
        ):
            return (
                "is a loopback or private address (production reaches those only within "
                "AUTHBROKER_ALLOWED_NETWORKS)"
            )
        return None


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
    host = host.strip("[]").split("%", 1)[0]  # an IPv6 zone (`fe80::1%eth0`) is no other host
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


def host_reason(host: str, rules: Rules) -> str | None:
    """Why a host, as written, must not be contacted; None when it is a name or a fine address."""
    address = literal_address(host)
    reason = rules.refusal(address) if address is not None else None
    if reason and str(address) != host:
        return f"means {address}, which {reason}"
    return reason


async def resolved_reason(host: str, rules: Rules) -> str | None:
    """Why a host name must not be contacted, judged by what it resolves to now. A name that does
    not resolve here is not refused: it may resolve where the workers run."""
    if literal_address(host) is not None:
        return host_reason(host, rules)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        address = literal_address(str(info[4][0]))
        reason = rules.refusal(address) if address is not None else None
        if reason:
            return f"resolves to {address}, which {reason}"
    return None


class ForbiddenAddress(OSError):
    """A connection the outbound rules forbid; nothing was sent."""


def socket_factory(rules: Rules) -> Callable[[AddrInfoType], socket.socket]:
    """For aiohttp's connector: a socket for each address it connects to, refusing (`ForbiddenAddress`,
    which fails the request before anything is sent) those the rules forbid."""

    def create(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = literal_address(str(sockaddr[0]))
        reason = rules.refusal(address) if address is not None else None
        if reason:
            raise ForbiddenAddress(f"refusing to connect to {sockaddr[0]}: it {reason}")
        return socket.socket(family=family, type=type_, proto=proto)

    return create


def provider_session(rules: Rules | None = None, *, per_host: int = 20) -> aiohttp.ClientSession:
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
            socket_factory=socket_factory(rules or Rules()),
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "authbroker"},
    )
