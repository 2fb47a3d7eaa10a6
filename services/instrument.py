"""Timing and counting provider calls, so every token request shows up in the metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from authbroker import oauth
from authbroker.metrics import TOKEN_REQUEST_SECONDS, TOKEN_REQUESTS


@contextlib.asynccontextmanager
async def token_request(app: str, grant: str) -> AsyncIterator[None]:
    """Outcome is `ok`, `unavailable`, `malformed` or the problem a refusal maps to: a small,
    fixed set of label values whatever the provider says."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except oauth.ProviderUnavailable:
        outcome = "unavailable"
        raise
    except oauth.ProviderMalformed:
        outcome = "malformed"
        raise
    except oauth.OAuthError as exc:
        outcome = str(exc.problem) if exc.problem else "rejected"
        raise
    finally:
        TOKEN_REQUESTS.labels(app, grant, outcome).inc()
        TOKEN_REQUEST_SECONDS.labels(app, grant).observe(time.perf_counter() - started)
