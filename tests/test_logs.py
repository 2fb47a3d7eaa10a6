"""Structured logs (authbroker/logs.py): JSON lines, and never a secret in them.

The redaction processor is checked on its own (which keys are secret, at any depth) and through
the real pipeline: configure_logging, a structlog logger and the stdlib root logger writing to a
captured stderr, read back line by line as an operator's log collector would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from authbroker.logs import REDACTED, configure_logging, get_logger, is_secret_key, redact
from authbroker.oauth import basic_credentials

SECRET_KEYS = [
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "session_token",
    "client_secret",
    "secret",
    "password",
    "db_password",
    "passwd",
    "code",
    "auth_code",
    "code_verifier",
    "verifier",
    "pkce_verifier",
    "authorization",
    "Authorization",
    "AUTHORIZATION",
    "Proxy-Authorization",
    "cookie",
    "Cookie",
    "Set-Cookie",
    "api_key",
    "apikey",
    "private_key",
    "encryption_keys",
    "ACCESS_TOKEN",
    "x-auth-token",
    "previous_secrets",
]

SAFE_KEYS = [
    "status_code",
    "error_code",
    "http_code",
    "token_type",
    "token_url",
    "app",
    "connection_id",
    "event",
    "level",
    "scopes",
    "authorization_url",
    "code_challenge_method",
    "headers",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_redacted(key: str) -> None:
    assert is_secret_key(key)
    assert redact({key: "s3cr3t"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key", ["client_secrets_previous", "X-Api-Key", "accessToken", "refreshToken", "Set-Cookie"]
)
def test_secret_keys_in_other_spellings_are_redacted(key: str) -> None:
    assert redact({key: ["s3cr3t"]}) == {key: REDACTED}


@pytest.mark.parametrize("key", SAFE_KEYS)
def test_harmless_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key)
    assert redact({key: "visible"}) == {key: "visible"}


def test_redaction_reaches_any_depth_and_keeps_the_shape() -> None:
    value = {
        "app": "google",
        "status_code": 400,
        "response": {
            "token_type": "Bearer",
            "items": [
                {"client_secret": "deep-1", "name": "keep-1"},
                ({"refresh_token": "deep-2"}, "plain"),
            ],
            "headers": {"Authorization": "Bearer deep-3", "Content-Type": "application/json"},
        },
    }
    out = redact(value)
    assert out == {
        "app": "google",
        "status_code": 400,
        "response": {
            "token_type": "Bearer",
            "items": [
                {"client_secret": REDACTED, "name": "keep-1"},
                ({"refresh_token": REDACTED}, "plain"),
            ],
            "headers": {"Authorization": REDACTED, "Content-Type": "application/json"},
        },
    }
    # The caller's object is not modified.
    assert value["response"]["items"][0]["client_secret"] == "deep-1"


def test_a_secret_key_hides_a_whole_nested_value() -> None:
    out = redact({"tokens": {"access": "a", "refresh": "r"}, "password": ["x", "y"]})
    assert out == {"tokens": REDACTED, "password": REDACTED}


def test_non_string_keys_are_left_alone() -> None:
    assert redact({1: "one", None: "none"}) == {1: "one", None: "none"}


def test_namedtuple_values_can_be_logged() -> None:
    Pair = namedtuple("Pair", "left right")
    assert redact({"pair": Pair("a", {"password": "p"})}) == {
        "pair": Pair("a", {"password": REDACTED})
    }


# --------------------------------------------------------------------------- the real pipeline


@pytest.fixture
def captured_logs() -> Iterator[Callable[..., io.StringIO]]:
    """`start(fmt, level)` configures logging to write to a fresh buffer and returns it. The
    logging setup of the rest of the run is restored at the end, whatever happens."""
    restore_stderr = sys.stderr

    def start(fmt: str = "json", level: str = "debug") -> io.StringIO:
        buffer = io.StringIO()
        sys.stderr = buffer  # configure_logging binds sys.stderr when called
        try:
            configure_logging(fmt, level)
        finally:
            sys.stderr = restore_stderr
        return buffer

    yield start
    structlog.contextvars.clear_contextvars()
    sys.stderr = restore_stderr
    configure_logging("json", os.environ.get("AUTHBROKER_TEST_LOG_LEVEL", "warning"))


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    text = buffer.getvalue()
    assert text.endswith("\n")
    lines = text.splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


SECRETS = ("tok-SECRET-1", "tok-SECRET-2", "tok-SECRET-3", "tok-SECRET-4", "tok-SECRET-5")


def test_json_output_has_no_secret_and_one_object_per_line(
    captured_logs: Callable[..., io.StringIO],
) -> None:
    buffer = captured_logs("json")
    log = get_logger("authbroker.test")
    log.info(
        "x",
        access_token="tok-SECRET-1",
        nested={"refresh_token": "tok-SECRET-2", "items": [{"client_secret": "tok-SECRET-3"}]},
        headers={"Authorization": "Bearer tok-SECRET-4"},
        app="google",
        connection_id="conn-1",
        status_code=400,
        token_type="Bearer",
    )
    log.bind(password="tok-SECRET-5").warning("second")
    output = buffer.getvalue()
    for secret in SECRETS:
        assert secret not in output
    assert REDACTED in output

    first, second = _lines(buffer)
    assert first["event"] == "x"
    assert first["level"] == "info"
    assert "timestamp" in first
    assert first["access_token"] == REDACTED
    assert first["nested"] == {"refresh_token": REDACTED, "items": [{"client_secret": REDACTED}]}
    assert first["headers"] == {"Authorization": REDACTED}
    assert first["app"] == "google"
    assert first["connection_id"] == "conn-1"
    assert first["status_code"] == 400
    assert first["token_type"] == "Bearer"
    assert second["event"] == "second"
    assert second["level"] == "warning"
    assert second["password"] == REDACTED


def test_bound_context_is_redacted_too(captured_logs: Callable[..., io.StringIO]) -> None:
    buffer = captured_logs("json")
    structlog.contextvars.bind_contextvars(request_id="req-1", cookie="session=tok-SECRET-1")
    get_logger().info("with_context")
    structlog.contextvars.clear_contextvars()
    (line,) = _lines(buffer)
    assert line["request_id"] == "req-1"
    assert line["cookie"] == REDACTED
    assert "tok-SECRET-1" not in buffer.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_basic_credentials_authbroker_builds_are_redacted_without_their_prefix(
    captured_logs: Callable[..., io.StringIO], fmt: str
) -> None:
    """`base64(urlencode(id):urlencode(secret))`, however it got into a line: quoted in an
    error, under a harmless key, deep in a structure, with or without its padding."""
    value = basic_credentials("client id", "tok-SECRET/+=1")
    buffer = captured_logs(fmt)
    get_logger().warning(
        "echoed",
        detail=f"provider said: header {value} refused",
        seen=[{"header_value": value.rstrip("=")}],
        query=f"auth={value}&x=1",
        request_id="3adabf09aed15116",
        note="connection_refreshed authorized abcdefghijkl",
    )
    output = buffer.getvalue()
    assert value not in output and value.rstrip("=") not in output
    assert output.count(REDACTED) >= 3
    for kept in ("3adabf09aed15116", "connection_refreshed authorized abcdefghijkl", "&x=1"):
        assert kept in output


def test_console_format_redacts_too(captured_logs: Callable[..., io.StringIO]) -> None:
    buffer = captured_logs("console")
    get_logger().info("console_line", client_secret="tok-SECRET-1", app="visible-app")
    output = buffer.getvalue()
    assert "console_line" in output
    assert "visible-app" in output
    assert "tok-SECRET-1" not in output


def test_stdlib_logging_is_rendered_as_json(captured_logs: Callable[..., io.StringIO]) -> None:
    buffer = captured_logs("json")
    name = f"x.{uuid.uuid4().hex[:8]}"
    logging.getLogger(name).warning("disk %s is %d%% full", "/data", 93)
    (line,) = _lines(buffer)
    assert line["event"] == "disk /data is 93% full"
    assert line["level"] == "warning"
    assert "timestamp" in line


def test_level_filters_both_paths(captured_logs: Callable[..., io.StringIO]) -> None:
    buffer = captured_logs("json", "warning")
    log = get_logger()
    log.info("hidden_info")
    log.debug("hidden_debug")
    logging.getLogger(f"y.{uuid.uuid4().hex[:8]}").info("hidden_stdlib")
    log.warning("shown_warning")
    logging.getLogger(f"y.{uuid.uuid4().hex[:8]}").error("shown_stdlib")
    events = [line["event"] for line in _lines(buffer)]
    assert events == ["shown_warning", "shown_stdlib"]
