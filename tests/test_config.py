"""Settings (authbroker/config.py) and the key ring at start (storage/resources.py).

A wrong setting must stop the process at once with the variable's name: the operator reads one
line on stderr and knows what to fix. Production never starts embedded servers nor invents keys.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from authbroker.config import Settings, SettingsError, load_settings
from storage.resources import KEYS_FILE, load_key_ring
from storage.sealing import KeyRing

ROOT = Path(__file__).resolve().parent.parent
AUTHBROKER = ROOT / ".venv" / "bin" / "authbroker"

PRODUCTION_OK = {
    "AUTHBROKER_ENV": "production",
    "AUTHBROKER_DATABASE_URL": "postgresql://broker@db.internal:5432/authbroker",
    "AUTHBROKER_REDIS_URL": "redis://cache.internal:6379/0",
    "AUTHBROKER_ENCRYPTION_KEYS": KeyRing.generate_line("prod1"),
    "AUTHBROKER_PUBLIC_URL": "https://broker.example.com",
}


# --------------------------------------------------------------------------- load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert s.env == "development"
    assert not s.production
    assert s.database_url is None and s.redis_url is None
    assert s.embedded
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.redirect_url == "http://127.0.0.1:8080/oauth/callback"
    assert s.data_dir == Path(".authbroker")
    assert s.encryption_keys is None
    assert s.log_level == "info"
    assert s.log_format is None
    assert s.allow_http is False
    assert s.redis_prefix == "authbroker"
    assert s.queue_name == "authbroker:queue"
    assert s.events_stream == "authbroker:events"


def test_load_settings_ignores_other_variables_and_blank_values() -> None:
    s = load_settings({"PATH": "/usr/bin", "AUTHBROKER_PORT": "  ", "AUTHBROKER_ENV": ""})
    assert s.port == 8080
    assert s.env == "development"


def test_values_are_read() -> None:
    s = load_settings(
        {
            "AUTHBROKER_PORT": "9123",
            "AUTHBROKER_HOST": "0.0.0.0",
            "AUTHBROKER_DATABASE_URL": "postgresql://u@h/db",
            "AUTHBROKER_REDIS_URL": "redis://h:6379/1",
            "AUTHBROKER_LOG_FORMAT": "JSON",
            "AUTHBROKER_LOG_LEVEL": "Warning",
            "AUTHBROKER_ALLOW_HTTP": "yes",
            "AUTHBROKER_REDIS_PREFIX": "tenant7",
            "AUTHBROKER_DATA_DIR": "/var/lib/authbroker",
        }
    )
    assert s.port == 9123
    assert s.public_url == "http://127.0.0.1:9123"  # 0.0.0.0 is not an address to redirect to
    assert s.database_url == "postgresql://u@h/db"
    assert s.redis_url == "redis://h:6379/1"
    assert not s.embedded
    assert s.log_format == "json"
    assert s.log_level == "warning"
    assert s.allow_http is True
    assert s.queue_name == "tenant7:queue"
    assert s.data_dir == Path("/var/lib/authbroker")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHBROKER_PORT", "abc"),
        ("AUTHBROKER_PORT", "70000"),
        ("AUTHBROKER_PORT", "-1"),
        ("AUTHBROKER_ENV", "prod"),
        ("AUTHBROKER_ALLOW_HTTP", "maybe"),
        ("AUTHBROKER_DATABASE_URL", "mysql://x"),
        ("AUTHBROKER_DATABASE_URL", "db.internal:5432"),
        ("AUTHBROKER_REDIS_URL", "http://cache"),
        ("AUTHBROKER_PUBLIC_URL", "ftp://broker.example.com"),
        ("AUTHBROKER_LOG_FORMAT", "xml"),
        ("AUTHBROKER_LOG_LEVEL", "verbose"),
        ("AUTHBROKER_PROVIDER_TIMEOUT", "0"),
        ("AUTHBROKER_WORKER_CONCURRENCY", "many"),
        ("AUTHBROKER_REDIS_PREFIX", "has space"),
        ("AUTHBROKER_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("AUTHBROKER_ALLOWED_NETWORKS", "10.0.0.0/8,intranet"),
        ("AUTHBROKER_METRICS_LISTEN", "0.0.0.0"),
        ("AUTHBROKER_METRICS_LISTEN", ":9100"),
        ("AUTHBROKER_METRICS_LISTEN", "::1:9100"),
        ("AUTHBROKER_METRICS_LISTEN", "host:70000"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("given", "listen"),
    [
        ("9100", ("10.0.0.5", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("metrics.internal:9100", ("metrics.internal", 9100)),
    ],
)
def test_metrics_listen_is_host_and_port_or_a_port(given: str, listen: tuple[str, int]) -> None:
    env = {"AUTHBROKER_METRICS_LISTEN": given, "AUTHBROKER_HOST": "10.0.0.5"}
    assert load_settings(env).metrics_listen == listen
    assert load_settings({}).metrics_listen is None


def test_non_integer_port_is_refused() -> None:
    with pytest.raises(SettingsError, match="AUTHBROKER_PORT"):
        load_settings({"AUTHBROKER_PORT": "80.5"})


def test_bad_database_url_does_not_echo_its_password() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"AUTHBROKER_DATABASE_URL": "mysql://admin:hunter2-db-pw@db/x"})
    assert "AUTHBROKER_DATABASE_URL" in str(info.value)
    assert "hunter2-db-pw" not in str(info.value)


def test_production_without_urls_and_keys_names_every_missing_one() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"AUTHBROKER_ENV": "production"})
    message = str(info.value)
    for name in ("AUTHBROKER_DATABASE_URL", "AUTHBROKER_REDIS_URL", "AUTHBROKER_ENCRYPTION_KEYS"):
        assert name in message


def test_production_names_only_what_is_missing() -> None:
    env = dict(PRODUCTION_OK)
    del env["AUTHBROKER_REDIS_URL"]
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    message = str(info.value)
    assert "AUTHBROKER_REDIS_URL" in message
    assert "AUTHBROKER_DATABASE_URL" not in message
    assert "AUTHBROKER_ENCRYPTION_KEYS" not in message


def test_production_with_everything_loads() -> None:
    s = load_settings(PRODUCTION_OK)
    assert s.production
    assert not s.embedded
    assert s.redirect_url == "https://broker.example.com/oauth/callback"


def test_production_refuses_an_http_public_url() -> None:
    env = {**PRODUCTION_OK, "AUTHBROKER_PUBLIC_URL": "http://broker.example.com"}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert "AUTHBROKER_PUBLIC_URL" in str(info.value)
    assert "https" in str(info.value)


def test_production_refuses_allow_http() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({**PRODUCTION_OK, "AUTHBROKER_ALLOW_HTTP": "1"})
    assert "AUTHBROKER_ALLOW_HTTP" in str(info.value)
    assert load_settings({"AUTHBROKER_ALLOW_HTTP": "1"}).allow_http  # development may


def test_allowed_networks_are_read_and_make_the_outbound_rules() -> None:
    s = load_settings(
        {**PRODUCTION_OK, "AUTHBROKER_ALLOWED_NETWORKS": " 10.20.0.0/16, fd00:1::/64,192.168.7.7"}
    )
    assert [str(n) for n in s.allowed_networks] == [
        "10.20.0.0/16",
        "fd00:1::/64",
        "192.168.7.7/32",
    ]
    assert s.outbound.refuse_private and s.outbound.allowed_networks == s.allowed_networks
    assert not load_settings({}).outbound.refuse_private  # private targets: production only


def test_development_accepts_an_http_public_url() -> None:
    s = load_settings({"AUTHBROKER_PUBLIC_URL": "http://broker.lan:8080"})
    assert s.public_url == "http://broker.lan:8080"


@pytest.mark.parametrize(
    ("given", "public", "redirect"),
    [
        (
            "https://broker.example.com/",
            "https://broker.example.com",
            "https://broker.example.com/oauth/callback",
        ),
        (
            "https://broker.example.com/auth/",
            "https://broker.example.com/auth",
            "https://broker.example.com/auth/oauth/callback",
        ),
        (
            "https://broker.example.com:8443",
            "https://broker.example.com:8443",
            "https://broker.example.com:8443/oauth/callback",
        ),
    ],
)
def test_public_url_trailing_slash_and_redirect_url(given: str, public: str, redirect: str) -> None:
    s = load_settings({"AUTHBROKER_PUBLIC_URL": given})
    assert s.public_url == public
    assert s.redirect_url == redirect
    assert "//oauth" not in s.redirect_url


@pytest.mark.parametrize("given", ["https://b.example.com/?a=1", "https://b.example.com/#x"])
def test_public_url_with_query_or_fragment_is_refused(given: str) -> None:
    with pytest.raises(SettingsError, match="AUTHBROKER_PUBLIC_URL"):
        load_settings({"AUTHBROKER_PUBLIC_URL": given})


# --------------------------------------------------------------------------- the process


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBROKER_")}
    env["AUTHBROKER_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AUTHBROKER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_bad_port_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "AUTHBROKER_PORT": "notaport", "AUTHBROKER_DATA_DIR": str(tmp_path)}
    result = _run(["migrate"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "AUTHBROKER_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists()


def test_cli_production_without_urls_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, AUTHBROKER_ENV="production")
    for command in (["migrate"], ["run"]):
        result = _run(command, env, tmp_path)
        assert result.returncode == 2, result.stderr
        for name in (
            "AUTHBROKER_DATABASE_URL",
            "AUTHBROKER_REDIS_URL",
            "AUTHBROKER_ENCRYPTION_KEYS",
        ):
            assert name in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()
    assert not (tmp_path / "data" / "redis").exists()
    assert not (tmp_path / ".authbroker").exists()


def test_cli_help_works_without_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authbroker", "--help"],
        env=_env(tmp_path, AUTHBROKER_PORT="notaport"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout


# --------------------------------------------------------------------------- load_key_ring


def test_production_without_keys_refuses(tmp_path: Path) -> None:
    settings = Settings(env="production", data_dir=tmp_path, encryption_keys=None)
    with pytest.raises(SettingsError, match="AUTHBROKER_ENCRYPTION_KEYS"):
        load_key_ring(settings)
    assert not (tmp_path / KEYS_FILE).exists()


def test_development_without_keys_creates_a_private_key_file_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    settings = Settings(env="development", data_dir=data_dir, encryption_keys=None)
    first = load_key_ring(settings)
    path = data_dir / KEYS_FILE
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_key_ring(settings)
    assert second.keys == first.keys
    # What the first ring sealed, a later start opens.
    sealed = first.seal("kept across restarts", aad="basic_credentials:x:password")
    assert second.open(sealed, aad="basic_credentials:x:password") == "kept across restarts"


def test_damaged_key_file_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text("dev1:damaged\n")
    with pytest.raises(SettingsError) as info:
        load_key_ring(Settings(data_dir=tmp_path))
    assert KEYS_FILE in str(info.value)


def test_explicit_keys_win_over_the_key_file(tmp_path: Path) -> None:
    load_key_ring(Settings(data_dir=tmp_path))  # a key file exists from an earlier start
    line = KeyRing.generate_line("explicit")
    ring = load_key_ring(Settings(data_dir=tmp_path, encryption_keys=line))
    assert ring.keys == KeyRing.parse(line).keys


@pytest.mark.parametrize(
    "text", ["garbage", "k1:tooshort", f"{KeyRing.generate_line('a')},{KeyRing.generate_line('a')}"]
)
def test_malformed_keys_name_the_variable(tmp_path: Path, text: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_key_ring(Settings(data_dir=tmp_path, encryption_keys=text))
    assert "AUTHBROKER_ENCRYPTION_KEYS" in str(info.value)
    assert not (tmp_path / KEYS_FILE).exists()


def test_cli_malformed_keys_exit_2_naming_the_variable(tmp_path: Path) -> None:
    """The key ring is checked before any server starts (no embedded Postgres is created for
    nothing). The database URL points at a closed port: the process must fail on the key
    before it tries to connect."""
    from authbroker.embedded import free_port

    port = free_port()
    env = _env(
        tmp_path,
        AUTHBROKER_ENCRYPTION_KEYS="k1:not-a-key",
        AUTHBROKER_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/none",
        AUTHBROKER_REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    result = _run(["run"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "AUTHBROKER_ENCRYPTION_KEYS" in result.stderr
    assert "not-a-key" not in result.stderr
