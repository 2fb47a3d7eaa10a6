"""`authbroker apps keys`: an app's private keys for private_key_jwt, through the HTTP API.
Private keys go in (from stdin, never as an argument) and never come out; the public JWKS does,
to register at the provider."""

from __future__ import annotations

import json
from typing import Any

import click

from authbroker.cli.api import ApiGroup, api_call
from authbroker.cli.base import CliError, as_json
from authbroker.cli.inputs import read_file
from authbroker.cli.output import emit
from authbroker.client import AuthbrokerClient, segment

keys = ApiGroup(
    "keys",
    short_help="private_key_jwt keys: generate, upload, show the public JWKS",
    examples="authbroker apps keys generate crm --alg ES256\n"
    "authbroker apps keys upload crm < private-key.pem\n"
    "authbroker apps keys jwks crm > crm-jwks.json",
)

DROP_PREVIOUS = click.option(
    "--drop-previous",
    is_flag=True,
    help="forget the key this one replaces at once (default: kept as the previous key, tried "
    "after the new one, until the next change)",
)


async def _add(api: AuthbrokerClient, name: str, body: dict[str, Any], as_json: bool) -> None:
    _, added = await api.post(f"/v1/apps/{segment(name)}/keys", body)
    if as_json:
        emit(added)
        return
    print(f"app {added['app']} signs its client assertions with key {added['kid']}")
    print("register its public key at the provider (authbroker apps keys jwks NAME):")
    print(json.dumps(added["jwks"]["keys"][0], indent=2))


@keys.command(
    short_help="make a new signing key",
    examples="authbroker apps keys generate crm\nauthbroker apps keys generate crm --alg ES256",
)
@click.argument("name")
@click.option(
    "--alg",
    type=click.Choice(["RS256", "ES256"]),
    default="RS256",
    show_default=True,
    help="RS256 (RSA 2048) or ES256 (P-256)",
)
@DROP_PREVIOUS
@as_json
@api_call
async def generate(
    api: AuthbrokerClient, name: str, alg: str, drop_previous: bool, as_json: bool
) -> None:
    """Generate a new private key for the app's client assertions (private_key_jwt) and print
    its public key to register at the provider."""
    await _add(api, name, {"alg": alg, "keep_previous": not drop_previous}, as_json)


@keys.command(
    short_help="use your own private key (PEM on stdin)",
    examples="authbroker apps keys upload crm < private-key.pem",
)
@click.argument("name")
@DROP_PREVIOUS
@as_json
@api_call
async def upload(api: AuthbrokerClient, name: str, drop_previous: bool, as_json: bool) -> None:
    """Make your own private key the app's signing key: an unencrypted PEM (RSA of 2048 bits or
    more, or EC P-256) read from stdin, never from the command line."""
    pem = (await read_file("-")).strip()
    if not pem:
        raise CliError("no private key on stdin (e.g. authbroker apps keys upload NAME < key.pem)")
    await _add(api, name, {"private_key_pem": pem, "keep_previous": not drop_previous}, as_json)


@keys.command(
    short_help="print the app's public keys (JWKS)",
    examples="authbroker apps keys jwks crm > crm-jwks.json",
)
@click.argument("name")
@api_call
async def jwks(api: AuthbrokerClient, name: str) -> None:
    """Print the app's public keys as a JWK Set, the signing key first: what to register at the
    provider (or let it fetch {public_url}/oauth/jwks/NAME, with jwks_public on)."""
    emit(await api.get(f"/v1/apps/{segment(name)}/jwks"))
