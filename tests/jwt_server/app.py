"""A test-only authorization server built on authlib, run as a subprocess on loopback: it
authenticates clients with JWT assertions (RFC 7523 §2.2, `private_key_jwt` and
`client_secret_jwt`) as well as with id and secret (Basic or body), takes token and revocation
requests as JSON as well as form-encoded, and checks PKCE.

Each client registers (POST /test/clients) with one token endpoint auth method, which is the
only one the server accepts from it: like a real provider, it answers `invalid_client` to any
other. /authorize approves at once for the one user (no login page). /test/requests lists what
each client's requests looked like (endpoint, grant, body format, auth method, status), never
a credential.

Run: python -m tests.jwt_server.app (from the repository root); prints
`JWT_TEST_SERVER_READY {"port": N}` once listening on 127.0.0.1.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, OctKey
from werkzeug.serving import make_server

from tests.jwt_server import READY

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "client_secret_jwt"]
TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"

_lock = threading.Lock()
_clients: dict[str, Client] = {}
_codes: dict[str, dict[str, Any]] = {}
_tokens: dict[str, dict[str, Any]] = {}  # access and refresh tokens, by value
_seen_jti: set[str] = set()
_requests: list[dict[str, Any]] = []
BASE_URL = ""


@dataclass
class User:
    name: str = "alice"

    def get_user_id(self) -> str:
        return self.name


USER = User()


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    method: str
    redirect_uri: str
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return bool(self.client_secret) and hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in {"authorization_code", "refresh_token", "client_credentials"}


class Code:
    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.code_challenge = data["code_challenge"]
        self.code_challenge_method = data["code_challenge_method"]

    def get_redirect_uri(self) -> str:
        return self.data["redirect_uri"]

    def get_scope(self) -> str:
        return self.data["scope"]


class Token:
    def __init__(self, data: dict[str, Any]):
        self.data = data

    def check_client(self, client: Client) -> bool:
        return self.data["client_id"] == client.client_id

    def get_scope(self) -> str:
        return self.data["scope"]

    def get_expires_in(self) -> int:
        return self.data["expires_in"]

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.data["revoked"]

    def get_user(self) -> User:
        return USER

    def get_client(self) -> Client:
        return _clients[self.data["client_id"]]


def query_client(client_id: str) -> Client | None:
    return _clients.get(client_id)


def save_token(token: dict[str, Any], req: Any) -> None:
    with _lock:
        entry = {"client_id": req.client.client_id, "scope": token.get("scope", "")}
        for kind in ("access_token", "refresh_token"):
            if kind in token:
                _tokens[token[kind]] = {
                    **entry,
                    "type": kind,
                    "expires_in": token.get("expires_in", 0),
                    "revoked": False,
                }


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = METHODS

    def save_authorization_code(self, code: str, req: Any) -> None:
        data = req.payload.data
        with _lock:
            _codes[code] = {
                "client_id": req.client.client_id,
                "redirect_uri": req.payload.redirect_uri,
                "scope": req.payload.scope or "",
                "code_challenge": data.get("code_challenge"),
                "code_challenge_method": data.get("code_challenge_method"),
            }

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        data = _codes.get(code)
        return Code(data) if data and data["client_id"] == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        with _lock:
            for code, data in list(_codes.items()):
                if data is authorization_code.data:
                    del _codes[code]

    def authenticate_user(self, authorization_code: Code) -> User:
        return USER


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # refresh tokens rotate

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        data = _tokens.get(refresh_token)
        if data and data["type"] == "refresh_token" and not data["revoked"]:
            return Token(data)
        return None

    def authenticate_user(self, refresh_token: Token) -> User:
        return USER

    def revoke_old_credential(self, refresh_token: Token) -> None:
        refresh_token.data["revoked"] = True


class ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = METHODS


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        data = _tokens.get(token_string)
        return Token(data) if data else None

    def revoke_token(self, token: Token, req: Any) -> None:
        token.data["revoked"] = True


class Assertion(JWTBearerClientAssertion):
    """One JWT method (private_key_jwt or client_secret_jwt): it answers only for the clients
    registered with it, so that the other method gets its turn."""

    def __init__(self, method: str):
        super().__init__(validate_jti=True, leeway=5)
        self.CLIENT_AUTH_METHOD = method

    def __call__(self, query: Any, req: Any) -> Client | None:
        assertion = req.form.get("client_assertion")
        if req.form.get("client_assertion_type") == ASSERTION_TYPE and assertion:
            _, claims = self.extract_assertion(assertion)
            client = query(claims["sub"]) if isinstance(claims.get("sub"), str) else None
            if client is not None and client.method != self.CLIENT_AUTH_METHOD:
                return None
        return super().__call__(query, req)

    def get_audiences(self) -> list[str]:
        return [BASE_URL + TOKEN_PATH, BASE_URL]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        with _lock:
            if jti in _seen_jti:
                return False
            _seen_jti.add(jti)
            return True

    def resolve_client_public_key(self, client: Client) -> Any:
        if self.CLIENT_AUTH_METHOD == "client_secret_jwt":
            return OctKey.import_key(client.client_secret)
        return KeySet.import_key_set(client.jwks)


class JsonBodies:
    """WSGI middleware: a JSON token or revocation request is handed on form-encoded (authlib
    reads forms), its format noted for /test/requests."""

    def __init__(self, app: Any):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        environ["test.format"] = "json" if kind == "application/json" else "form"
        if kind == "application/json" and environ.get("PATH_INFO") in (TOKEN_PATH, REVOKE_PATH):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = json.loads(environ["wsgi.input"].read(length) or b"{}")
            body = urlencode({str(k): str(v) for k, v in data.items()}).encode()
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = _Body(body)
        return self.app(environ, start_response)


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, size: int = -1) -> bytes:
        chunk, self.data = (self.data, b"") if size < 0 else (self.data[:size], self.data[size:])
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


class Server(AuthorizationServer):
    def authenticate_client(self, req: Any, methods: Any, endpoint: str = "token") -> Any:
        """A refused client gets the plain answer most providers give (authlib's own lists
        every method it accepts, whatever was wrong)."""
        try:
            return super().authenticate_client(req, methods, endpoint)
        except InvalidClientError as exc:
            raise InvalidClientError(
                description="Client authentication failed.", status_code=exc.status_code
            ) from None


app = Flask(__name__)
app.config.update(OAUTH2_REFRESH_TOKEN_GENERATOR=True)
server = Server(app, query_client=query_client, save_token=save_token)
server.register_grant(CodeGrant, [CodeChallenge(required=True)])
server.register_grant(RefreshGrant)
server.register_grant(ClientCredentials)
server.register_endpoint(Revocation)
for name in ("private_key_jwt", "client_secret_jwt"):
    server.register_client_auth_method(name, Assertion(name))


def _record(endpoint: str, response: Any) -> Any:
    client_id = getattr(request, "oauth_client_id", None)
    body = response.get_json(silent=True) or {}
    with _lock:
        _requests.append(
            {
                "endpoint": endpoint,
                "client_id": client_id,
                "grant_type": request.form.get("grant_type"),
                "format": request.environ["test.format"],
                "basic": request.headers.get("Authorization", "").startswith("Basic "),
                "assertion": "client_assertion" in request.form,
                "audience": request.form.get("audience"),
                "status": response.status_code,
                "error": body.get("error"),
            }
        )
    return response


@app.get("/authorize")
def authorize() -> Any:
    return server.create_authorization_response(grant_user=USER)


@app.post(TOKEN_PATH)
def token() -> Any:
    request.oauth_client_id = _claimed_client()  # type: ignore[attr-defined]
    return _record("token", server.create_token_response())


@app.post(REVOKE_PATH)
def revoke() -> Any:
    request.oauth_client_id = _claimed_client()  # type: ignore[attr-defined]
    return _record("revocation", server.create_endpoint_response("revocation"))


def _claimed_client() -> str | None:
    """Who the request says it is, for the record only (authlib does the checking)."""
    if request.authorization and request.authorization.username:
        return request.authorization.username
    return request.form.get("client_id")


@app.post("/test/clients")
def register() -> Any:
    data = request.get_json()
    client = Client(
        client_id=data.get("client_id") or "jwt-" + secrets.token_hex(8),
        client_secret=data.get("client_secret") or "",
        method=data["method"],
        redirect_uri=data["redirect_uri"],
        jwks=data.get("jwks") or {"keys": []},
    )
    with _lock:
        _clients[client.client_id] = client
    return jsonify({"client_id": client.client_id}), 201


@app.put("/test/clients/<client_id>/jwks")
def set_jwks(client_id: str) -> Any:
    with _lock:
        _clients[client_id].jwks = request.get_json()
    return jsonify({"ok": True})


@app.get("/test/requests")
def requests_made() -> Any:
    with _lock:
        return jsonify(list(_requests))


@app.get("/test/token")
def token_state() -> Any:
    """Whether a token (given in the X-Token header) is known and revoked."""
    data = _tokens.get(request.headers.get("X-Token", ""))
    return jsonify({"known": data is not None, "revoked": bool(data and data["revoked"])})


@app.get("/test/health")
def health() -> Any:
    return "ok"


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main() -> None:
    global BASE_URL
    httpd = make_server("127.0.0.1", 0, JsonBodies(app), threaded=True)
    BASE_URL = f"http://127.0.0.1:{httpd.server_port}"
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    sys.stdout.write(READY + json.dumps({"port": httpd.server_port}) + "\n")
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
