"""Start the test-only DOT authorization server in a subprocess and drive it over HTTP.

Typical use in a pytest fixture::

    @pytest.fixture(scope="session")
    def oauth_server(tmp_path_factory):
        server = OAuthTestServer(tmp_path_factory.mktemp("oauth"))
        server.start("http://127.0.0.1:8765/oauth/callback")
        yield server
        server.stop()

and in a test::

    location = await oauth_server.approve(authorize_url)   # -> ".../callback?code=...&state=..."
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote_plus, urlencode, urljoin, urlsplit

import aiohttp

HERE = pathlib.Path(__file__).resolve().parent
READY_PREFIX = "OAUTH_TEST_SERVER_READY "


class OAuthTestServerError(RuntimeError):
    """The server could not be started or answered unexpectedly."""


class ApprovalError(OAuthTestServerError):
    """The browser-like consent flow did not end in a redirect to the client.

    ``status``/``url``/``body`` describe the last response seen, e.g. DOT's 400 error page
    for an unknown ``client_id`` or a ``redirect_uri`` that is not registered (DOT never
    redirects to an unverified redirect URI).
    """

    def __init__(
        self, message: str, *, status: int | None = None, url: str | None = None, body: str = ""
    ):
        super().__init__(f"{message} (status={status}, url={url}): {body[:2000]}")
        self.status = status
        self.url = url
        self.body = body


def pkce_pair() -> tuple[str, str]:
    """Return ``(code_verifier, code_challenge)`` for PKCE S256."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
        .rstrip(b"=")
        .decode()
    )
    return verifier, challenge


def basic_auth_header(client_id: str, client_secret: str) -> str:
    """``Authorization`` value for client_secret_basic (id and secret form-urlencoded first)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- HTML forms


class _Form:
    def __init__(self, attrs: dict[str, str | None]):
        self.attrs = attrs
        self.id = attrs.get("id") or ""
        self.action = attrs.get("action") or ""
        self.method = (attrs.get("method") or "get").lower()
        self.fields: list[tuple[str, str]] = []  # non-submit inputs, in document order
        self.submits: list[tuple[str | None, str]] = []  # (name, value)

    def names(self) -> set[str]:
        return {name for name, _ in self.fields}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._current = _Form(a)
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None:
            kind = (a.get("type") or "text").lower()
            if kind == "submit":
                self._current.submits.append((a.get("name"), a.get("value") or ""))
            elif a.get("name"):
                if kind in ("checkbox", "radio") and "checked" not in a:
                    return
                self._current.fields.append((a["name"], a.get("value") or ""))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _parse_forms(html: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


# --------------------------------------------------------------------------- the server


class OAuthTestServer:
    """A real django-oauth-toolkit authorization server on loopback, in a subprocess.

    * One confidential authorization-code application (``client_id``/``client_secret``,
      plaintext secret; DOT stores it hashed), registered for exactly the redirect URI
      given to :meth:`start`. ``skip_authorization=False``: a consent form is shown on every
      authorization (``REQUEST_APPROVAL_PROMPT="force"``).
    * PKCE is required and only ``S256`` is accepted.
    * Refresh tokens rotate; a rotated-out refresh token is refused with
      ``400 invalid_grant`` once ``refresh_grace_seconds`` (default 0) have passed.
    * Scopes ``read``, ``write``, ``profile``; default scope ``read``.
    * Resource owner ``username``/``password`` (``alice``/``wonderland-pass-1``).
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        access_token_lifetime: int = 3600,
        refresh_grace_seconds: int = 0,
        refresh_reuse_protection: bool = False,
        authorization_code_lifetime: int = 60,
        username: str = "alice",
        password: str = "wonderland-pass-1",
        python: str | None = None,
    ) -> None:
        self.workdir = pathlib.Path(workdir)
        self.access_token_lifetime = int(access_token_lifetime)
        self.refresh_grace_seconds = int(refresh_grace_seconds)
        self.refresh_reuse_protection = bool(refresh_reuse_protection)
        self.authorization_code_lifetime = int(authorization_code_lifetime)
        self.username = username
        self.password = password
        self.python = python or sys.executable

        self.redirect_uri: str | None = None
        self.client_id: str = "authbroker-test-" + secrets.token_hex(8)
        self.client_secret: str = secrets.token_urlsafe(32)
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self.log_path = self.workdir / "oauth_server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # ------------------------------------------------------------------ URLs
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise OAuthTestServerError("server not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorization_url(self) -> str:
        return self.base_url + "/o/authorize/"

    @property
    def token_url(self) -> str:
        return self.base_url + "/o/token/"

    @property
    def revoke_url(self) -> str:
        return self.base_url + "/o/revoke_token/"

    @property
    def introspection_url(self) -> str:
        """DOT's RFC 7662 endpoint (needs a Bearer token with the ``introspection`` scope
        or client credentials); tests usually want :meth:`introspect` instead."""
        return self.base_url + "/o/introspect/"

    @property
    def resource_url(self) -> str:
        return self.base_url + "/api/me"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self, redirect_uri: str, *, timeout: float = 30.0) -> None:
        """Create the SQLite schema, the user and the main app, then serve on a free port.

        Blocks until the server answers ``/test/health``; raises
        :class:`OAuthTestServerError` with the server's stderr if it dies or times out.
        """
        if self._proc is not None:
            raise OAuthTestServerError("server already started")
        self.redirect_uri = redirect_uri
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()

        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(HERE),
                "DJANGO_SETTINGS_MODULE": "project.settings",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "OAUTH_TEST_SERVER_DIR": str(self.workdir),
                "OAUTH_TEST_ACCESS_TOKEN_LIFETIME": str(self.access_token_lifetime),
                "OAUTH_TEST_REFRESH_GRACE_SECONDS": str(self.refresh_grace_seconds),
                "OAUTH_TEST_REFRESH_REUSE_PROTECTION": "1"
                if self.refresh_reuse_protection
                else "0",
                "OAUTH_TEST_AUTH_CODE_LIFETIME": str(self.authorization_code_lifetime),
                "OAUTH_TEST_SECRET_KEY": secrets.token_urlsafe(50),
                "OAUTH_TEST_USERNAME": self.username,
                "OAUTH_TEST_PASSWORD": self.password,
                "OAUTH_TEST_CLIENT_ID": self.client_id,
                "OAUTH_TEST_CLIENT_SECRET": self.client_secret,
                "OAUTH_TEST_REDIRECT_URI": redirect_uri,
                "OAUTH_TEST_HOST": "127.0.0.1",
                "OAUTH_TEST_PORT": "0",
                "OAUTH_TEST_PARENT_PID": str(os.getpid()),
            }
        )
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            [self.python, "-m", "project.serve"],
            cwd=str(self.workdir),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )
        try:
            info = self._read_ready_line(t0 + timeout)
            self.port = int(info["port"])
            self._wait_healthy(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def _read_ready_line(self, deadline: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OAuthTestServerError(
                        f"OAuth test server did not start in time; stderr:\n{self._server_log()}"
                    )
                if sel.select(timeout=min(remaining, 0.5)):
                    chunk = os.read(stdout.fileno(), 4096)
                    if not chunk:  # EOF: the process died (or closed stdout early)
                        rc = self._proc.wait(timeout=5)
                        raise OAuthTestServerError(
                            f"OAuth test server exited with code {rc}; "
                            f"stderr:\n{self._server_log()}"
                        )
                    buf += chunk
                    for line in buf.decode("utf-8", "replace").splitlines():
                        if line.startswith(READY_PREFIX):
                            stdout.close()
                            return json.loads(line[len(READY_PREFIX) :])
                elif self._proc.poll() is not None:
                    raise OAuthTestServerError(
                        f"OAuth test server exited with code {self._proc.returncode}; "
                        f"stderr:\n{self._server_log()}"
                    )

    def _wait_healthy(self, deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise OAuthTestServerError(f"OAuth test server died; stderr:\n{self._server_log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/test/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        raise OAuthTestServerError(
            f"OAuth test server not answering ({last!r}); stderr:\n{self._server_log()}"
        )

    def stop(self) -> None:
        """Terminate the subprocess (SIGTERM, then SIGKILL after 5 s). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __del__(self) -> None:  # best effort: never leak a server process
        with contextlib.suppress(Exception):
            self.stop()

    # ------------------------------------------------------------------ sync helpers
    def _post_json_sync(self, path: str, payload: dict) -> dict:
        req = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise OAuthTestServerError(f"{path} -> {exc.code}: {exc.read()[:2000]!r}") from exc

    def create_application(
        self,
        redirect_uri: str,
        *,
        name: str,
        confidential: bool = True,
        grant: str = "authorization-code",
    ) -> tuple[str, str]:
        """Register another application (exact ``redirect_uri``) for one grant:
        ``authorization-code`` (default) or ``client-credentials``.

        Returns ``(client_id, client_secret)``; the secret is ``""`` for a public client.
        Synchronous (plain urllib): fine to call from async tests, it only blocks briefly.
        """
        data = self._post_json_sync(
            "/test/applications",
            {
                "redirect_uri": redirect_uri,
                "name": name,
                "confidential": confidential,
                "grant": grant,
            },
        )
        return data["client_id"], data["client_secret"]

    # ------------------------------------------------------------------ URL builder
    def build_authorize_url(
        self,
        *,
        state: str,
        code_challenge: str,
        scope: str | None = "read write",
        client_id: str | None = None,
        redirect_uri: str | None = None,
        **extra: str,
    ) -> str:
        """Convenience: an authorization-code + PKCE S256 authorize URL."""
        params = {
            "response_type": "code",
            "client_id": client_id or self.client_id,
            "redirect_uri": redirect_uri or self.redirect_uri or "",
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if scope is not None:
            params["scope"] = scope
        params.update(extra)
        return self.authorization_url + "?" + urlencode(params)

    # ------------------------------------------------------------------ browser
    def _is_local(self, url: str) -> bool:
        """Whether `url` is this server: its port on loopback, or on a name under .localhost
        (the hosts per-connection settings are tested with)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        loopback = host in ("127.0.0.1", "localhost") or host.endswith(".localhost")
        return parts.scheme == "http" and parts.port == self.port and loopback

    async def approve(
        self,
        authorize_url: str,
        *,
        allow: bool = True,
        scopes: list[str] | None = None,
        username: str | None = None,
        password: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> str:
        """Act like a browser on ``authorize_url`` and return the final redirect Location.

        A fresh cookie jar is used each time (so the user always logs in first). Redirects
        are followed only while they stay on ``base_url``; the redirect to the client's
        ``redirect_uri`` is *not* requested, its full URL is returned instead
        (``...?code=...&state=...`` or ``...?error=access_denied&state=...``).

        ``allow=False`` submits the form with the Cancel button (no ``allow`` field).

        ``scopes``: DOT's consent form carries the requested scopes in a hidden ``scope``
        field and DOT issues the grant for whatever that field holds on POST (it checks
        the scopes exist, not that they are a subset of the request), so passing e.g.
        ``["read"]`` simulates a user granting fewer scopes than requested. The token
        response's ``scope`` then reflects the reduced set.

        ``authorize_url`` may also be a client URL (e.g. authbroker's "start login"
        endpoint) that redirects to the authorize endpoint. Pass ``session`` (an
        ``aiohttp.ClientSession`` whose jar was made with ``CookieJar(unsafe=True)``) to
        reuse its cookies, e.g. to call the client's callback afterwards with the same
        cookies; the user's login at this server then persists in that jar too.

        Raises :class:`ApprovalError` if the flow ends anywhere else, e.g. DOT's 400 error
        page for an unknown client or an unregistered redirect URI, or a failed login.
        """
        if session is not None:
            return await self._approve(session, authorize_url, allow, scopes, username, password)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for a bare IP host
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as own_session:
            return await self._approve(
                own_session, authorize_url, allow, scopes, username, password
            )

    async def _approve(
        self,
        session: aiohttp.ClientSession,
        authorize_url: str,
        allow: bool,
        scopes: list[str] | None,
        username: str | None,
        password: str | None,
    ) -> str:
        username = self.username if username is None else username
        password = self.password if password is None else password
        url = authorize_url
        method = "GET"
        data: list[tuple[str, str]] | None = None
        logged_in = consented = False
        for _ in range(20):
            async with session.request(method, url, data=data, allow_redirects=False) as resp:
                status = resp.status
                body = await resp.text()
                location = resp.headers.get("Location")
            if status in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if not self._is_local(target):
                    return target
                url, method, data = target, "GET", None
                continue
            if status != 200:
                raise ApprovalError("unexpected response", status=status, url=url, body=body)

            forms = _parse_forms(body)
            login = next((f for f in forms if "password" in f.names()), None)
            consent = next((f for f in forms if f.id == "authorizationForm"), None)
            if login is not None:
                if logged_in:
                    raise ApprovalError("login failed", status=status, url=url, body=body)
                logged_in = True
                fields = [(n, v) for n, v in login.fields if n not in ("username", "password")]
                fields += [("username", username), ("password", password)]
                url, method, data = urljoin(url, login.action or url), "POST", fields
                continue
            if consent is not None:
                if consented:
                    raise ApprovalError(
                        "consent form shown again", status=status, url=url, body=body
                    )
                consented = True
                fields = [(n, v) for n, v in consent.fields if n != "allow"]
                if scopes is not None:
                    fields = [(n, v) for n, v in fields if n != "scope"] + [
                        ("scope", " ".join(scopes))
                    ]
                if allow:
                    allow_value = next((v for n, v in consent.submits if n == "allow"), "Authorize")
                    fields.append(("allow", allow_value))
                url, method, data = urljoin(url, consent.action or url), "POST", fields
                continue
            raise ApprovalError(
                "page has neither a login nor a consent form", status=status, url=url, body=body
            )
        raise ApprovalError("too many steps", url=url)

    # ------------------------------------------------------------------ async helpers
    async def _request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(method, self.base_url + path, **kwargs) as resp,
        ):
            text = await resp.text()
            if resp.status >= 400:
                raise OAuthTestServerError(f"{method} {path} -> {resp.status}: {text[:2000]}")
            return json.loads(text)

    async def token_request(
        self,
        data: dict[str, str],
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth: str = "basic",
    ) -> tuple[int, dict]:
        """POST ``data`` to the token endpoint as a client would: ``(status, json)``.

        ``auth="basic"`` sends ``client_secret_basic`` (form-urlencoded id/secret, RFC 6749
        §2.3.1), ``"post"`` puts them in the body, ``"none"`` sends ``client_id`` only.
        Defaults to the main application's credentials.
        """
        client_id = self.client_id if client_id is None else client_id
        client_secret = self.client_secret if client_secret is None else client_secret
        form = dict(data)
        headers = {}
        if auth == "basic":
            headers["Authorization"] = basic_auth_header(client_id, client_secret)
        elif auth == "post":
            form.update(client_id=client_id, client_secret=client_secret)
        elif auth == "none":
            form["client_id"] = client_id
        else:
            raise ValueError(f"unknown auth method {auth!r}")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(self.token_url, data=form, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, {"_raw": text}

    async def stats(self) -> dict:
        """``{"token_requests": {grant_type: {status: n}}, "revocations": {status: n},
        "resource_requests": {status: n}, "last_params": {grant_type: {name: [values]}}}``
        since start or the last :meth:`reset_stats`. Status codes are strings; a token POST
        without ``grant_type`` counts as ``"missing"``. ``last_params`` keeps the last token
        request's ``scope``, ``audience`` and ``resource`` values (never a secret) per grant."""
        return await self._request_json("GET", "/test/stats")

    async def host_stats(self) -> dict:
        """``{host: {kind: n}}``: the requests each host name received (the Host header, without
        its port) since start or the last :meth:`reset_stats`; ``kind`` is ``authorize``,
        ``token:<grant_type>``, ``revoke`` or ``resource``."""
        return await self._request_json("GET", "/test/stats/hosts")

    async def set_token_delay(self, seconds: float) -> None:
        """Answer every later token request ``seconds`` after processing it: the tokens are
        issued (and a rotated refresh token revoked) at once, only the answer is late."""
        await self._request_json("POST", "/test/token-delay", data=json.dumps({"seconds": seconds}))

    async def reset_stats(self) -> None:
        await self._request_json("POST", "/test/stats/reset")

    async def introspect(self, token: str) -> dict:
        """Server-side lookup of a raw token.

        Returns ``{"active": bool, "type": "access"|"refresh"|None, ...}``.

        Access tokens also report ``scope``, ``client_id``, ``username``, ``expires_in``;
        refresh tokens ``revoked``, ``client_id``, ``username``. A rotated-out or revoked
        refresh token is ``active: False``; a revoked access token is deleted by DOT, so it
        reports ``{"active": False, "type": None}``.
        """
        return await self._request_json("POST", "/test/introspect", data={"token": token})

    async def call_resource(self, access_token: str) -> tuple[int, dict | str]:
        """GET ``/api/me`` with a Bearer token: ``(status, json_or_text)``.

        200 -> ``{"user": ..., "scope": ..., "client_id": ...}``; 401 otherwise (see
        :meth:`call_resource_raw` for the ``WWW-Authenticate`` header)."""
        status, body, _ = await self.call_resource_raw(access_token)
        return status, body

    async def call_resource_raw(
        self, access_token: str | None
    ) -> tuple[int, dict | str, dict[str, str]]:
        headers = {"Authorization": f"Bearer {access_token}"} if access_token is not None else {}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(self.resource_url, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                body: dict | str = json.loads(text)
            except ValueError:
                body = text
            return resp.status, body, dict(resp.headers)
