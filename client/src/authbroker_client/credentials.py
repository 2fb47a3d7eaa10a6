"""Credentials as authbroker hands them out, and the cache that keeps a runtime from asking for
them on every request.

A token is kept until shortly before it expires: authbroker refreshes a token on demand when it
expires within 60 s (or half its life), so asking again at that moment gets the fresh one.
Concurrent callers for the same key share one request: fifty tasks starting at once cost
authbroker one answer, not fifty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

AHEAD = 60.0  # seconds before expiry at which a cached token is asked for again …
AHEAD_FRACTION = 0.5  # … or this share of its remaining life, whichever is smaller
WITHOUT_EXPIRY = 300.0  # seconds a token that names no expiry is kept
BASIC_TTL = 30.0  # seconds Basic credentials are kept (a rotated password shows up soon)


@dataclass(frozen=True)
class Credentials:
    """What a runtime sends: `authorization` is the whole header value (`Bearer …`,
    `Basic …`). The repr shows no token, password or header value."""

    type: str  # "oauth2" or "basic"
    authorization: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    token_type: str | None = None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    login: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_answer(cls, body: Mapping[str, Any]) -> Credentials:
        """From the JSON of `GET /v1/connections/{id}/credentials` or
        `GET /v1/basic/{name}/credentials`."""
        return cls(
            type=str(body.get("type", "oauth2")),
            authorization=str(body["authorization"]),
            access_token=body.get("access_token"),
            token_type=body.get("token_type"),
            expires_at=parse_time(body.get("expires_at")),
            scopes=tuple(body.get("scopes") or ()),
            login=body.get("login"),
            password=body.get("password"),
        )

    @property
    def headers(self) -> dict[str, str]:
        """`{"Authorization": …}`, to merge into a request's headers."""
        return {"Authorization": self.authorization}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as authbroker writes it (`2026-11-27T17:40:00Z`), timezone-aware."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def keep_for(expires_at: datetime | None, now: datetime | None = None) -> float:
    """Seconds a token expiring at `expires_at` may be served from the cache: until
    `min(60 s, half its remaining life)` before it expires; nothing once expired."""
    if expires_at is None:
        return WITHOUT_EXPIRY
    remaining = (expires_at - (now or datetime.now(UTC))).total_seconds()
    if remaining <= 0:
        return 0.0
    return remaining - min(AHEAD, remaining * AHEAD_FRACTION)


Fetch = Callable[[], Awaitable[tuple[Credentials, float]]]


class CredentialCache:
    """Credentials by key, each kept for the seconds its fetch said, with at most one fetch per
    key under way. `invalidate` drops a key and makes a fetch already under way for it not
    count: its answer may predate what made the caller invalidate (a refused token)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Credentials, float]] = {}
        self._fetching: dict[str, asyncio.Future[Credentials]] = {}
        self._generation: dict[str, int] = {}
        self._replacing: dict[str, str] = {}  # key -> the refused value its fetch replaces

    async def get(self, key: str, fetch: Fetch, *, replacing: str | None = None) -> Credentials:
        """The credentials kept for `key`, else the answer of `fetch()`, shared with every
        concurrent caller. `replacing`: an `authorization` the web service refused; it is not
        served again, and callers replacing the same value share one fetch (one report and one
        refresh for a burst of refused requests, not one each)."""
        kept = self._kept.get(key)
        if kept is not None and kept[1] > time.monotonic() and kept[0].authorization != replacing:
            return kept[0]
        if replacing is not None and self._replacing.get(key) != replacing:
            self.invalidate(key)  # what is under way, if anything, may hand out `replacing`
        shared = self._fetching.get(key)
        if shared is None:
            generation = self._generation.get(key, 0)
            shared = asyncio.ensure_future(self._fetch(key, fetch, generation))
            self._fetching[key] = shared
            if replacing is not None:
                self._replacing[key] = replacing
            shared.add_done_callback(lambda done: self._settle(key, done))
        # One caller giving up (cancelled) does not cancel the answer the others wait for.
        return await asyncio.shield(shared)

    async def _fetch(self, key: str, fetch: Fetch, generation: int) -> Credentials:
        credentials, seconds = await fetch()
        if seconds > 0 and self._generation.get(key, 0) == generation:
            self._kept[key] = (credentials, time.monotonic() + seconds)
        return credentials

    def _settle(self, key: str, done: asyncio.Future[Credentials]) -> None:
        if self._fetching.get(key) is done:
            del self._fetching[key]
            self._replacing.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have been cancelled meanwhile

    def invalidate(self, key: str) -> None:
        self._kept.pop(key, None)
        self._fetching.pop(key, None)
        self._replacing.pop(key, None)
        self._generation[key] = self._generation.get(key, 0) + 1
