"""Structured logs: JSON lines for machines, console rendering for people, secrets never.

Redaction is a processor rather than a habit: whatever a caller binds, a value under a key that
names a token, secret, password, code, verifier or authorization header is replaced before any
renderer sees it, however deep in dicts and lists it sits; so are secrets quoted inside text
(`client_secret=…`, `Bearer …`, a URL's password) and the Basic credentials authbroker builds,
even without their `Basic ` prefix.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# Words that make a key's value secret, in any spelling: `refresh_token`, `accessToken`,
# `X-Api-Key`, `client_secrets_previous`. `code`, `authorization` and `cookie` count only as the
# last word (`Authorization`, `set_cookie`), so `authorization_url` and `status_code` stay readable.
_SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "secret",
        "secrets",
        "password",
        "passwords",
        "passwd",
        "passphrase",
        "verifier",
        "cookies",
        "apikey",
        "credential",
        "credentials",
        "assertion",
        "dsn",
    }
)
_SECRET_LAST_WORDS = frozenset({"code", "authorization", "cookie"})
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("api", "keys"),
        ("private", "key"),
        ("encryption", "key"),
        ("encryption", "keys"),
        ("set", "cookie"),
        ("auth", "header"),
        ("authorization", "header"),
        ("database", "url"),
        ("redis", "url"),
    }
)
# Secrets inside text (an exception message quoting a URL or a header): scrubbed wherever they
# appear in a string value, after exception text has been added to the line.
_SECRET_IN_TEXT = re.compile(
    r"(?i)((?:client_secret|code_verifier|code|refresh_token|access_token|id_token|token|"
    r"password|assertion)=)[^&\s\"']+|\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+"
    r"|(://[^:/@\s]+:)[^@\s]+(@)"
)


# The Basic credentials authbroker builds (RFC 6749 §2.3.1: base64 of form-urlencoded
# "id:secret"), without their "Basic " prefix: known by what they decode to, wherever they stand.
_BASE64_WORD = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{8,}={0,2}(?![A-Za-z0-9+/=])")
_FORM_PAIR = re.compile(r"[A-Za-z0-9._~%+-]+:[A-Za-z0-9._~%+-]+")


def _is_basic_credentials(word: str) -> bool:
    try:
        decoded = base64.b64decode(word.rstrip("=") + "=" * (-len(word.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return False
    return decoded.isascii() and _FORM_PAIR.fullmatch(decoded.decode("ascii")) is not None


def _scrub_text(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1) + REDACTED
        if match.group(2):
            return f"{match.group(2)} {REDACTED}"
        return f"{match.group(3)}{REDACTED}{match.group(4)}"

    def basic(match: re.Match[str]) -> str:
        return REDACTED if _is_basic_credentials(match.group(0)) else match.group(0)

    return _BASE64_WORD.sub(basic, _SECRET_IN_TEXT.sub(replace, text))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(_scrub(v) for v in value)
    return value


_HARMLESS = frozenset(
    {
        "token_type",
        "token_url",
        "token_endpoint",
        "token_params",
        "status_code",
        "error_code",
        "http_code",
        "response_code",
        "exit_code",
    }
)


def _words(key: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return [w for w in re.split(r"[_\-.\s]+", snake.lower()) if w]


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    words = _words(key)
    if "_".join(words) in _HARMLESS:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    if words and words[-1] in _SECRET_LAST_WORDS:
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def redact(value: Any) -> Any:
    """Return `value` with every secret-named entry replaced, at any depth."""
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(redact(v) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in event_dict.items()}


def scrub_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last before rendering: secrets quoted inside text at any depth, tracebacks included."""
    return {k: _scrub(v) for k, v in event_dict.items()}


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
        processors=[*shared, structlog.processors.format_exc_info, scrub_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub_processor,
                renderer,
            ],
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
