"""Running the service: `run`, `web` (one process, or `--workers N` sharing a port), `worker`
and `migrate`.

This is the composition root: the one place in the core that reaches into `handlers`, `worker`
and `storage`, and only inside the commands that start them, so importing the core never
imports the edges.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from authbroker import __version__
from authbroker.cli.base import POSITIVE, CliError, Command, service
from authbroker.cli.services import ADMIN_KEY_FILE, migrate, services
from authbroker.config import Settings
from authbroker.logs import get_logger

log = get_logger("authbroker")


concurrency = click.option(
    "--concurrency", type=POSITIVE, default=None, help="jobs at once (default 20)"
)


@click.command(
    cls=Command,
    short_help="run web server, worker and event relay in one process",
    examples="authbroker run\nAUTHBROKER_PORT=9000 authbroker run --concurrency 5",
)
@concurrency
@service
async def run(settings: Settings, concurrency: int | None) -> None:
    """Run the web server, a worker and the event relay in one process: the one command to
    try authbroker. Without AUTHBROKER_DATABASE_URL / AUTHBROKER_REDIS_URL it starts embedded
    Postgres and Redis under AUTHBROKER_DATA_DIR."""
    await _serve(settings, web=True, worker=True, concurrency=concurrency)


@click.command(
    cls=Command,
    short_help="run the HTTP server only",
    examples="AUTHBROKER_DATABASE_URL=postgresql://… AUTHBROKER_REDIS_URL=redis://… "
    "authbroker web\n"
    "authbroker web --workers 4      # four processes sharing AUTHBROKER_PORT (Linux)",
)
@click.option(
    "--workers", type=POSITIVE, default=1, metavar="N", help="server processes (default 1)"
)
@click.option("--child-of", type=int, default=None, hidden=True)
@service
async def web(settings: Settings, workers: int, child_of: int | None) -> None:
    """Run the HTTP server only. With --workers N, migrate once and run N server processes
    sharing the port (SO_REUSEPORT, Linux); SIGINT/SIGTERM stop them all within 10 s, and if
    one exits on its own the others are stopped and the command exits 1, for a supervisor to
    restart it."""
    if child_of is not None:
        # One of `web --workers N`'s processes: the parent has migrated and watches us.
        await _serve(settings, web=True, worker=False, parent=child_of)
    elif workers > 1:
        await _web_processes(settings, workers)
    else:
        await _serve(settings, web=True, worker=False)


@click.command(
    cls=Command,
    short_help="run a worker (jobs, schedules and the event relay)",
    examples="authbroker worker --concurrency 50",
)
@concurrency
@service
async def worker(settings: Settings, concurrency: int | None) -> None:
    await _serve(settings, web=False, worker=True, concurrency=concurrency)


@click.command(
    "migrate",
    cls=Command,
    short_help="apply database migrations and exit",
    examples="authbroker migrate",
)
@service
async def migrate_command(settings: Settings) -> None:
    async with services(settings) as settings:
        applied = await migrate(settings)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")


async def _wait_for_stop() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _admin_key(settings: Settings, pool: Any) -> str | None:
    """Create the first admin API key on first start of a development or test install; its
    plaintext is kept in the data directory so the next start can print it again. Production
    never creates or prints one: stdout is a log stream there; an operator runs
    `authbroker api-keys create NAME --role admin` instead."""
    from storage import api_keys

    if settings.production:
        return None
    path = Path(settings.data_dir) / ADMIN_KEY_FILE
    if await api_keys.count_active(pool, role="admin"):
        return path.read_text().strip() if path.exists() else None
    _, key = await api_keys.create(pool, "admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


async def _serve(
    settings: Settings,
    *,
    web: bool,
    worker: bool,
    concurrency: int | None = None,
    parent: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `parent`: this is a child of `web --workers N`: the parent
    has migrated and created the admin key; share the port (SO_REUSEPORT), stop when the
    parent is gone, and ignore repeated signals while stopping (the parent enforces the end)."""
    from aiohttp import web as aioweb

    from handlers.app import create_app, create_metrics_app
    from storage.resources import Resources, load_key_ring
    from worker.settings import SupervisedWorker, build_worker

    child = parent is not None
    async with services(settings) as settings:
        ring = load_key_ring(settings)
        if not child:
            applied = await migrate(settings)
            if applied:
                log.info("migrations_applied", versions=applied)
        runner = metrics_runner = supervised = worker_task = resources = None
        try:
            if web:
                resources = await Resources.open(settings, ring)
                admin_key = None if child else await _admin_key(settings, resources.pool)
                runner = aioweb.AppRunner(
                    create_app(resources),
                    access_log=None,
                    **({"shutdown_timeout": CHILD_SHUTDOWN_SECONDS} if child else {}),
                )
                await runner.setup()
                await aioweb.TCPSite(
                    runner, settings.host, settings.port, reuse_port=True if child else None
                ).start()
                if settings.metrics_listen is not None:
                    # /metrics on a listener of its own (shared by `web --workers N`'s
                    # processes like the public port: a scrape reaches one of them).
                    metrics_runner = aioweb.AppRunner(
                        create_metrics_app(resources), access_log=None
                    )
                    await metrics_runner.setup()
                    host, port = settings.metrics_listen
                    await aioweb.TCPSite(
                        metrics_runner, host, port, reuse_port=True if child else None
                    ).start()
                if child:
                    log.info("web_process_started", pid=os.getpid(), port=settings.port)
                else:
                    _banner(settings, admin_key, worker)
            if worker:
                # Supervised: a Redis outage pauses the worker instead of ending the process
                # (and, in `run`, the web server with it).
                supervised = SupervisedWorker(
                    lambda: build_worker(settings, ring, concurrency=concurrency)
                )
                worker_task = asyncio.create_task(supervised.run())
            stop = asyncio.create_task(_wait_for_stop())
            waiting = {stop} | ({worker_task} if worker_task else set())
            if parent is not None:
                waiting.add(asyncio.create_task(_parent_gone(parent)))
            done, pending = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in pending - {worker_task}:
                task.cancel()
            if child:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)
            if worker_task in done and worker_task.exception():
                raise worker_task.exception()  # type: ignore[misc]
            log.info("stopping")
        finally:
            if runner is not None:
                await runner.cleanup()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            if supervised is not None:
                await supervised.stop(grace=8.0 if web else 20.0)
            if resources is not None:
                await resources.close()
    log.info("stopped")


CHILD_SHUTDOWN_SECONDS = 8.0  # a child's grace for open requests: inside the parent's 10 s
STOP_SECONDS = 10.0  # `web --workers N`: children still running after this are killed


async def _parent_gone(parent: int) -> None:
    """Return when the process that started this one has gone (then this one is orphaned)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death: poll
        await asyncio.sleep(1.0)
    log.warning("web_parent_gone", parent=parent)


async def _web_processes(settings: Settings, count: int) -> None:
    """`web --workers N`: migrate once, then run N web processes sharing the port with
    SO_REUSEPORT (the kernel spreads connections). This process binds nothing: it forwards
    SIGINT/SIGTERM, and waits up to STOP_SECONDS for the children (then kills them). A child
    that exits on its own stops the others and this process exits non-zero, for the
    supervisor (systemd, Kubernetes) to restart the whole."""
    import socket

    from storage.pool import create_pool
    from storage.resources import load_key_ring

    if not hasattr(socket, "SO_REUSEPORT"):
        raise CliError("--workers needs SO_REUSEPORT (Linux); run one process per port instead")
    if settings.port == 0:
        raise CliError("--workers needs a fixed port: set AUTHBROKER_PORT")
    loop = asyncio.get_running_loop()
    received: list[int] = []
    stop = asyncio.Event()

    def on_signal(sig: int) -> None:
        received.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    children: list[asyncio.subprocess.Process] = []
    try:
        async with services(settings) as settings:
            load_key_ring(settings)  # checked once; in development the key file is made once
            applied = await migrate(settings)
            if applied:
                log.info("migrations_applied", versions=applied)
            pool = await create_pool(settings.database_url or "", min_size=1, max_size=1)
            try:
                admin_key = await _admin_key(settings, pool)
            finally:
                await pool.close()
            env = {
                **os.environ,
                # Embedded servers (development) were started here: the children use them.
                "AUTHBROKER_DATABASE_URL": settings.database_url or "",
                "AUTHBROKER_REDIS_URL": settings.redis_url or "",
            }
            if stop.is_set():
                return  # stopped while migrating: start nothing
            command = [sys.executable, "-m", "authbroker", "web", "--child-of", str(os.getpid())]
            for _ in range(count):
                # A process group of their own: a terminal's Ctrl-C reaches only this
                # process, which forwards it once.
                children.append(
                    await asyncio.create_subprocess_exec(*command, env=env, process_group=0)
                )
            exits = {asyncio.create_task(child.wait()): child for child in children}
            stopping = asyncio.create_task(stop.wait())
            if await _port_open(settings, exits, stop):
                _banner(settings, admin_key, False, processes=count)
            done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
            died = [exits[task] for task in done if task in exits]
            stopping.cancel()
            for child in children:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(received[0] if received else signal.SIGTERM)
            _, unfinished = await asyncio.wait(exits, timeout=STOP_SECONDS)
            killed = [exits[task] for task in unfinished]
            for child in killed:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
            failed = [c for c in children if c not in killed and c.returncode != 0]
            if died:
                first = died[0]
                raise CliError(
                    f"web process {first.pid} exited unexpectedly (code {first.returncode}); "
                    f"stopped the other {count - 1}"
                )
            if killed or failed:
                raise CliError(
                    f"{len(killed)} web process(es) did not stop within {STOP_SECONDS:g} s and "
                    f"were killed; {len(failed)} exited with an error"
                )
    finally:
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                with contextlib.suppress(Exception):
                    await child.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")


async def _port_open(
    settings: Settings, exits: dict[asyncio.Task[int], Any], stop: asyncio.Event
) -> bool:
    """Wait (up to 60 s) until the shared port accepts connections; False if a child exited
    or a stop signal came first, or the time ran out."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
        settings.host, settings.host
    )
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        if stop.is_set() or any(task.done() for task in exits):
            return False
        with contextlib.suppress(OSError):
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, settings.port), timeout=1
            )
            writer.close()
            return True
        await asyncio.sleep(0.1)
    return False


def _banner(
    settings: Settings, admin_key: str | None, with_worker: bool, processes: int = 1
) -> None:
    what = "web + worker + relay" if with_worker else "web"
    if processes > 1:
        what += f", {processes} processes on port {settings.port}"
    lines = [
        f"authbroker {__version__} is running ({what})",
        f"  base URL:      {settings.public_url}",
        f"  redirect URL:  {settings.redirect_url}   (register this at each provider)",
        f"  data dir:      {Path(settings.data_dir).resolve()}",
    ]
    if settings.metrics_listen is not None:
        host, port = settings.metrics_listen
        lines.append(
            f"  metrics:       http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
        )
    if admin_key:
        lines.append(f"  admin API key: {admin_key}")
    elif settings.production:
        lines.append(
            "  API keys:      create one with: authbroker api-keys create NAME --role admin"
        )
    else:
        lines.append(
            "  admin API key: already created (create another: authbroker api-keys create NAME "
            "--role admin)"
        )
    lines.append("  stop:          Ctrl-C")
    print("\n".join(lines), flush=True)
