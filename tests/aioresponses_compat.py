"""aioresponses 0.7.9 against aiohttp 3.14: ClientResponse grew a required `stream_writer`
(pnuckowski/aioresponses#289). Mocked responses get a no-op one; nothing changes where the
installed aiohttp does not need it. Applied once for the whole session by tests/conftest.py."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
from aioresponses import core as aioresponses_core
from yarl import URL


class _CompatResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@contextlib.contextmanager
def aioresponses_compat() -> Iterator[None]:
    needs_it = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters
    original = aioresponses_core.ClientResponse
    if needs_it:
        aioresponses_core.ClientResponse = _CompatResponse  # type: ignore[misc]
    try:
        yield
    finally:
        aioresponses_core.ClientResponse = original  # type: ignore[misc]
