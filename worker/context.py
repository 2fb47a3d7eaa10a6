"""What every job needs, opened once per worker process and kept in arq's `ctx`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from authbroker.netguard import provider_session
from services.context import Context

__all__ = ["CTX_KEY", "WorkerContext", "provider_session"]

CTX_KEY = "authbroker"


@dataclass
class WorkerContext(Context):
    """The context of a worker process, kept in arq's `ctx`, with the tasks it runs besides
    jobs (the refresh engine's, the relay, the gauges)."""

    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def of(cls, ctx: dict[str, Any]) -> WorkerContext:
        return ctx[CTX_KEY]
