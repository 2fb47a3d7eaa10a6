"""Structured logs: JSON lines for machines, console rendering for people, secrets never.

Redaction is a processor rather than a habit: whatever a caller binds, a value under a key that
names a token, secret, password, code, verifier or authorization header is replaced before any
renderer sees it, however deep in dicts and lists it sits.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# Key names whose values are secret. `code` alone is an authorization code; keys such as
# `status_code` or `error_code` are not secrets and are matched out by the word boundaries.
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(access_token|refresh_token|id_token|token|tokens|secret|client_secret|secrets|"
    r"password|passwd|code|verifier|code_verifier|authorization|api_key|apikey|cookie|"
    r"set-cookie|private_key|key_material|encryption_keys)$",
    re.IGNORECASE,
)
_SAFE_KEYS = frozenset({"status_code", "error_code", "http_code", "token_type", "token_url"})


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered not in _SAFE_KEYS and bool(_SECRET_KEY.search(lowered))


def redact(value: Any) -> Any:
    """Return `value` with every secret-named entry replaced, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in event_dict.items()}


def configure_logging(fmt: str | None = None, level: str = "info") -> None:
    """Configure structlog (and route stdlib logging through the same renderer)."""
    console = fmt == "console" or (fmt is None and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # aiohttp's access log would print callback URLs, which carry codes and states; arq and
    # pgserver narrate every job and command, which our own events already say better.
    for noisy in ("aiohttp.access", "arq", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
