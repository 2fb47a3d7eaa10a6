"""The `authbroker` command: run the service, migrate, manage keys.

This module is the composition root: the one place in the core that reaches into `handlers`,
`worker` and `storage`, and only inside the commands that start them, so importing the core
never imports the edges.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from authbroker import __version__
from authbroker.config import Settings, SettingsError, load_settings
from authbroker.embedded import EmbeddedError, EmbeddedServices
from authbroker.logs import configure_logging, get_logger

log = get_logger("authbroker")
ADMIN_KEY_FILE = "admin-api-key"


class CliError(Exception):
    """A user-facing failure: printed to stderr, exit code 1."""


# ---------------------------------------------------------------- process plumbing


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


@contextlib.asynccontextmanager
async def _services(settings: Settings):  # type: ignore[no-untyped-def]
    """Yield settings whose database and Redis URLs are set, starting embedded servers for
    whichever is missing (refused in production by the settings check)."""
    embedded = EmbeddedServices(Path(settings.data_dir))
    if settings.embedded:
        database_url, redis_url = await embedded.start(
            need_postgres=settings.database_url is None, need_redis=settings.redis_url is None
        )
        settings = settings.replace(
            database_url=settings.database_url or database_url,
            redis_url=settings.redis_url or redis_url,
        )
    try:
        yield settings
    finally:
        await embedded.stop()


async def _migrate(settings: Settings) -> list[str]:
    import asyncpg

    from storage.migrate import migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        return [f"{m.version:04d}_{m.name}" for m in await migrate(conn)]
    finally:
        await conn.close()


async def _admin_key(settings: Settings, pool: Any) -> str | None:
    """Create the first admin API key on first start. In development its plaintext is kept in
    the data directory so the next start can print it again; elsewhere it is shown once."""
    from storage import api_keys

    path = Path(settings.data_dir) / ADMIN_KEY_FILE
    if await api_keys.count_active(pool):
        if not settings.production and path.exists():
            return path.read_text().strip()
        return None
    _, key = await api_keys.create(pool, "admin")
    if not settings.production:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
    return key


# ---------------------------------------------------------------- commands


async def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    """Web server, worker and relay in one process: the one command to try authbroker."""
    await _serve(settings, web=True, worker=True, concurrency=args.concurrency)


async def cmd_web(settings: Settings, args: argparse.Namespace) -> None:
    await _serve(settings, web=True, worker=False)


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    await _serve(settings, web=False, worker=True, concurrency=args.concurrency)


async def _serve(
    settings: Settings, *, web: bool, worker: bool, concurrency: int | None = None
) -> None:
    from aiohttp import web as aioweb

    from handlers.app import create_app
    from storage.resources import Resources, load_key_ring
    from worker.settings import build_worker, stop_worker

    async with _services(settings) as settings:
        ring = load_key_ring(settings)
        applied = await _migrate(settings)
        if applied:
            log.info("migrations_applied", versions=applied)
        runner = arq_worker = worker_task = resources = None
        try:
            if web:
                resources = await Resources.open(settings, ring)
                admin_key = await _admin_key(settings, resources.pool)
                runner = aioweb.AppRunner(create_app(resources), access_log=None)
                await runner.setup()
                await aioweb.TCPSite(runner, settings.host, settings.port).start()
                _banner(settings, admin_key, worker)
            if worker:
                arq_worker = build_worker(settings, ring, concurrency=concurrency)
                worker_task = asyncio.create_task(arq_worker.async_run())
            stop = asyncio.create_task(_wait_for_stop())
            waiting = {stop} | ({worker_task} if worker_task else set())
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if worker_task in done and worker_task.exception():
                raise worker_task.exception()  # type: ignore[misc]
            log.info("stopping")
        finally:
            if runner is not None:
                await runner.cleanup()
            if arq_worker is not None:
                await stop_worker(arq_worker, grace=8.0 if web else 20.0)
            if resources is not None:
                await resources.close()
    log.info("stopped")


def _banner(settings: Settings, admin_key: str | None, with_worker: bool) -> None:
    lines = [
        f"authbroker {__version__} is running ({'web + worker + relay' if with_worker else 'web'})",
        f"  base URL:      {settings.public_url}",
        f"  redirect URL:  {settings.redirect_url}   (register this at each provider)",
        f"  data dir:      {Path(settings.data_dir).resolve()}",
    ]
    if admin_key:
        lines.append(f"  admin API key: {admin_key}")
    else:
        lines.append(
            "  admin API key: already created (create another: authbroker api-keys create)"
        )
    lines.append("  stop:          Ctrl-C")
    print("\n".join(lines), flush=True)


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async with _services(settings) as settings:
        applied = await _migrate(settings)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")


async def cmd_keys_generate(settings: Settings, args: argparse.Namespace) -> None:
    from storage.sealing import KeyRing

    print(KeyRing.generate_line(args.kid))


async def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    from storage.pool import create_pool
    from storage.resources import load_key_ring
    from storage.rotation import rotate

    async with _services(settings) as settings:
        ring = load_key_ring(settings)
        await _migrate(settings)
        pool = await create_pool(settings.database_url or "")
        try:
            counts = await rotate(pool, ring, batch=args.batch)
        finally:
            await pool.close()
    if args.json:
        print(json.dumps({"key": ring.current_kid, "resealed": counts}))
    else:
        print(f"re-sealed under key {ring.current_kid!r}:")
        for table, count in counts.items():
            print(f"  {table:<18} {count}")


async def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    from storage.pool import create_pool

    async with _services(settings) as settings:
        await _migrate(settings)
        pool = await create_pool(settings.database_url or "")
        try:
            await work(pool)
        finally:
            await pool.close()


async def cmd_api_keys_create(settings: Settings, args: argparse.Namespace) -> None:
    from storage import api_keys

    async def work(pool: Any) -> None:
        key, plaintext = await api_keys.create(pool, args.name)
        if args.json:
            print(json.dumps({"id": key.id, "name": key.name, "key": plaintext}))
        else:
            print(f"created API key {key.id} ({key.name}); it is shown only now:\n{plaintext}")

    await _with_pool(settings, work)


async def cmd_api_keys_list(settings: Settings, args: argparse.Namespace) -> None:
    from storage import api_keys

    async def work(pool: Any) -> None:
        keys = await api_keys.list_all(pool)
        if args.json:
            print(json.dumps([k.__dict__ for k in keys], default=str))
            return
        print(f"{'ID':<14}{'NAME':<20}{'CREATED':<27}{'STATE'}")
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.id:<14}{k.name:<20}{k.created_at:%Y-%m-%d %H:%M:%S %Z}    {state}")

    await _with_pool(settings, work)


async def cmd_api_keys_revoke(settings: Settings, args: argparse.Namespace) -> None:
    from storage import api_keys

    async def work(pool: Any) -> None:
        if not await api_keys.revoke(pool, args.id):
            raise CliError(f"no active API key with id {args.id!r} (see: authbroker api-keys list)")
        print(f"revoked API key {args.id}")

    await _with_pool(settings, work)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authbroker",
        description="Keeps integrations authenticated: OAuth 2.0 connections and Basic "
        "credentials, refreshed, watched and revoked.",
        epilog="Settings come from AUTHBROKER_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"authbroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., Awaitable[None]], help_: str, **kw: Any) -> Any:
        p = sub.add_parser(name, help=help_, description=help_, **kw)
        p.set_defaults(handler=handler)
        return p

    run = add("run", cmd_run, "run web server, worker and event relay in one process")
    run.add_argument("--concurrency", type=int, default=None, help="jobs at once (default 20)")
    add("web", cmd_web, "run the HTTP server only")
    w = add("worker", cmd_worker, "run a worker (jobs, schedules and the event relay)")
    w.add_argument("--concurrency", type=int, default=None, help="jobs at once (default 20)")
    add("migrate", cmd_migrate, "apply database migrations and exit")

    keys = sub.add_parser("keys", help="encryption keys for secrets at rest")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    gen = keys_sub.add_parser(
        "generate",
        help="print a new kid:key pair",
        description="Print a new kid:key pair. Put it first in AUTHBROKER_ENCRYPTION_KEYS, keep "
        "the old ones after it, then run `authbroker keys rotate`.",
    )
    gen.add_argument("--kid", default=None, help="key id (default: random)")
    gen.set_defaults(handler=cmd_keys_generate)
    rot = keys_sub.add_parser(
        "rotate", help="re-seal every secret under the first key of AUTHBROKER_ENCRYPTION_KEYS"
    )
    rot.add_argument("--batch", type=int, default=500)
    rot.add_argument("--json", action="store_true")
    rot.set_defaults(handler=cmd_keys_rotate)

    ak = sub.add_parser("api-keys", help="API keys for the HTTP API")
    ak_sub = ak.add_subparsers(dest="api_keys_command", required=True, metavar="ACTION")
    create = ak_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("name", help="who or what uses the key, e.g. runtime-eu1")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_api_keys_create)
    lst = ak_sub.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_api_keys_list)
    rev = ak_sub.add_parser("revoke", help="revoke a key by id")
    rev.add_argument("id")
    rev.set_defaults(handler=cmd_api_keys_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(args.handler(settings, args))
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CliError, EmbeddedError) as exc:
        print(f"authbroker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
