"""Start the authlib test server of `app.py` in a subprocess and drive it over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
READY = "JWT_TEST_SERVER_READY "


class JWTTestServer:
    """The authlib server on loopback: register clients with one auth method each, approve
    authorizations, and read what each client's requests looked like."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorization_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def revoke_url(self) -> str:
        return self.base_url + "/revoke"

    def start(self) -> None:
        """Start and wait for the ready line (the server prints it once listening)."""
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.jwt_server.app"],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        if not line.startswith(READY):
            self.stop()
            raise RuntimeError(f"the JWT test server did not start: {self.log_path.read_text()}")
        self.port = int(json.loads(line[len(READY) :])["port"])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base_url + path, **kwargs) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()

    async def register(
        self,
        *,
        method: str,
        redirect_uri: str,
        client_secret: str = "",
        jwks: dict[str, Any] | None = None,
    ) -> str:
        """A new client that may authenticate only with `method`; its client id."""
        body = {"method": method, "redirect_uri": redirect_uri, "client_secret": client_secret}
        found = await self._call("POST", "/test/clients", json={**body, "jwks": jwks})
        return found["client_id"]

    async def set_jwks(self, client_id: str, jwks: dict[str, Any]) -> None:
        await self._call("PUT", f"/test/clients/{client_id}/jwks", json=jwks)

    async def requests(self, client_id: str) -> list[dict[str, Any]]:
        """Each request that named `client_id`, in order: endpoint, grant_type, format,
        basic, assertion, status, error."""
        found = await self._call("GET", "/test/requests")
        return [r for r in found if r["client_id"] == client_id]

    async def token_state(self, token: str) -> dict[str, bool]:
        return await self._call("GET", "/test/token", headers={"X-Token": token})

    async def approve(self, authorize_url: str) -> str:
        """The redirect back to the client (the server approves at once)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(authorize_url, allow_redirects=False) as response,
        ):
            assert response.status == 302, await response.text()
            return response.headers["Location"]
