"""Settings, read once from `AUTHBROKER_*` variables and checked before anything starts.

A wrong value must stop the process at once with the variable's name, not surface later as a
confusing failure in a worker, so every variable is parsed and validated here.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from authbroker import netguard, oauth

Environment = Literal["development", "production", "test"]
LogFormat = Literal["json", "console"]
T = TypeVar("T", int, float)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable and what to do."""


@dataclass(frozen=True)
class Settings:
    env: Environment = "development"
    # URLs may carry passwords: kept out of reprs (and so out of logs and tracebacks).
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "authbroker"
    data_dir: Path = Path(".authbroker")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    encryption_keys: str | None = field(default=None, repr=False)
    log_format: LogFormat | None = None
    log_level: str = "info"
    allow_http: bool = False
    allow_link_local: bool = False
    # Loopback and private networks production may still reach (a provider inside the VPC).
    allowed_networks: tuple[Network, ...] = ()
    # Seconds to wait for a provider's answer once a request is sent (the answer to a refresh
    # holds the only copy of a rotated refresh token: wait long), and to get a connection.
    provider_timeout: float = 60.0
    provider_connect_timeout: float = 10.0
    worker_concurrency: int = 20
    metrics_port: int | None = None
    # (host, port) of a listener of its own for the web server's /metrics; the public port then
    # serves only the callback, the API and the console.
    metrics_listen: tuple[str, int] | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def embedded(self) -> bool:
        """Whether either server is missing and must be started from the data directory."""
        return self.database_url is None or self.redis_url is None

    @property
    def outbound(self) -> netguard.Rules:
        """Which provider addresses this deployment may reach."""
        from authbroker import netguard

        return netguard.Rules(
            allow_link_local=self.allow_link_local,
            refuse_private=self.production,
            allowed_networks=self.allowed_networks,
        )

    @property
    def validation_context(self) -> dict[str, object]:
        """What URL validation needs to know about this deployment's policy."""
        return {"allow_http": self.allow_http, "rules": self.outbound}

    @property
    def provider_timeouts(self) -> oauth.Timeouts:
        from authbroker import oauth

        return oauth.Timeouts(answer=self.provider_timeout, connect=self.provider_connect_timeout)

    @property
    def redirect_url(self) -> str:
        return f"{self.public_url}/oauth/callback"

    @property
    def events_stream(self) -> str:
        return f"{self.redis_prefix}:events"

    @property
    def events_channel(self) -> str:
        return f"{self.redis_prefix}:events"

    @property
    def queue_name(self) -> str:
        return f"{self.redis_prefix}:queue"

    def replace(self, **changes: object) -> Settings:
        from dataclasses import replace

        return replace(self, **changes)


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(f"AUTHBROKER_{name}")
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = _text(env, name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"AUTHBROKER_{name}={value!r}: expected 1/0, true/false, yes/no or on/off")


def _bounded(
    env: Mapping[str, str], name: str, default: T, low: T, high: T, parse: Callable[[str], T]
) -> T:
    """A number within [low, high]: `parse` is int for whole numbers (80.5 is not a port)."""
    value = _text(env, name)
    if value is None:
        return default
    kind = "a whole number" if parse is int else "a number"
    try:
        number = parse(value)
    except ValueError:
        raise SettingsError(f"AUTHBROKER_{name}={value!r}: expected {kind}") from None
    if not low <= number <= high:
        raise SettingsError(f"AUTHBROKER_{name}={value!r}: expected between {low:g} and {high:g}")
    return number


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _bounded(env, name, default, low, high, float)


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _bounded(env, name, default, low, high, int)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = _text(env, name)
    if value is not None and value.lower() not in choices:
        raise SettingsError(f"AUTHBROKER_{name}={value!r}: expected one of {', '.join(choices)}")
    return value.lower() if value else None


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = _text(env, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.path or parts.query):
        raise SettingsError(
            f"AUTHBROKER_{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    """Comma-separated CIDR networks (`10.0.0.0/8,fd00::/8`); a bare address is its own /32."""
    value = _text(env, name)
    found: list[Network] = []
    for part in (value or "").split(","):
        if not part.strip():
            continue
        try:
            found.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise SettingsError(
                f"AUTHBROKER_{name}: {part.strip()!r} is not a network such as 10.0.0.0/8 or "
                "fd00::/8"
            ) from None
    return tuple(found)


def _listen(env: Mapping[str, str], name: str, default_host: str) -> tuple[str, int] | None:
    """`host:port`, `[v6]:port`, or a port alone (on AUTHBROKER_HOST)."""
    value = _text(env, name)
    if value is None:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = default_host, value
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    problem = None
    if not host or "[" in host or "]" in host:
        problem = "a host"
    elif ":" in host and not bracketed:
        problem = "an IPv6 address in brackets, e.g. [::1]:9100"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if problem is None and not 1 <= port <= 65535:
        problem = "a port between 1 and 65535"
    if problem is not None:
        raise SettingsError(
            f"AUTHBROKER_{name}={value!r}: expected host:port or a port ({problem})"
        )
    return host, port


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reading(dict[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def variables() -> frozenset[str]:
    """Every AUTHBROKER_* variable the settings read (deploy files and docs list them all)."""
    reading = _Reading()
    load_settings(reading)
    return frozenset(reading.asked)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every `AUTHBROKER_*` variable; raise SettingsError on the first bad one."""
    env = os.environ if env is None else env
    mode = _choice(env, "ENV", ("development", "production", "test")) or "development"
    host = _text(env, "HOST") or "127.0.0.1"
    port = _integer(env, "PORT", 8080, 0, 65535)
    public_url = _url(env, "PUBLIC_URL", ("http", "https"))
    if public_url is None:
        shown = f"[{host}]" if ":" in host else host
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else shown  # noqa: S104
        public_url = f"http://{shown}:{port}"
    parts = urlsplit(public_url)
    if parts.query or parts.fragment or not parts.hostname:
        raise SettingsError(
            "AUTHBROKER_PUBLIC_URL: expected scheme://host[:port][/path] without query or fragment"
        )
    public_url = public_url.rstrip("/")
    prefix = _text(env, "REDIS_PREFIX") or "authbroker"
    if any(ch.isspace() for ch in prefix):
        raise SettingsError(f"AUTHBROKER_REDIS_PREFIX={prefix!r}: must not contain spaces")
    settings = Settings(
        env=mode,  # type: ignore[arg-type]
        database_url=_url(env, "DATABASE_URL", ("postgres", "postgresql")),
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
        redis_prefix=prefix,
        data_dir=Path(_text(env, "DATA_DIR") or ".authbroker"),
        host=host,
        port=port,
        public_url=public_url,
        encryption_keys=_text(env, "ENCRYPTION_KEYS"),
        log_format=_choice(env, "LOG_FORMAT", ("json", "console")),  # type: ignore[arg-type]
        log_level=_choice(env, "LOG_LEVEL", ("debug", "info", "warning", "error")) or "info",
        allow_http=_bool(env, "ALLOW_HTTP"),
        allow_link_local=_bool(env, "ALLOW_LINK_LOCAL"),
        allowed_networks=_networks(env, "ALLOWED_NETWORKS"),
        provider_timeout=_number(env, "PROVIDER_TIMEOUT", 60.0, 1, 600),
        provider_connect_timeout=_number(env, "PROVIDER_CONNECT_TIMEOUT", 10.0, 0.5, 120),
        worker_concurrency=_integer(env, "WORKER_CONCURRENCY", 20, 1, 1000),
        metrics_port=_integer(env, "METRICS_PORT", 0, 0, 65535) or None,
        metrics_listen=_listen(env, "METRICS_LISTEN", host),
    )
    if settings.production:
        missing = [
            f"AUTHBROKER_{name}"
            for name, value in (
                ("DATABASE_URL", settings.database_url),
                ("REDIS_URL", settings.redis_url),
                ("ENCRYPTION_KEYS", settings.encryption_keys),
            )
            if value is None
        ]
        if missing:
            raise SettingsError(
                f"AUTHBROKER_ENV=production needs {', '.join(missing)}: production never starts "
                "embedded servers or generates encryption keys"
            )
        if settings.allow_http:
            raise SettingsError(
                "AUTHBROKER_ALLOW_HTTP: production never sends client secrets, codes or refresh "
                "tokens over plain http; remove it (or set it to 0)"
            )
        if urlsplit(public_url).scheme != "https" and not is_loopback(
            urlsplit(public_url).hostname
        ):
            raise SettingsError(
                "AUTHBROKER_PUBLIC_URL: production needs an https URL (providers redirect users "
                "here with authorization codes)"
            )
    return settings
