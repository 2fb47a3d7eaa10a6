"""A fast fake OAuth provider: an aiohttp token endpoint in a process of its own.

- `POST /token`, `grant_type=refresh_token`: a known refresh token is consumed (rotation) and a
  new random access and refresh token are issued, `expires_in` 3600; an unknown or reused one is
  a 400 `invalid_grant` (counted as `reused`).
- `POST /token`, `grant_type=authorization_code`: any code starting with `code-` gives tokens.
- `POST /register`: a JSON list of refresh tokens the provider must accept (bulk seeding).
- `GET /stats`: counts of everything above.
- `GET|POST /control?mode=503|ok`: in 503 mode every token request is answered 503 (an outage)
  and no token is consumed.

Started with `ProviderProcess().start()` (a subprocess on a free loopback port) or
`python -m bench.provider --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"  # the fake provider's client secret, not a real credential
LIFETIME = 3600


class FakeProvider:
    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.mode = "ok"

    def _tokens(self) -> dict[str, Any]:
        refresh = "rt-" + secrets.token_urlsafe(24)
        self.valid.add(refresh)
        return {
            "access_token": "at-" + secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": LIFETIME,
            "refresh_token": refresh,
            "scope": "read",
        }

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        self.counts[f"requests_{grant}"] += 1
        if self.mode == "503":
            self.counts["unavailable_503"] += 1
            return web.Response(status=503, text="down for the benchmark")
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            self.counts["invalid_client"] += 1
            return web.json_response({"error": "invalid_client"}, status=401)
        if grant == "refresh_token":
            presented = str(form.get("refresh_token", ""))
            if presented not in self.valid:
                self.counts["reused"] += 1
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "refresh token reused"},
                    status=400,
                )
            self.valid.discard(presented)
            self.counts["refreshed"] += 1
            return web.json_response(self._tokens())
        if grant == "authorization_code":
            if not str(form.get("code", "")).startswith("code-"):
                self.counts["bad_code"] += 1
                return web.json_response({"error": "invalid_grant"}, status=400)
            self.counts["exchanged"] += 1
            return web.json_response(self._tokens())
        self.counts["unsupported_grant"] += 1
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    async def register(self, request: web.Request) -> web.Response:
        tokens = await request.json()
        self.valid.update(tokens)
        self.counts["registered"] += len(tokens)
        return web.json_response({"registered": len(tokens), "valid": len(self.valid)})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.counts, "valid": len(self.valid), "mode": self.mode})

    async def control(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "ok")
        if mode not in ("ok", "503"):
            return web.json_response({"error": "mode is ok or 503"}, status=400)
        self.mode = mode
        return web.json_response({"mode": mode})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/token", self.token),
                web.post("/register", self.register),
                web.get("/stats", self.stats),
                web.get("/control", self.control),
                web.post("/control", self.control),
            ]
        )
        return app


def serve(port: int) -> None:
    web.run_app(FakeProvider().app(), host="127.0.0.1", port=port, access_log=None, print=None)


class ProviderProcess:
    """The fake provider in a subprocess, and a small client for its control endpoints."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.token_url = f"{self.url}/token"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ProviderProcess:
        root = Path(__file__).resolve().parent.parent
        self.process = subprocess.Popen(  # a fixed module of this folder
            [sys.executable, "-m", "bench.provider", "--port", str(self.port)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"fake provider exited: {err[-2000:]}")
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            time.sleep(0.05)
        raise RuntimeError("fake provider did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, **kw) as response,
        ):
            response.raise_for_status()
            return await response.json()

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/stats")

    async def set_mode(self, mode: str) -> None:
        await self._call("POST", f"/control?mode={mode}")

    async def register(self, tokens: list[str]) -> None:
        for start in range(0, len(tokens), 50_000):
            await self._call(
                "POST",
                "/register",
                data=json.dumps(tokens[start : start + 50_000]),
                headers={"Content-Type": "application/json"},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's fake OAuth provider")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port)


if __name__ == "__main__":
    main()
