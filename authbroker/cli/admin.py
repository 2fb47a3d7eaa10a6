"""Local administration on the database itself: encryption keys (`keys`). These run where the
database is reachable, not through the HTTP API. (API keys: `authbroker.cli.api_keys`.)"""

from __future__ import annotations

import json
from typing import Any

import click

from authbroker.cli.base import Group, as_json, service
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
