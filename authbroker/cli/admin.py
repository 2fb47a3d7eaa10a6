"""Local administration on the database itself: encryption keys (`keys`) and API keys
(`api-keys`). These run where the database is reachable, not through the HTTP API: they are
how the first API key comes to exist in production."""

from __future__ import annotations

import json
from typing import Any

import click

from authbroker.cli.base import CliError, Group, as_json, service
from authbroker.cli.services import with_pool
from authbroker.config import Settings

keys = Group(
    "keys",
    short_help="encryption keys for secrets at rest",
    examples="authbroker keys generate --kid k2\nauthbroker keys rotate",
)


@keys.command(
    short_help="print a new kid:key pair",
    examples='authbroker keys generate --kid k2\nexport AUTHBROKER_ENCRYPTION_KEYS="$(authbroker '
    'keys generate --kid k2),$AUTHBROKER_ENCRYPTION_KEYS"',
)
@click.option("--kid", default=None, help="key id (default: random)")
@service
async def generate(settings: Settings, kid: str | None) -> None:
    """Print a new kid:key pair. Put it first in AUTHBROKER_ENCRYPTION_KEYS, keep the old ones
    after it, then run `authbroker keys rotate`."""
    from storage.sealing import KeyRing

    print(KeyRing.generate_line(kid))


@keys.command(
    short_help="re-seal every secret under the first key of AUTHBROKER_ENCRYPTION_KEYS",
    examples="authbroker keys rotate\nauthbroker keys rotate --batch 100 --json",
)
@click.option("--batch", type=int, default=500, help="rows re-sealed per transaction (500)")
@as_json
@service
async def rotate(settings: Settings, batch: int, as_json: bool) -> None:
    from storage.resources import load_key_ring
    from storage.rotation import rotate as reseal

    ring = load_key_ring(settings)
    counts: dict[str, int] = {}

    async def work(pool: Any) -> None:
        counts.update(await reseal(pool, ring, batch=batch))

    await with_pool(settings, work)
    if as_json:
        print(json.dumps({"key": ring.current_kid, "resealed": counts}))
    else:
        print(f"re-sealed under key {ring.current_kid!r}:")
        for table, count in counts.items():
            print(f"  {table:<18} {count}")


api_keys = Group(
    "api-keys",
    short_help="API keys for the HTTP API",
    examples="authbroker api-keys create runtime-eu1\nauthbroker api-keys list",
)


@api_keys.command(
    short_help="create a key and print it once",
    examples="authbroker api-keys create runtime-eu1\n"
    "export AUTHBROKER_API_KEY=$(authbroker api-keys create ops --json | jq -r .key)",
)
@click.argument("name")
@as_json
@service
async def create(settings: Settings, name: str, as_json: bool) -> None:
    """Create a key and print it once. NAME says who or what uses the key, e.g. runtime-eu1."""
    from storage import api_keys

    async def work(pool: Any) -> None:
        key, plaintext = await api_keys.create(pool, name)
        if as_json:
            print(json.dumps({"id": key.id, "name": key.name, "key": plaintext}))
        else:
            print(f"created API key {key.id} ({key.name}); it is shown only now:\n{plaintext}")

    await with_pool(settings, work)


@api_keys.command(
    "list", short_help="list keys (never their secrets)", examples="authbroker api-keys list"
)
@as_json
@service
async def list_keys(settings: Settings, as_json: bool) -> None:
    from storage import api_keys

    async def work(pool: Any) -> None:
        keys = await api_keys.list_all(pool)
        if as_json:
            print(json.dumps([k.__dict__ for k in keys], default=str))
            return
        print(f"{'ID':<14}{'NAME':<20}{'CREATED':<27}{'STATE'}")
        for k in keys:
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.id:<14}{k.name:<20}{k.created_at:%Y-%m-%d %H:%M:%S %Z}    {state}")

    await with_pool(settings, work)


@api_keys.command(short_help="revoke a key by id", examples="authbroker api-keys revoke ak_1a2b3c")
@click.argument("id")
@service
async def revoke(settings: Settings, id: str) -> None:
    from storage import api_keys

    async def work(pool: Any) -> None:
        if not await api_keys.revoke(pool, id):
            raise CliError(f"no active API key with id {id!r} (see: authbroker api-keys list)")
        print(f"revoked API key {id}")

    await with_pool(settings, work)
