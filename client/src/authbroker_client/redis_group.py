"""Entries of the Redis stream `{prefix}:events` through a consumer group: each entry goes to
one consumer of the group and stays pending until acknowledged.

Reading starts with this consumer's own pending entries (what a previous run of it received
but did not acknowledge), then takes new ones. Use a stable consumer name (not a random pod
name) so that a restarted consumer gets its pending entries back.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

BATCH = 100  # entries per XREADGROUP
BLOCK_MS = 5_000  # how long one read waits for new entries


class GroupReader:
    name = "redis"

    def __init__(self, redis: Redis, stream: str, group: str, consumer: str) -> None:
        self._redis = redis
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._buffer: deque[tuple[str, dict[str, Any] | None]] = deque()
        self._pending_after: str | None = "0"  # None once the pending entries are read

    @classmethod
    async def connect(
        cls, url: str, stream: str, group: str, consumer: str, *, from_start: bool
    ) -> GroupReader | None:
        """A reader with its group in place (created from the first entry or from now when
        missing), or None when Redis cannot be reached. A refused password is raised."""
        redis = Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
        try:
            await redis.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                await redis.aclose()
                raise
        except AuthenticationError:
            await redis.aclose()
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await redis.aclose()
            return None
        return cls(redis, stream, group, consumer)

    async def next(self) -> tuple[str, str | None]:
        """The next entry's id and event JSON (None for an entry trimmed meanwhile)."""
        while not self._buffer:
            if self._pending_after is not None:
                entries = await self._read(self._pending_after)
                if entries:
                    self._pending_after = entries[-1][0]
                else:
                    self._pending_after = None
            else:
                entries = await self._read(">", block=BLOCK_MS)
            self._buffer.extend(entries)
        entry_id, fields = self._buffer.popleft()
        return entry_id, (fields or {}).get("event")

    async def _read(self, after: str, block: int | None = None) -> list[Any]:
        found = await self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: after}, count=BATCH, block=block
        )
        return list(found[0][1]) if found else []

    async def ack(self, entry_ids: list[str]) -> None:
        await self._redis.xack(self._stream, self._group, *entry_ids)

    async def aclose(self) -> None:
        await self._redis.aclose()
