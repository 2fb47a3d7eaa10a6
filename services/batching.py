"""Group commit for refresh results: writes that arrive while one is in flight go together in
the next, so a busy worker stores many refreshes per round trip and per commit, and an idle one
stores each at once (no waiting to fill a batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await submit(item)` returns what `flush` gave for it; `flush(items)` returns one result
    per item, in order. One flush runs at a time; at most `limit` items go in one."""

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, limit: int = 200):
        self._flush = flush
        self._limit = limit
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        # Shielded: a caller that gives up does not cancel the write others share.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
