"""The `authbroker` command: run the service, migrate, manage keys, and drive the HTTP API
(apps, basic, connections, events) for a person at a terminal.

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
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from authbroker import __version__
from authbroker.config import Settings, SettingsError, is_loopback, load_settings
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
    """Create the first admin API key on first start of a development or test install; its
    plaintext is kept in the data directory so the next start can print it again. Production
    never creates or prints one: stdout is a log stream there; an operator runs
    `authbroker api-keys create NAME` instead."""
    from storage import api_keys

    if settings.production:
        return None
    path = Path(settings.data_dir) / ADMIN_KEY_FILE
    if await api_keys.count_active(pool):
        return path.read_text().strip() if path.exists() else None
    _, key = await api_keys.create(pool, "admin")
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
    if args.child_of is not None:
        # One of `web --workers N`'s processes: the parent has migrated and watches us.
        await _serve(settings, web=True, worker=False, parent=args.child_of)
    elif args.workers > 1:
        await _web_processes(settings, args.workers)
    else:
        await _serve(settings, web=True, worker=False)


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    await _serve(settings, web=False, worker=True, concurrency=args.concurrency)


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

    from handlers.app import create_app
    from storage.resources import Resources, load_key_ring
    from worker.settings import SupervisedWorker, build_worker

    child = parent is not None
    async with _services(settings) as settings:
        ring = load_key_ring(settings)
        if not child:
            applied = await _migrate(settings)
            if applied:
                log.info("migrations_applied", versions=applied)
        runner = supervised = worker_task = resources = None
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
        async with _services(settings) as settings:
            load_key_ring(settings)  # checked once; in development the key file is made once
            applied = await _migrate(settings)
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
    if admin_key:
        lines.append(f"  admin API key: {admin_key}")
    elif settings.production:
        lines.append("  API keys:      create one with: authbroker api-keys create NAME")
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


# ---------------------------------------------------------------- the API's client side

API_URL_ENV = "AUTHBROKER_URL"
API_KEY_ENV = "AUTHBROKER_API_KEY"

CONNECTING = f"""\
URL: --url, else ${API_URL_ENV}, else the server's AUTHBROKER_PUBLIC_URL
  (default http://127.0.0.1:8080).
API key: --api-key-file FILE, else ${API_KEY_ENV}, else in development the
  admin key `authbroker run` keeps in $AUTHBROKER_DATA_DIR/{ADMIN_KEY_FILE}."""


def api_target(settings: Settings, args: argparse.Namespace) -> tuple[str, str | None, str]:
    """Where the API is, the key to use and where the key came from (for error messages).
    An explicit --api-key-file wins over the environment, which wins over the development
    admin key file."""
    url = (args.url or os.environ.get(API_URL_ENV, "").strip() or settings.public_url).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CliError(f"--url / {API_URL_ENV}: expected http(s)://host[:port], got {url!r}")
    if args.api_key_file:
        path = Path(args.api_key_file)
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise CliError(f"--api-key-file {path}: {exc.strerror or exc}") from None
        if not key:
            raise CliError(f"--api-key-file {path}: the file is empty")
        return url, key, f"--api-key-file {path}"
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return url, key, API_KEY_ENV
    if not settings.production:
        path = Path(settings.data_dir) / ADMIN_KEY_FILE
        with contextlib.suppress(OSError):
            key = path.read_text().strip()
            if key:
                return url, key, f"{path} (the development admin key)"
    return url, None, ""


def _key_hint(source: str, settings: Settings) -> str:
    first = (
        f"the API refused the key from {source}: it is wrong or was revoked."
        if source
        else "no API key was given."
    )
    return (
        f"{first}\n"
        f"Set {API_KEY_ENV} (or pass --api-key-file FILE) to a valid key: `authbroker run` "
        "prints the admin key when it starts (in development it keeps it in "
        f"{Path(settings.data_dir) / ADMIN_KEY_FILE}); create another with "
        "`authbroker api-keys create NAME` where the database is reachable."
    )


def describe_api_error(exc: Any, source: str, settings: Settings) -> str:
    """The API's message, each field at fault (with the option that sets it), and what to do."""
    from authbroker.cli_commands import OPTION_OF

    lines = [exc.message]
    for item in exc.fields:
        field = str(item.get("field", ""))
        option = OPTION_OF.get(field.split(".")[0])
        label = f"{field} ({option})" if option and "." not in field else field
        lines.append(f"  {label}: {item.get('message', '')}")
    if exc.status == 401:
        lines.append(_key_hint(source, settings))
    elif exc.status == 404 and exc.error == "not_found":
        lines.append("this authbroker server does not know this request: is it an older version?")
    elif exc.status >= 500:
        lines.append("the server failed; its logs name the cause (look for request_failed)")
    detail = exc.body.get("detail")
    if detail:
        lines.append(str(detail))
    return "\n".join(lines)


def _client_command(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Any]:
    """Run an API command with a client, turning its failures into messages for a person."""

    async def handler(settings: Settings, args: argparse.Namespace) -> int | None:
        from authbroker.cli_commands import CommandError
        from authbroker.client import ApiError, AuthbrokerClient, Unreachable

        url, key, source = api_target(settings, args)
        parts = urlsplit(url)
        if key and parts.scheme == "http" and not is_loopback(parts.hostname):
            print(
                f"authbroker: warning: sending the API key over plain http to {parts.hostname}",
                file=sys.stderr,
            )
        try:
            async with AuthbrokerClient(url, key, timeout=args.timeout) as api:
                return await command(api, args)
        except ApiError as exc:
            raise CliError(describe_api_error(exc, source, settings)) from None
        except Unreachable as exc:
            raise CliError(
                f"cannot reach authbroker at {exc.url}: is it running? (make run)\n"
                f"  ({exc.reason}; point the CLI elsewhere with --url or {API_URL_ENV})"
            ) from None
        except CommandError as exc:
            raise CliError(str(exc)) from None

    handler.uses_api = True  # type: ignore[attr-defined]
    return handler


def _local_command(command: Callable[..., Awaitable[int | None]]) -> Callable[..., Any]:
    """A command of the CLI's own (no API request), with the same error handling."""

    async def handler(settings: Settings, args: argparse.Namespace) -> int | None:
        from authbroker.cli_commands import CommandError

        try:
            return await command(None, args)
        except CommandError as exc:
            raise CliError(str(exc)) from None

    handler.uses_api = True  # type: ignore[attr-defined]
    return handler


# ---------------------------------------------------------------- parser

Formatter = argparse.RawDescriptionHelpFormatter


def _examples(text: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def _parser(
    sub: Any,
    name: str,
    help_: str,
    examples: str,
    *,
    description: str | None = None,
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_,
        description=textwrap.fill(description or help_[0].upper() + help_[1:] + ".", 88),
        epilog=_examples(examples),
        formatter_class=Formatter,
        parents=list(parents),
    )


def _group(sub: Any, name: str, help_: str, examples: str, dest: str) -> Any:
    parser = _parser(sub, name, help_, examples)
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


def _client_parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    connect = argparse.ArgumentParser(add_help=False)
    group = connect.add_argument_group("connecting to authbroker", CONNECTING)
    group.add_argument("--url", metavar="URL", help=f"authbroker's base URL (${API_URL_ENV})")
    group.add_argument(
        "--api-key-file", metavar="FILE", help=f"read the API key from FILE (${API_KEY_ENV})"
    )
    group.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds per request (30)"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")
    return connect, as_json


def _app_options(parser: argparse.ArgumentParser, *, update: bool) -> None:
    from authbroker.cli_commands import key_value

    g = parser.add_argument_group("application settings")
    g.add_argument(
        "--client-id",
        required=not update,
        metavar="ID",
        help="the client id the provider issued",
    )
    g.add_argument("--authorization-url", metavar="URL", help="the provider's authorize endpoint")
    g.add_argument("--token-url", metavar="URL", help="the provider's token endpoint")
    g.add_argument("--revoke-url", metavar="URL", help="RFC 7009 revocation endpoint")
    g.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="a scope to request (repeat, or quote several separated by spaces)"
        + ("; replaces the app's list" if update else ""),
    )
    g.add_argument("--scope-separator", metavar="SEP", help="between scopes (default: a space)")
    g.add_argument(
        "--client-auth",
        choices=["body", "basic", "query", "auto"],
        help="where the token endpoint gets client credentials (default body; auto tries each)",
    )
    g.add_argument(
        "--authorize-param",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="extra authorize URL parameter (repeat)"
        + ("; the set given replaces the app's" if update else ""),
    )
    g.add_argument(
        "--token-param",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="extra token request parameter (repeat)"
        + ("; the set given replaces the app's" if update else ""),
    )
    g.add_argument(
        "--pkce",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send a PKCE challenge (default on)",
    )
    g.add_argument("--refresh-margin", type=int, metavar="S", help="refresh S seconds early (300)")
    g.add_argument(
        "--default-token-lifetime",
        type=int,
        metavar="S",
        help="lifetime assumed when a token response has no expires_in",
    )
    g.add_argument(
        "--refresh-token-lifetime", type=int, metavar="S", help="how long refresh tokens live"
    )
    g.add_argument("--probe-url", metavar="URL", help="a URL to check tokens against")
    g.add_argument("--probe-interval", type=int, metavar="S", help="seconds between probes")


def _add_client_commands(sub: Any) -> None:
    from authbroker import cli_commands as c

    connect, as_json = _client_parents()
    both = (connect, as_json)

    # ------------------------------------------------------------ apps
    apps = _group(
        sub,
        "apps",
        "OAuth applications: add, list, show, update, remove, export, import",
        "authbroker apps add crm --preset hubspot --client-id ID\n"
        "authbroker apps list\n"
        "authbroker apps export > apps.json",
        "apps_command",
    )
    p = _parser(
        apps,
        "add",
        "add an OAuth application",
        'printf %s "$SECRET" | authbroker apps add google --preset google --client-id ID \\\n'
        "    --client-secret-stdin\n"
        "authbroker apps add entra --preset microsoft --placeholder tenant=contoso \\\n"
        "    --client-id ID --scope offline_access --scope User.Read\n"
        "authbroker apps add acme --discover https://login.acme.example --client-id ID\n"
        "authbroker apps add crm --client-id ID \\\n"
        "    --authorization-url https://crm.example/oauth/authorize \\\n"
        "    --token-url https://crm.example/oauth/token --scope 'read write' \\\n"
        "    --client-auth basic --authorize-param prompt=consent\n"
        "authbroker apps add spa --preset google --client-id ID --no-client-secret --dry-run",
        description="Add an OAuth application. Start from a provider preset (--preset) or the "
        "provider's published metadata (--discover), or give the endpoints yourself; options "
        "given explicitly win over both. The client secret is read from a prompt, or from stdin "
        "with --client-secret-stdin; it is never taken from the command line. Register the "
        "redirect URL the command prints at the provider.",
        parents=both,
    )
    p.add_argument("name", help="the app's name (letters, digits, '.', '_', '-'), used in URLs")
    src = p.add_argument_group("where the defaults come from")
    src.add_argument("--preset", metavar="NAME", help="a provider preset (authbroker apps presets)")
    src.add_argument(
        "--placeholder",
        action="append",
        type=c.key_value,
        metavar="NAME=VALUE",
        help="a value the preset needs, e.g. tenant=contoso (repeat)",
    )
    src.add_argument(
        "--discover",
        metavar="ISSUER",
        help="read endpoints from ISSUER's RFC 8414 / OpenID Connect metadata",
    )
    _app_options(p, update=False)
    secret = p.add_argument_group("client secret").add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret-stdin", action="store_true", help="read the client secret from stdin"
    )
    secret.add_argument(
        "--no-client-secret", action="store_true", help="a public client (PKCE, no secret)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the definition that would be sent (no secret) and stop",
    )
    p.set_defaults(handler=_client_command(c.apps_add))

    p = _parser(
        apps,
        "list",
        "list applications",
        "authbroker apps list\nauthbroker apps list --json | jq -r '.[].name'",
        parents=both,
    )
    p.set_defaults(handler=_client_command(c.apps_list))

    p = _parser(
        apps,
        "show",
        "show an application (never its secret) and its redirect URL",
        "authbroker apps show google",
        parents=both,
    )
    p.add_argument("name")
    p.set_defaults(handler=_client_command(c.apps_show))

    p = _parser(
        apps,
        "update",
        "change an application's settings or secret",
        'printf %s "$NEW_SECRET" | authbroker apps update google --client-secret-stdin\n'
        "authbroker apps update google --token-url https://oauth2.googleapis.com/token\n"
        "authbroker apps update crm --scope read --scope write --client-auth basic\n"
        "authbroker apps update crm --clear revoke_url",
        description="Change an application: only the settings given are sent. Setting the "
        "client secret (--client-secret-stdin, or --client-secret-prompt) ends an imported "
        "app's wait for it. Any change resumes an app paused for refused settings.",
        parents=both,
    )
    p.add_argument("name")
    _app_options(p, update=True)
    p.add_argument(
        "--clear",
        action="append",
        choices=sorted(c.CLEARABLE),
        metavar="FIELD",
        help=f"empty an optional setting (repeat): {', '.join(sorted(c.CLEARABLE))}",
    )
    secret = p.add_argument_group("client secret").add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret-stdin", action="store_true", help="read the new secret from stdin"
    )
    secret.add_argument(
        "--client-secret-prompt", action="store_true", help="ask for the new secret"
    )
    p.set_defaults(handler=_client_command(c.apps_update))

    p = _parser(
        apps,
        "remove",
        "delete an application",
        "authbroker apps remove old-crm\nauthbroker apps remove old-crm --cascade",
        description="Delete an application. An app with live connections is refused unless "
        "--cascade, which revokes them at the provider first (the app goes once they are "
        "revoked).",
        parents=both,
    )
    p.add_argument("name")
    p.add_argument(
        "--cascade", action="store_true", help="revoke and delete the app's connections too"
    )
    p.set_defaults(handler=_client_command(c.apps_remove))

    p = _parser(
        apps,
        "export",
        "print application definitions as JSON, without secrets",
        "authbroker apps export > apps.json\nauthbroker apps export google crm -o apps.json",
        description="Print application definitions (every app, or those named) as one JSON "
        "document for `apps import` in another environment. Secrets are never exported.",
        parents=(connect,),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these apps")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(handler=_client_command(c.apps_export))

    p = _parser(
        apps,
        "import",
        "create applications from an export",
        "authbroker apps import apps.json\n"
        "authbroker apps import apps.json --replace\n"
        'printf %s "$SECRET" | authbroker apps update google --client-secret-stdin',
        description="Create the apps of an export document that do not exist here; existing "
        "ones are skipped unless --replace (which updates their settings and keeps their "
        "secrets). Nothing is imported if any app is invalid. New apps wait for their client "
        "secret: set it with `authbroker apps update NAME --client-secret-stdin`.",
        parents=both,
    )
    p.add_argument("file", metavar="FILE", help="the export document ('-' for stdin)")
    p.add_argument("--replace", action="store_true", help="update apps that already exist")
    p.set_defaults(handler=_client_command(c.apps_import))

    p = _parser(
        apps,
        "presets",
        "list provider presets with their notes",
        "authbroker apps presets\nauthbroker apps presets google",
        description="List the provider presets `apps add --preset` starts from, with their "
        "notes; name one to see its settings and placeholders.",
        parents=(as_json,),
    )
    p.add_argument("name", nargs="?", help="show this preset's settings")
    p.set_defaults(handler=_local_command(c.apps_presets))

    p = _parser(
        apps,
        "diagnose",
        "check an application's settings (exit 1 when a check fails)",
        "authbroker apps diagnose google",
        parents=both,
    )
    p.add_argument("name")
    p.set_defaults(handler=_client_command(c.apps_diagnose))

    # ------------------------------------------------------------ basic
    basic = _group(
        sub,
        "basic",
        "Basic credentials (login and password): set, list, remove",
        'printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin\n'
        "authbroker basic list",
        "basic_command",
    )
    p = _parser(
        basic,
        "set",
        "create or replace a Basic credential",
        "authbroker basic set ftp --login alice            # asks for the password\n"
        'printf %s "$PASSWORD" | authbroker basic set ftp --login alice --password-stdin',
        description="Create or replace a Basic credential. The password is read from a prompt, "
        "or from stdin with --password-stdin; never from the command line.",
        parents=both,
    )
    p.add_argument("name")
    p.add_argument("--login", required=True, help="the login (user id; no ':')")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(handler=_client_command(c.basic_set))
    p = _parser(basic, "list", "list Basic credentials", "authbroker basic list", parents=both)
    p.set_defaults(handler=_client_command(c.basic_list))
    p = _parser(
        basic, "remove", "delete a Basic credential", "authbroker basic remove ftp", parents=both
    )
    p.add_argument("name")
    p.set_defaults(handler=_client_command(c.basic_remove))

    # ------------------------------------------------------------ connections
    conns = _group(
        sub,
        "connections",
        "OAuth connections: list, show, connect, refresh, delete, diagnose",
        "authbroker connections connect google --connection-id acme-google --wait\n"
        "authbroker connections list --app google",
        "connections_command",
    )
    p = _parser(
        conns,
        "list",
        "list connections",
        "authbroker connections list\n"
        "authbroker connections list --app google --status failed\n"
        "authbroker connections list --json --limit 5000",
        parents=both,
    )
    p.add_argument("--app", help="only this app's connections")
    p.add_argument(
        "--status",
        choices=["pending", "active", "failed", "expired", "revoking", "revoked"],
        help="only connections in this status",
    )
    p.add_argument("--limit", type=_positive, default=100, help="at most this many (100)")
    p.set_defaults(handler=_client_command(c.connections_list))

    p = _parser(
        conns,
        "show",
        "show a connection (never its tokens)",
        "authbroker connections show acme-google",
        parents=both,
    )
    p.add_argument("connection_id", metavar="ID")
    p.set_defaults(handler=_client_command(c.connections_show))

    p = _parser(
        conns,
        "connect",
        "start an authorization and print the URL to approve it",
        "authbroker connections connect google\n"
        "authbroker connections connect google --connection-id acme-google --wait\n"
        "authbroker connections connect google --scope openid --scope email --open --wait",
        description="Start an authorization for APP and print the URL where the account owner "
        "approves it (it is valid for 10 minutes). With --wait, wait for the outcome and print "
        "it: exit code 0 once the connection is active, 1 if the authorization failed or "
        "expired. Connecting an existing connection id authorizes it again.",
        parents=both,
    )
    p.add_argument("app", metavar="APP")
    p.add_argument("--connection-id", metavar="ID", help="the connection's id (default: generated)")
    p.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="request these scopes instead of the app's (repeat)",
    )
    p.add_argument(
        "--metadata",
        action="append",
        type=c.key_value,
        metavar="KEY=VALUE",
        help="metadata kept with the connection (repeat)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=c.AUTHORIZATION_LIFETIME,
        metavar="S",
        help="stop waiting after S seconds (default: the authorization's 10 minutes)",
    )
    p.add_argument("--open", action="store_true", help="open the URL in a local browser")
    p.set_defaults(handler=_client_command(c.connections_connect))

    p = _parser(
        conns,
        "refresh",
        "refresh a connection's tokens now (exit 1 if the refresh failed)",
        "authbroker connections refresh acme-google",
        parents=both,
    )
    p.add_argument("connection_id", metavar="ID")
    p.set_defaults(handler=_client_command(c.connections_refresh))

    p = _parser(
        conns,
        "delete",
        "revoke a connection's tokens at the provider and delete it",
        "authbroker connections delete acme-google",
        parents=both,
    )
    p.add_argument("connection_id", metavar="ID")
    p.set_defaults(handler=_client_command(c.connections_delete))

    p = _parser(
        conns,
        "diagnose",
        "walk a connection's common failures (exit 1 when a check fails)",
        "authbroker connections diagnose acme-google\n"
        "authbroker connections diagnose acme-google --json",
        parents=both,
    )
    p.add_argument("connection_id", metavar="ID")
    p.set_defaults(handler=_client_command(c.connections_diagnose))

    # ------------------------------------------------------------ events
    events = _group(
        sub,
        "events",
        "follow auth events",
        "authbroker events tail --app google",
        "events_command",
    )
    p = _parser(
        events,
        "tail",
        "print auth events as they happen",
        "authbroker events tail\n"
        "authbroker events tail --type connection.invalidated --type app. --app google\n"
        "authbroker events tail --from-start --json --limit 100 > events.jsonl",
        description="Print auth events as they happen, one line each: time (UTC), type, app, "
        "connection, problem, detail (or the event's JSON with --json). It reconnects after "
        "an interruption without losing events; Ctrl-C stops it.",
        parents=both,
    )
    p.add_argument(
        "--type",
        action="append",
        metavar="PREFIX",
        help="only events whose type starts with PREFIX (repeat), e.g. connection.refresh",
    )
    p.add_argument("--app", action="append", metavar="APP", help="only this app's events (repeat)")
    p.add_argument(
        "--from-start", action="store_true", help="begin with the oldest event Redis keeps"
    )
    p.add_argument("--limit", type=_positive, default=None, help="stop after N events")
    p.set_defaults(handler=_client_command(c.events_tail))


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authbroker",
        description="Keeps integrations authenticated: OAuth 2.0 connections and Basic "
        "credentials, refreshed, watched and revoked.",
        epilog=_examples(
            "authbroker run                                # try it: everything in one process\n"
            "authbroker apps add google --preset google --client-id ID\n"
            "authbroker connections connect google --wait\n"
            "authbroker events tail"
        )
        + "\n\nThe service reads its settings from AUTHBROKER_* environment variables (see "
        "README).\nCommands that use the API (apps, basic, connections, events) find it this "
        "way:\n" + CONNECTING + "\n`authbroker COMMAND --help` shows each command's options "
        "and examples.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"authbroker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _parser(
        sub,
        "run",
        "run web server, worker and event relay in one process",
        "authbroker run\nAUTHBROKER_PORT=9000 authbroker run --concurrency 5",
        description="Run the web server, a worker and the event relay in one process: the one "
        "command to try authbroker. Without AUTHBROKER_DATABASE_URL / AUTHBROKER_REDIS_URL it "
        "starts embedded Postgres and Redis under AUTHBROKER_DATA_DIR.",
    )
    run.add_argument(
        "--concurrency", type=_positive, default=None, help="jobs at once (default 20)"
    )
    run.set_defaults(handler=cmd_run)
    web = _parser(
        sub,
        "web",
        "run the HTTP server only",
        "AUTHBROKER_DATABASE_URL=postgresql://… AUTHBROKER_REDIS_URL=redis://… authbroker web\n"
        "authbroker web --workers 4      # four processes sharing AUTHBROKER_PORT (Linux)",
        description="Run the HTTP server only. With --workers N, migrate once and run N server "
        "processes sharing the port (SO_REUSEPORT, Linux); SIGINT/SIGTERM stop them all within "
        "10 s, and if one exits on its own the others are stopped and the command exits 1, for "
        "a supervisor to restart it.",
    )
    web.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="server processes (default 1)"
    )
    web.add_argument("--child-of", type=int, default=None, help=argparse.SUPPRESS)
    web.set_defaults(handler=cmd_web)
    w = _parser(
        sub,
        "worker",
        "run a worker (jobs, schedules and the event relay)",
        "authbroker worker --concurrency 50",
    )
    w.add_argument("--concurrency", type=_positive, default=None, help="jobs at once (default 20)")
    w.set_defaults(handler=cmd_worker)
    m = _parser(sub, "migrate", "apply database migrations and exit", "authbroker migrate")
    m.set_defaults(handler=cmd_migrate)

    keys = _group(
        sub,
        "keys",
        "encryption keys for secrets at rest",
        "authbroker keys generate --kid k2\nauthbroker keys rotate",
        "keys_command",
    )
    gen = _parser(
        keys,
        "generate",
        "print a new kid:key pair",
        'authbroker keys generate --kid k2\nexport AUTHBROKER_ENCRYPTION_KEYS="$(authbroker keys '
        'generate --kid k2),$AUTHBROKER_ENCRYPTION_KEYS"',
        description="Print a new kid:key pair. Put it first in AUTHBROKER_ENCRYPTION_KEYS, keep "
        "the old ones after it, then run `authbroker keys rotate`.",
    )
    gen.add_argument("--kid", default=None, help="key id (default: random)")
    gen.set_defaults(handler=cmd_keys_generate)
    rot = _parser(
        keys,
        "rotate",
        "re-seal every secret under the first key of AUTHBROKER_ENCRYPTION_KEYS",
        "authbroker keys rotate\nauthbroker keys rotate --batch 100 --json",
    )
    rot.add_argument("--batch", type=int, default=500)
    rot.add_argument("--json", action="store_true")
    rot.set_defaults(handler=cmd_keys_rotate)

    ak = _group(
        sub,
        "api-keys",
        "API keys for the HTTP API",
        "authbroker api-keys create runtime-eu1\nauthbroker api-keys list",
        "api_keys_command",
    )
    create = _parser(
        ak,
        "create",
        "create a key and print it once",
        "authbroker api-keys create runtime-eu1\n"
        "export AUTHBROKER_API_KEY=$(authbroker api-keys create ops --json | jq -r .key)",
    )
    create.add_argument("name", help="who or what uses the key, e.g. runtime-eu1")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_api_keys_create)
    lst = _parser(ak, "list", "list keys (never their secrets)", "authbroker api-keys list")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_api_keys_list)
    rev = _parser(ak, "revoke", "revoke a key by id", "authbroker api-keys revoke ak_1a2b3c")
    rev.add_argument("id")
    rev.set_defaults(handler=cmd_api_keys_revoke)

    _add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    if not getattr(args.handler, "uses_api", False):
        configure_logging(settings.log_format, settings.log_level)
    elif not structlog.is_configured():
        # API commands print their own output; only warnings from libraries reach the log.
        configure_logging(settings.log_format, "warning")
    try:
        code = asyncio.run(args.handler(settings, args))
    except SettingsError as exc:
        print(f"authbroker: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CliError, EmbeddedError) as exc:
        print(f"authbroker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `authbroker events tail | head`: the reader left; that is not an error.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code or 0
