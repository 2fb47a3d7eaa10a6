"""Failed authentications per client address: a burst, then one more every few seconds, then
`429` with Retry-After (API keys on `/v1`, console sign-in).

Only failures take from an address's bucket, so a valid key costs one dictionary lookup. While
an address is refused, a key this process has already accepted still gets through: a runtime
behind the same NAT or proxy as a client guessing keys keeps working, and a guess is refused
before it is checked, so a throttled address learns nothing about its guesses.

The buckets live in the process: behind several web processes each keeps its own, so an
address gets up to that many bursts, and the same rate from each.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable

from aiohttp import web

# Addresses (and accepted keys) remembered at most; past it, those fully recovered are forgotten.
MAX_ENTRIES = 10_000
TRUSTED_SECONDS = 900.0


def client_address(request: web.Request) -> str:
    """The peer's address; an IPv6 peer by its /64, which one host may hold whole."""
    address = request.remote or ""
    if ":" in address:
        try:
            network = ipaddress.ip_network(f"{address}/64", strict=False)
        except ValueError:
            return address
        return str(network)
    return address


class FailureLimiter:
    """Token buckets of failures per address: `burst` at once, one more every `every` s."""

    def __init__(
        self, *, burst: int, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.every = every
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._trusted: dict[bytes, float] = {}  # digest of an accepted key -> until

    def _tokens(self, address: str, now: float) -> float:
        found = self._buckets.get(address)
        if found is None:
            return float(self.burst)
        tokens, at = found
        return min(float(self.burst), tokens + (now - at) / self.every)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may fail again, or None while it may."""
        if address not in self._buckets:
            return None
        now = self.clock()
        tokens = self._tokens(address, now)
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) * self.every))

    def failed(self, address: str) -> None:
        now = self.clock()
        tokens = self._tokens(address, now)
        self._buckets[address] = (max(0.0, tokens - 1), now)
        if len(self._buckets) > MAX_ENTRIES:
            self._forget_recovered(now)

    def trust(self, key: str) -> None:
        """Remember that `key` was accepted: it passes while its address is refused."""
        now = self.clock()
        self._trusted[_digest(key)] = now + TRUSTED_SECONDS
        if len(self._trusted) > MAX_ENTRIES:
            self._trusted = {k: t for k, t in self._trusted.items() if t > now}
            if len(self._trusted) > MAX_ENTRIES:
                self._trusted.clear()

    def trusted(self, key: str) -> bool:
        until = self._trusted.get(_digest(key))
        return until is not None and until > self.clock()

    def refused(self, address: str, key: str) -> int | None:
        """Seconds to wait when `address` is refused and `key` is not one accepted here."""
        wait = self.retry_after(address)
        return None if wait is None or self.trusted(key) else wait

    def _forget_recovered(self, now: float) -> None:
        self._buckets = {
            address: (tokens, at)
            for address, (tokens, at) in self._buckets.items()
            if self._tokens(address, now) < self.burst
        }
        if len(self._buckets) > MAX_ENTRIES:
            # Flooded from more addresses than remembered: start over rather than grow.
            self._buckets.clear()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# One limiter per application: API key failures on /v1, and console sign-ins.
API_FAILURES = web.AppKey("api_key_failures", FailureLimiter)
SIGN_IN_FAILURES = web.AppKey("console_sign_in_failures", FailureLimiter)


def api_limiter() -> FailureLimiter:
    return FailureLimiter(burst=30, every=2.0)


def sign_in_limiter() -> FailureLimiter:
    return FailureLimiter(burst=10, every=6.0)
