"""The OAuth 2.0 client protocol (authbroker.oauth) against providers shaped with aioresponses.

Each test captures the exact request authbroker sends (method, headers, form, query) and checks
what a provider, an operator or a runtime would notice: parameters, credential placement,
parsed tokens, and the Problem every failure is classified into.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import importlib
import inspect
import json
import pickle
import pkgutil
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from authbroker import oauth
from authbroker.oauth import (
    Client,
    OAuthError,
    ProviderMalformed,
    ProviderRejected,
    ProviderUnavailable,
    TokenResponse,
    basic_credentials,
    build_authorize_url,
    callback_problem,
    classify,
    code_challenge,
    exchange_code,
    new_code_verifier,
    new_state,
    parse_scopes,
    refresh_token,
    request_token,
    revoke_token,
    state_digest,
)
from authbroker.problems import Problem

AUTHORIZE_URL = "https://provider.example/oauth/authorize"
TOKEN_URL = "https://provider.example/oauth/token"
REVOKE_URL = "https://provider.example/oauth/revoke"
REDIRECT_URI = "https://broker.example/oauth/callback"
CLIENT_ID = "my client@example"
# ":" "+" "/" " " and non-ASCII: everything RFC 6749 §2.3.1's form-urlencoding step changes.
SECRET = "s3cr:et+/ é"
# quote_plus of the two, written out so the test does not share the code under test.
BASIC = "Basic " + base64.b64encode(b"my+client%40example:s3cr%3Aet%2B%2F+%C3%A9").decode()
CODE = "auth-code-4/0AY0e-g7"
VERIFIER = "v" * 64
REFRESH = "1//refresh-token-value"


# --------------------------------------------------------------------------------------------
# Fixtures and a provider double that records what it receives
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@dataclass
class Seen:
    """One request as the provider received it."""

    method: str
    url: URL
    headers: dict[str, str]
    form: dict[str, str] | None
    allow_redirects: bool

    @property
    def query(self) -> dict[str, str]:
        return dict(self.url.query)


def respond(
    mock: aioresponses,
    *,
    method: str = "POST",
    url: str = TOKEN_URL,
    status: int = 200,
    payload: Any = None,
    body: str | bytes = "",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    into: list[Seen] | None = None,
    repeat: bool = False,
) -> list[Seen]:
    """Answer the next `method` request to `url` (any query), or every one with `repeat`, and
    record them in the returned list."""
    seen: list[Seen] = [] if into is None else into

    def callback(request_url: URL, **kwargs: Any) -> CallbackResult:
        data = kwargs.get("data")
        form = None if data is None else dict(parse_qsl(data.decode(), keep_blank_values=True))
        seen.append(
            Seen(method, request_url, dict(kwargs["headers"]), form, kwargs["allow_redirects"])
        )
        if payload is not None:
            text: str | bytes = json.dumps(payload)
        else:
            text = body
        return CallbackResult(status=status, body=text, content_type=content_type, headers=headers)

    mock.add(
        re.compile(re.escape(url) + r"(\?.*)?$"), method=method, callback=callback, repeat=repeat
    )
    return seen


def client(**overrides: Any) -> Client:
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "authorization_url": AUTHORIZE_URL,
        "token_url": TOKEN_URL,
        "revoke_url": REVOKE_URL,
    }
    values.update(overrides)
    return Client(**values)


def slack_shaped(**overrides: Any) -> Client:
    """A client whose provider says `ok: false` for errors, as the Slack preset describes it."""
    return client(token_shape=oauth.TokenShape(success_field="ok"), **overrides)


TOKENS = {
    "access_token": "ya29.access",
    "token_type": "Bearer",
    "expires_in": 3599,
    "refresh_token": REFRESH,
    "scope": "openid email",
}


async def exchange(session: aiohttp.ClientSession, app: Client, **kw: Any) -> TokenResponse:
    return await exchange_code(
        session, app, code=CODE, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER, **kw
    )


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --------------------------------------------------------------------------------------------
# State, PKCE and the authorization URL
# --------------------------------------------------------------------------------------------


def test_pkce_matches_rfc_7636_appendix_b() -> None:
    assert (
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_new_code_verifier_is_64_unreserved_characters_and_fresh() -> None:
    verifiers = {new_code_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{64}", verifier)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", code_challenge(verifier))


def test_state_is_256_bits_url_safe_and_stored_as_sha256() -> None:
    states = {new_state() for _ in range(50)}
    assert len(states) == 50
    state = states.pop()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", state)  # 32 bytes, base64url
    assert state_digest(state) == hashlib.sha256(state.encode()).digest()
    assert len(state_digest(state)) == 32


def test_authorize_url_has_every_parameter_encoded_and_keeps_the_existing_query() -> None:
    app = client(
        authorization_url=AUTHORIZE_URL + "?tenant=acme%20corp&prompt=login",
        authorize_params={"access_type": "offline", "login_hint": "a+b@example.com"},
    )
    url = build_authorize_url(
        app,
        redirect_uri=REDIRECT_URI + "?next=/a&b=c",
        scopes=["read:user", "https://www.googleapis.com/auth/drive"],
        state="st&te=1",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    )
    assert url.startswith(AUTHORIZE_URL + "?tenant=acme%20corp&prompt=login&response_type=code&")
    assert query_of(url) == [
        ("tenant", "acme corp"),
        ("prompt", "login"),
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI + "?next=/a&b=c"),
        ("scope", "read:user https://www.googleapis.com/auth/drive"),
        ("state", "st&te=1"),
        ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        ("code_challenge_method", "S256"),
        ("access_type", "offline"),
        ("login_hint", "a+b@example.com"),
    ]
    raw = urlsplit(url).query
    assert "client_id=my%20client%40example" in raw
    assert (
        "redirect_uri=https%3A%2F%2Fbroker.example%2Foauth%2Fcallback%3Fnext%3D%2Fa%26b%3Dc" in raw
    )
    assert "scope=read%3Auser%20https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdrive" in raw
    assert "login_hint=a%2Bb%40example.com" in raw  # a literal "+" must not become a space


def test_authorize_url_joins_scopes_with_the_clients_separator() -> None:
    slack = client(authorization_url="https://slack.com/oauth/v2/authorize", scope_separator=",")
    url = build_authorize_url(
        slack,
        redirect_uri=REDIRECT_URI,
        scopes=["chat:write", "channels:read"],
        state="s",
        code_challenge=None,
    )
    assert dict(query_of(url))["scope"] == "chat:write,channels:read"
    assert "scope=chat%3Awrite%2Cchannels%3Aread" in url


def test_authorize_url_omits_scope_and_pkce_when_not_given() -> None:
    url = build_authorize_url(
        client(), redirect_uri=REDIRECT_URI, scopes=[], state="s", code_challenge=None
    )
    assert [key for key, _ in query_of(url)] == [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ],
)
def test_authorize_params_may_not_override_protocol_parameters(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_authorize_url(
            client(authorize_params={name: "x"}),
            redirect_uri=REDIRECT_URI,
            scopes=["a"],
            state="s",
            code_challenge="c",
        )
    with pytest.raises(ValueError, match=name):
        build_authorize_url(
            client(authorization_url=f"{AUTHORIZE_URL}?{name}=x"),
            redirect_uri=REDIRECT_URI,
            scopes=["a"],
            state="s",
            code_challenge="c",
        )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", []),
        ("a b", ["a", "b"]),
        ("a,b", ["a", "b"]),
        ("a, b", ["a", "b"]),
        ("  a\tb  a ", ["a", "b"]),
        (["b", "a", "b", " ", ""], ["b", "a"]),
        (("x",), ["x"]),
    ],
)
def test_parse_scopes(raw: Any, expected: list[str] | None) -> None:
    assert parse_scopes(raw) == expected


# --------------------------------------------------------------------------------------------
# Client credential placements
# --------------------------------------------------------------------------------------------


async def test_body_placement_sends_id_and_secret_in_the_form(session, mock) -> None:
    seen = respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="body"))

    (request,) = seen
    assert request.method == "POST"
    assert request.form == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert "Authorization" not in request.headers
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == "authbroker"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.allow_redirects is False
    assert tokens.placement == "body"


async def test_basic_placement_form_urlencodes_before_base64(session, mock) -> None:
    seen = respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="basic"))

    (request,) = seen
    assert request.headers["Authorization"] == BASIC
    assert "client_id" not in request.form
    assert "client_secret" not in request.form
    assert request.form["code"] == CODE
    assert tokens.placement == "basic"


async def test_query_placement_is_a_get_with_everything_in_the_query(session, mock) -> None:
    facebook = client(
        client_auth="query",
        token_url=TOKEN_URL + "?v=19.0",
        token_params={"fields": "id"},
    )
    seen = respond(mock, method="GET", payload=TOKENS)
    tokens = await exchange(session, facebook)

    (request,) = seen
    assert request.method == "GET"
    assert request.form is None
    assert request.query == {
        "v": "19.0",
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        "fields": "id",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert "Authorization" not in request.headers
    assert request.headers["Accept"] == "application/json"
    assert tokens.placement == "query"


@pytest.mark.parametrize("setting", ["body", "basic", "auto"])
async def test_public_client_sends_only_its_id_in_the_body(session, mock, setting) -> None:
    seen = respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_secret=None, client_auth=setting))

    (request,) = seen
    assert request.form["client_id"] == CLIENT_ID
    assert "client_secret" not in request.form
    assert "Authorization" not in request.headers
    assert tokens.placement == "body"


async def test_auto_falls_back_to_body_after_invalid_client(session, mock) -> None:
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, payload=TOKENS, into=seen)

    tokens = await exchange(session, client(client_auth="auto"))

    basic, body = seen
    assert basic.headers["Authorization"] == BASIC
    assert "client_secret" not in basic.form
    assert "Authorization" not in body.headers
    assert body.form["client_id"] == CLIENT_ID
    assert body.form["client_secret"] == SECRET
    assert tokens.placement == "body"


async def test_auto_keeps_basic_when_it_works(session, mock) -> None:
    seen = respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="auto"))
    assert len(seen) == 1
    assert seen[0].headers["Authorization"] == BASIC
    assert tokens.placement == "basic"


async def test_auto_does_not_retry_errors_that_are_not_about_client_auth(session, mock) -> None:
    seen = respond(mock, status=400, payload={"error": "invalid_grant"})
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client(client_auth="auto"))
    assert len(seen) == 1
    assert caught.value.problem is Problem.CODE_REJECTED


async def test_auto_reports_the_body_answer_when_both_placements_fail(session, mock) -> None:
    seen = respond(
        mock,
        status=400,
        payload={"error": "invalid_client", "error_description": "client_secret_post only"},
    )
    respond(mock, status=401, payload={"error": "invalid_client"}, into=seen)
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client(client_auth="auto"))
    assert len(seen) == 2
    assert caught.value.problem is Problem.INVALID_SETTINGS


async def test_previous_secrets_are_tried_in_order_after_invalid_client(session, mock) -> None:
    app = client(client_secret="new-secret", previous_secrets=("old-1", "old-2"))
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, status=400, payload={"error": "invalid_client"}, into=seen)
    respond(mock, payload=TOKENS, into=seen)

    tokens = await exchange(session, app)

    assert [r.form["client_secret"] for r in seen] == ["new-secret", "old-1", "old-2"]
    assert tokens.placement == "body"


async def test_previous_secrets_keep_the_basic_placement(session, mock) -> None:
    app = client(client_auth="basic", previous_secrets=("old",))
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, payload=TOKENS, into=seen)

    tokens = await exchange(session, app)

    old_basic = "Basic " + base64.b64encode(b"my+client%40example:old").decode()
    assert [r.headers["Authorization"] for r in seen] == [BASIC, old_basic]
    assert tokens.placement == "basic"


async def test_when_every_secret_fails_the_current_secrets_error_is_raised(session, mock) -> None:
    app = client(previous_secrets=("old",))
    seen = respond(
        mock, status=401, payload={"error": "invalid_client", "error_description": "current"}
    )
    respond(
        mock, status=401, payload={"error": "invalid_client", "error_description": "old"}, into=seen
    )
    # Then the other placement (Basic), with each secret.
    respond(
        mock, status=401, payload={"error": "invalid_client", "error_description": "c"}, into=seen
    )
    respond(
        mock, status=401, payload={"error": "invalid_client", "error_description": "o"}, into=seen
    )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, app)
    assert [r.form.get("client_secret") for r in seen] == [SECRET, "old", None, None]
    assert [r.headers.get("Authorization") for r in seen][2] == BASIC
    assert caught.value.error == "invalid_client"
    assert caught.value.description == (
        "the client credentials were refused in every placement tried (body: invalid_client "
        "'current' (HTTP 401); basic: invalid_client 'c' (HTTP 401))"
    )
    assert caught.value.problem is Problem.INVALID_SETTINGS


async def test_previous_secrets_are_not_tried_for_grant_errors(session, mock) -> None:
    seen = respond(mock, status=400, payload={"error": "invalid_grant"})
    with pytest.raises(ProviderRejected):
        await refresh_token(session, client(previous_secrets=("old",)), refresh_token=REFRESH)
    assert len(seen) == 1


async def test_token_params_are_added_but_never_override_the_grant(session, mock) -> None:
    app = client(
        token_params={
            "audience": "api.atlassian.com",
            "grant_type": "password",
            "client_secret": "not-this",
        }
    )
    seen = respond(mock, payload=TOKENS)
    await refresh_token(session, app, refresh_token=REFRESH, scopes=["a", "b"])
    assert seen[0].form == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "scope": "a b",
        "audience": "api.atlassian.com",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }


async def test_refresh_sends_scope_only_when_asked(session, mock) -> None:
    seen = respond(mock, payload=TOKENS)
    await refresh_token(session, client(), refresh_token=REFRESH)
    assert "scope" not in seen[0].form


async def test_exchange_without_pkce_sends_no_verifier(session, mock) -> None:
    seen = respond(mock, payload=TOKENS)
    await exchange_code(session, client(), code=CODE, redirect_uri=REDIRECT_URI, code_verifier=None)
    assert "code_verifier" not in seen[0].form


# --------------------------------------------------------------------------------------------
# Parsing token responses
# --------------------------------------------------------------------------------------------


async def test_json_token_response(session, mock) -> None:
    respond(
        mock,
        payload={
            **TOKENS,
            "token_type": "bearer",
            "id_token": "eyJ.header.sig",
            "instance_url": "https://eu1.salesforce.example",
        },
    )
    tokens = await exchange(session, client())
    assert tokens.access_token == "ya29.access"
    assert tokens.token_type == "Bearer"
    assert tokens.expires_in == 3599
    assert tokens.refresh_token == REFRESH
    assert tokens.refresh_token_expires_in is None
    assert tokens.scopes == ["openid", "email"]
    assert tokens.extra == {
        "id_token": "eyJ.header.sig",
        "instance_url": "https://eu1.salesforce.example",
    }


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
async def test_form_encoded_token_response(session, mock, content_type) -> None:
    respond(
        mock,
        body="access_token=gho_16C7e42F292c&scope=repo%2Cgist&token_type=bearer",
        content_type=content_type,
    )
    tokens = await exchange(session, client())
    assert tokens.access_token == "gho_16C7e42F292c"
    assert tokens.scopes == ["repo", "gist"]
    assert tokens.token_type == "Bearer"
    assert tokens.expires_in is None
    assert tokens.refresh_token is None


async def test_json_under_a_wrong_label_is_still_read(session, mock) -> None:
    respond(mock, body=json.dumps(TOKENS), content_type="text/javascript; charset=UTF-8")
    assert (await exchange(session, client())).access_token == "ya29.access"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3600, 3600),
        ("3600", 3600),
        (3600.9, 3600),
        (0, 0),
        (None, None),
        ("", None),
        (10 * 365 * 24 * 3600 + 1, None),  # over ten years: treated as not expiring
        (10**30, None),
    ],
)
async def test_expires_in_forms(session, mock, value, expected) -> None:
    respond(mock, payload={**TOKENS, "expires_in": value})
    assert (await exchange(session, client())).expires_in == expected


async def test_expires_in_absent(session, mock) -> None:
    respond(mock, payload={"access_token": "a"})
    tokens = await exchange(session, client())
    assert tokens.expires_in is None
    assert tokens.token_type == "Bearer"
    assert tokens.scopes is None  # RFC 6749 §5.1: granted == requested
    assert tokens.refresh_token is None


@pytest.mark.parametrize(
    ("value", "read_as"),
    [
        (-1, 0),
        ("-30", 0),
        ("soon", None),
        (True, None),
        ([3600], None),
        ({"s": 1}, None),
        ("NaN", None),
    ],
)
async def test_unusable_expires_in_keeps_the_tokens(session, mock, value, read_as) -> None:
    """The provider has consumed the code: the tokens are kept, the bad lifetime read safely
    (negative as expired now, garbage as absent) and reported by name."""
    respond(mock, payload={**TOKENS, "expires_in": value})
    tokens = await exchange(session, client())
    assert tokens.access_token == TOKENS["access_token"]
    assert tokens.refresh_token == TOKENS["refresh_token"]
    assert tokens.expires_in == read_as
    assert any("expires_in" in w for w in tokens.warnings)


async def test_unusable_scope_and_token_type_keep_the_tokens(session, mock) -> None:
    respond(mock, payload={**TOKENS, "scope": 42, "token_type": 7})
    tokens = await exchange(session, client())
    assert tokens.scopes is None and tokens.token_type == "Bearer"
    assert len(tokens.warnings) == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("bearer", "Bearer"), ("BEARER", "Bearer"), ("DPoP", "DPoP"), ("mac", "mac")],
)
async def test_token_type_normalisation(session, mock, raw, expected) -> None:
    respond(mock, payload={**TOKENS, "token_type": raw})
    assert (await exchange(session, client())).token_type == expected


@pytest.mark.parametrize(
    ("scope", "expected"),
    [("a,b", ["a", "b"]), ("a, b a", ["a", "b"]), (["x", "y"], ["x", "y"]), ("", [])],
)
async def test_granted_scope_forms(session, mock, scope, expected) -> None:
    respond(mock, payload={**TOKENS, "scope": scope})
    assert (await exchange(session, client())).scopes == expected


@pytest.mark.parametrize("key", ["refresh_token_expires_in", "x_refresh_token_expires_in"])
async def test_refresh_token_lifetime(session, mock, key) -> None:
    respond(mock, payload={**TOKENS, key: "8726400"})
    tokens = await refresh_token(session, client(), refresh_token=REFRESH)
    assert tokens.refresh_token_expires_in == 8726400
    assert key not in tokens.extra


@pytest.mark.parametrize(
    "payload",
    [{"token_type": "Bearer"}, {"access_token": ""}, {"access_token": 12}, {}],
)
async def test_missing_access_token_is_malformed(session, mock, payload) -> None:
    respond(mock, payload=payload)
    with pytest.raises(ProviderMalformed, match="access_token"):
        await exchange(session, client())


@pytest.mark.parametrize(
    ("grant", "payload", "error", "problem"),
    [
        # GitHub: errors in a 200 body
        (
            "authorization_code",
            {
                "error": "bad_verification_code",
                "error_description": "The code passed is incorrect or expired.",
                "error_uri": "https://docs.github.com/apps/troubleshooting",
            },
            "bad_verification_code",
            Problem.CODE_REJECTED,
        ),
        (
            "authorization_code",
            {"error": "incorrect_client_credentials"},
            "incorrect_client_credentials",
            Problem.INVALID_SETTINGS,
        ),
        (
            "authorization_code",
            {"error": "redirect_uri_mismatch"},
            "redirect_uri_mismatch",
            Problem.REDIRECT_MISMATCH,
        ),
        (
            "refresh_token",
            {"error": "bad_refresh_token"},
            "bad_refresh_token",
            Problem.REFRESH_TOKEN_INVALIDATED,
        ),
        # Slack: {"ok": false, ...}
        (
            "authorization_code",
            {"ok": False, "error": "invalid_code"},
            "invalid_code",
            Problem.CODE_REJECTED,
        ),
        (
            "authorization_code",
            {"ok": False, "error": "bad_client_secret"},
            "bad_client_secret",
            Problem.INVALID_SETTINGS,
        ),
        (
            "authorization_code",
            {"ok": False, "error": "invalid_client_id"},
            "invalid_client_id",
            Problem.INVALID_SETTINGS,
        ),
        (
            "refresh_token",
            {"ok": False, "error": "invalid_refresh_token"},
            "invalid_refresh_token",
            Problem.REFRESH_TOKEN_INVALIDATED,
        ),
        ("refresh_token", {"ok": False}, "unknown_error", Problem.PROVIDER_ERROR),
        (
            "refresh_token",
            {"ok": False, "access_token": "xoxe-1", "error": "invalid_grant_type"},
            "invalid_grant_type",
            Problem.PROVIDER_ERROR,
        ),
    ],
)
async def test_error_in_a_200_body_is_an_error(session, mock, grant, payload, error, problem):
    respond(mock, payload=payload, repeat=True)
    with pytest.raises(ProviderRejected) as caught:
        await request_token(session, slack_shaped(), {"grant_type": grant}, grant=grant)
    assert caught.value.error == error
    assert caught.value.problem is problem
    assert caught.value.status == 200
    assert caught.value.transient is False


async def test_facebook_error_object(session, mock) -> None:
    respond(
        mock,
        method="GET",
        status=400,
        payload={
            "error": {
                "message": "Error validating verification code.",
                "type": "OAuthException",
                "code": 100,
            }
        },
    )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client(client_auth="query"))
    assert caught.value.error == "OAuthException"
    assert caught.value.description == "Error validating verification code."


# --------------------------------------------------------------------------------------------
# Errors: rejected, unavailable, malformed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "status", "payload", "problem"),
    [
        ("refresh_token", 400, {"error": "invalid_grant"}, Problem.REFRESH_TOKEN_INVALIDATED),
        ("authorization_code", 400, {"error": "invalid_grant"}, Problem.CODE_REJECTED),
        ("refresh_token", 401, {"error": "invalid_client"}, Problem.INVALID_SETTINGS),
        ("refresh_token", 400, {"error": "unauthorized_client"}, Problem.INVALID_SETTINGS),
        (
            "authorization_code",
            400,
            {"error": "redirect_uri_mismatch"},
            Problem.REDIRECT_MISMATCH,
        ),
        (
            "authorization_code",
            400,
            {"error": "invalid_grant", "error_description": "Redirect URI mismatch."},
            Problem.REDIRECT_MISMATCH,
        ),
        ("refresh_token", 400, {"error": "invalid_scope"}, Problem.SCOPE_MISMATCH),
        ("authorization_code", 403, {"error": "access_denied"}, Problem.ACCESS_DENIED),
        (
            "authorization_code",
            401,
            {
                "error": "invalid_client",
                "error_description": "Client authentication method not supported.",
            },
            Problem.CLIENT_AUTH_METHOD,
        ),
        (
            "refresh_token",
            401,
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000218: The request body must contain the "
                "following parameter: 'client_assertion' or 'client_secret'.",
            },
            Problem.CLIENT_AUTH_METHOD,
        ),
        ("refresh_token", 400, {"error": "unsupported_grant_type"}, Problem.PROVIDER_ERROR),
    ],
)
async def test_provider_rejections_are_classified(session, mock, grant, status, payload, problem):
    # Every placement gets the same answer (a refused client is tried in the others too).
    respond(mock, status=status, payload=payload, repeat=True)
    with pytest.raises(ProviderRejected) as caught:
        await request_token(session, client(), {"grant_type": grant}, grant=grant)
    exc = caught.value
    assert exc.problem is problem
    assert exc.status == status
    assert exc.error == payload["error"]
    assert exc.transient is False


@pytest.mark.parametrize(
    ("status", "error", "problem"),
    [
        (400, "invalid_request", Problem.PROVIDER_ERROR),
        (401, "invalid_client", Problem.INVALID_SETTINGS),
        (403, "access_denied", Problem.ACCESS_DENIED),
    ],
)
async def test_4xx_without_an_error_body(session, mock, status, error, problem) -> None:
    respond(mock, status=status, body="<html>Nope</html>", content_type="text/html", repeat=True)
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client())
    assert (caught.value.error, caught.value.problem, caught.value.status) == (
        error,
        problem,
        status,
    )


async def test_404_is_malformed_not_rejected(session, mock) -> None:
    respond(mock, status=404, body="Not Found", content_type="text/plain")
    with pytest.raises(ProviderMalformed) as caught:
        await exchange(session, client())
    assert caught.value.status == 404
    assert caught.value.problem is Problem.PROVIDER_ERROR


@pytest.mark.parametrize(
    ("status", "payload", "body", "error"),
    [
        (500, None, "Internal Server Error", "server_error"),
        (502, None, "<html>Bad gateway</html>", "server_error"),
        (503, {"error": "temporarily_unavailable"}, "", "temporarily_unavailable"),
        (500, {"error": "invalid_grant"}, "", "invalid_grant"),
        (408, None, "", "request_timeout"),
        (400, {"error": "temporarily_unavailable"}, "", "temporarily_unavailable"),
        (200, {"ok": False, "error": "ratelimited"}, "", "ratelimited"),
    ],
)
async def test_transient_answers_are_unavailable(session, mock, status, payload, body, error):
    respond(mock, status=status, payload=payload, body=body, content_type="text/html")
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    exc = caught.value
    assert exc.transient is True
    assert exc.status == status
    assert exc.error == error
    assert exc.retry_after is None


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds(session, mock, status) -> None:
    respond(mock, status=status, body="slow down", headers={"Retry-After": "120"})
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert caught.value.retry_after == 120
    assert caught.value.status == status


async def test_retry_after_as_an_http_date(session, mock) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    respond(
        mock,
        status=429,
        payload={"error": "rate_limited"},
        headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)},
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert 80 <= caught.value.retry_after <= 90


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), ("-5", None), ("", None)],
)
async def test_retry_after_in_the_past_or_garbage(session, mock, header, expected) -> None:
    respond(mock, status=503, headers={"Retry-After": header})
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert caught.value.retry_after == expected


async def test_timeout_is_unavailable(session, mock) -> None:
    mock.post(TOKEN_URL, exception=TimeoutError())
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert caught.value.error == "timeout"
    assert caught.value.status is None
    assert caught.value.transient is True


async def test_a_slow_provider_is_cut_off_at_the_timeout(session, mock) -> None:
    async def slow(url: URL, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(5)
        return CallbackResult(payload=TOKENS)

    mock.post(TOKEN_URL, callback=slow)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable, match="timeout"):
        await refresh_token(session, client(), refresh_token=REFRESH, timeout=0.05)
    assert loop.time() - started < 1


@pytest.mark.parametrize(
    "exception",
    [aiohttp.ClientConnectionError("refused"), aiohttp.ServerDisconnectedError(), OSError(113)],
)
async def test_connection_errors_are_unavailable(session, mock, exception) -> None:
    mock.post(TOKEN_URL, exception=exception)
    with pytest.raises(ProviderUnavailable) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert caught.value.error == "connection_error"
    assert caught.value.transient is True


async def test_html_login_page_is_malformed(session, mock) -> None:
    respond(
        mock,
        body="<!DOCTYPE html><html><body><form>Sign in</form></body></html>",
        content_type="text/html; charset=utf-8",
    )
    with pytest.raises(ProviderMalformed) as caught:
        await exchange(session, client())
    assert caught.value.status == 200
    assert "text/html" in str(caught.value)
    assert caught.value.transient is False


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[1, 2]", "application/json"),
        ('"token"', "application/json"),
        ("{not json", "application/json"),
        ("", "application/json"),
        ("", ""),
        ("just words", "text/plain"),
        ("[" * 100_000, "application/json"),  # deep nesting must not crash the worker
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    ],
)
async def test_bodies_that_are_not_token_responses(session, mock, body, content_type) -> None:
    respond(mock, body=body, content_type=content_type)
    with pytest.raises(ProviderMalformed):
        await exchange(session, client())


async def test_a_body_over_the_cap_is_malformed(session, mock) -> None:
    respond(mock, body=json.dumps({**TOKENS, "padding": "x" * 5000}))
    with pytest.raises(ProviderMalformed, match="too large"):
        await exchange(session, client(), max_body=1000)


async def test_a_body_exactly_at_the_cap_is_read(session, mock) -> None:
    body = json.dumps({**TOKENS, "padding": ""})
    body = body.replace('"padding": ""', '"padding": "' + "x" * (1000 - len(body)) + '"')
    assert len(body) == 1000
    respond(mock, body=body)
    assert (await exchange(session, client(), max_body=1000)).access_token == "ya29.access"


async def test_a_5xx_over_the_cap_is_still_unavailable(session, mock) -> None:
    respond(mock, status=503, body="x" * 5000, content_type="text/html")
    with pytest.raises(ProviderUnavailable):
        await exchange(session, client(), max_body=1000)


async def test_a_redirect_is_malformed_and_not_followed(session, mock) -> None:
    elsewhere = respond(mock, method="GET", url="https://evil.example/steal", payload=TOKENS)
    seen = respond(mock, status=302, headers={"Location": "https://evil.example/steal"})
    with pytest.raises(ProviderMalformed) as caught:
        await exchange(session, client())
    assert caught.value.status == 302
    assert seen[0].allow_redirects is False
    assert elsewhere == []


async def test_missing_token_url_is_a_programming_error(session) -> None:
    with pytest.raises(ValueError, match="token_url"):
        await exchange(session, client(token_url=""))


# --------------------------------------------------------------------------------------------
# Secrets stay out of reprs, messages and tracebacks
# --------------------------------------------------------------------------------------------

CLIENT_SECRET = "client-secret-CS-7f3a9"
OLD_SECRET = "old-secret-OS-1b2c3"
ACCESS = "access-token-AT-9d8e7"
ID_TOKEN = "id-token-IT-5a4b3"


def test_reprs_hide_secrets() -> None:
    app = Client(client_id="id", client_secret=CLIENT_SECRET, previous_secrets=(OLD_SECRET,))
    tokens = TokenResponse(
        access_token=ACCESS,
        token_type="Bearer",
        expires_in=60,
        refresh_token=REFRESH,
        refresh_token_expires_in=None,
        scopes=None,
        extra={"id_token": ID_TOKEN},
        placement="body",
    )
    for text in (repr(app), str(app), repr(tokens), str(tokens)):
        for secret in (CLIENT_SECRET, OLD_SECRET, ACCESS, REFRESH, ID_TOKEN):
            assert secret not in text
    assert "client_id='id'" in repr(app)


@pytest.mark.parametrize("encode", [lambda s: s, quote_plus])
async def test_echoed_secrets_are_redacted_from_errors(session, mock, encode) -> None:
    app = client(client_secret=CLIENT_SECRET, previous_secrets=(OLD_SECRET,))
    echo = (
        f"bad request code={encode(CODE)} verifier={VERIFIER} secret={CLIENT_SECRET} "
        f"old={OLD_SECRET}"
    )
    respond(mock, status=400, payload={"error": "invalid_grant", "error_description": echo})
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, app)
    exc = caught.value
    for text in (str(exc), repr(exc), exc.description, *map(str, exc.args)):
        for secret in (CODE, encode(CODE), VERIFIER, CLIENT_SECRET, OLD_SECRET):
            assert secret not in text
    assert "[redacted]" in exc.description
    assert exc.description.startswith("bad request")


async def test_echoed_basic_credentials_are_redacted_from_errors(session, mock) -> None:
    """A provider quoting the Authorization header it got, for the secret and the previous one
    (tried on invalid_client): the base64 of `id:secret` is as secret as the secret."""
    app = client(client_secret=CLIENT_SECRET, previous_secrets=(OLD_SECRET,), client_auth="basic")
    sent = [basic_credentials(CLIENT_ID, secret) for secret in (CLIENT_SECRET, OLD_SECRET)]
    # Each secret in the Basic header, then (a placement that corrects itself) in the body.
    for value in [*sent, *sent]:
        respond(
            mock,
            status=401,
            payload={"error": "invalid_client", "error_description": f"bad header {value}"},
        )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, app)
    exc = caught.value
    for text in (str(exc), repr(exc), exc.description, *map(str, exc.args)):
        for value in sent:
            assert value not in text and quote(value, safe="") not in text
    assert exc.description is not None and "bad header [redacted]" in exc.description


async def test_echoed_refresh_token_is_redacted(session, mock) -> None:
    respond(
        mock,
        status=400,
        payload={"error": f"bad {REFRESH}", "error_description": f"token {REFRESH} revoked"},
    )
    with pytest.raises(ProviderRejected) as caught:
        await refresh_token(session, client(), refresh_token=REFRESH)
    assert REFRESH not in str(caught.value)
    assert REFRESH not in caught.value.error


async def test_descriptions_are_made_storable(session, mock) -> None:
    """NUL and lone surrogates in a provider's JSON would fail the write that keeps them."""
    respond(
        mock,
        status=400,
        payload={"error": "invalid_grant\u0000", "error_description": "bad \ud800 nul\u0000 x"},
    )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client())
    assert caught.value.error == "invalid_grant"
    assert caught.value.description == "bad ? nul  x"


async def test_descriptions_are_truncated_and_single_line(session, mock) -> None:
    respond(
        mock,
        status=400,
        payload={"error": "invalid_request", "error_description": "line\r\nbreak " + "x" * 1000},
    )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client())
    assert len(caught.value.description) == 300
    assert "\n" not in str(caught.value)


async def test_transport_errors_do_not_chain_a_url_with_secrets(session, mock) -> None:
    app = client(client_auth="query", client_secret=CLIENT_SECRET)
    mock.get(
        re.compile(re.escape(TOKEN_URL) + r".*"),
        exception=aiohttp.ClientConnectionError(
            f"failed {TOKEN_URL}?client_secret={CLIENT_SECRET}"
        ),
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await exchange(session, app)
    exc = caught.value
    assert CLIENT_SECRET not in str(exc)
    assert exc.__cause__ is None
    assert exc.__suppress_context__ is True


async def test_token_response_in_malformed_answers_is_not_quoted(session, mock) -> None:
    respond(mock, payload={"access_token": ACCESS, "refresh_token": 12345, "id": REFRESH})
    with pytest.raises(ProviderMalformed) as caught:
        await exchange(session, client())
    assert ACCESS not in str(caught.value)
    assert REFRESH not in str(caught.value)


@pytest.mark.parametrize(
    "exc",
    [
        ProviderRejected(
            "invalid_grant", "gone", status=400, problem=Problem.REFRESH_TOKEN_INVALIDATED
        ),
        ProviderUnavailable("rate_limited", None, status=429, retry_after=3.5),
        ProviderMalformed("response_too_large", "response too large", status=200),
    ],
)
def test_errors_survive_pickling(exc: OAuthError) -> None:
    # arq pickles a job's exception; a broken round trip would hide the real failure.
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    for name in ("error", "description", "status", "problem", "transient", "retry_after"):
        assert getattr(copy, name) == getattr(exc, name)


def test_the_module_does_not_log() -> None:
    modules = [oauth] + [
        importlib.import_module(f"authbroker.oauth.{info.name}")
        for info in pkgutil.iter_modules(oauth.__path__)
    ]
    assert len(modules) > 5
    for module in modules:
        source = inspect.getsource(module)
        assert "import logging" not in source, module
        assert "structlog" not in source, module
        assert not re.search(r"\bprint\(", source), module


# --------------------------------------------------------------------------------------------
# Revocation (RFC 7009)
# --------------------------------------------------------------------------------------------


async def test_revoke_posts_token_hint_and_body_credentials(session, mock) -> None:
    seen = respond(mock, url=REVOKE_URL, body="")
    result = await revoke_token(session, client(), token=REFRESH, token_type_hint="refresh_token")
    assert result == oauth.Authenticated("body")
    (request,) = seen
    assert request.method == "POST"
    assert request.form == {
        "token": REFRESH,
        "token_type_hint": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
    }
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.allow_redirects is False


async def test_revoke_with_basic_credentials(session, mock) -> None:
    seen = respond(mock, url=REVOKE_URL, payload={})
    await revoke_token(session, client(client_auth="basic"), token=ACCESS, token_type_hint=None)
    assert seen[0].headers["Authorization"] == BASIC
    assert seen[0].form == {"token": ACCESS}


async def test_revoke_with_query_placement_still_posts_credentials_in_the_body(
    session, mock
) -> None:
    seen = respond(mock, url=REVOKE_URL, body="")
    await revoke_token(
        session, client(client_auth="query"), token=ACCESS, token_type_hint="access_token"
    )
    assert seen[0].method == "POST"
    assert seen[0].query == {}
    assert seen[0].form["client_secret"] == SECRET


async def test_revoke_auto_falls_back_to_the_body(session, mock) -> None:
    seen = respond(mock, url=REVOKE_URL, status=401, payload={"error": "invalid_client"})
    respond(mock, url=REVOKE_URL, body="", into=seen)
    await revoke_token(session, client(client_auth="auto"), token=ACCESS, token_type_hint=None)
    assert "Authorization" in seen[0].headers
    assert seen[1].form["client_secret"] == SECRET


async def test_revoke_unsupported_token_type_is_rejected(session, mock) -> None:
    respond(mock, url=REVOKE_URL, status=400, payload={"error": "unsupported_token_type"})
    with pytest.raises(ProviderRejected) as caught:
        await revoke_token(session, client(), token=ACCESS, token_type_hint="access_token")
    assert caught.value.error == "unsupported_token_type"
    assert caught.value.problem is Problem.PROVIDER_ERROR


@pytest.mark.parametrize("error", ["invalid_token", "invalid_grant"])
async def test_revoke_of_an_already_invalid_token_is_done(session, mock, error) -> None:
    # RFC 7009 §2.2 answers 200 here; Google and others answer 400 invalid_token instead.
    respond(mock, url=REVOKE_URL, status=400, payload={"error": error})
    await revoke_token(session, client(), token=ACCESS, token_type_hint=None)


async def test_revoke_503_with_retry_after_is_unavailable(session, mock) -> None:
    respond(mock, url=REVOKE_URL, status=503, body="", headers={"Retry-After": "30"})
    with pytest.raises(ProviderUnavailable) as caught:
        await revoke_token(session, client(), token=ACCESS, token_type_hint=None)
    assert caught.value.retry_after == 30
    assert caught.value.transient is True


async def test_revoke_timeout_is_unavailable(session, mock) -> None:
    mock.post(REVOKE_URL, exception=TimeoutError())
    with pytest.raises(ProviderUnavailable):
        await revoke_token(session, client(), token=ACCESS, token_type_hint=None)


async def test_revoke_error_in_a_200_body_is_an_error(session, mock) -> None:
    respond(mock, url=REVOKE_URL, payload={"ok": False, "error": "invalid_client_id"}, repeat=True)
    with pytest.raises(ProviderRejected) as caught:
        await revoke_token(session, slack_shaped(), token=ACCESS, token_type_hint=None)
    assert caught.value.problem is Problem.INVALID_SETTINGS


async def test_revoke_needs_a_revoke_url(session) -> None:
    with pytest.raises(ValueError, match="revoke_url"):
        await revoke_token(session, client(revoke_url=None), token=ACCESS, token_type_hint=None)


# --------------------------------------------------------------------------------------------
# classify and callback_problem
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "description", "grant", "status", "problem"),
    [
        ("invalid_client", None, "refresh_token", 401, Problem.INVALID_SETTINGS),
        ("INVALID_CLIENT", None, "refresh_token", 401, Problem.INVALID_SETTINGS),
        ("unauthorized_client", None, "authorization_code", 400, Problem.INVALID_SETTINGS),
        ("incorrect_client_credentials", None, "authorization_code", 200, Problem.INVALID_SETTINGS),
        (
            "invalid_client",
            "client_secret_basic is not allowed",
            "refresh_token",
            401,
            Problem.CLIENT_AUTH_METHOD,
        ),
        (
            "unauthorized_client",
            "Unsupported client authentication method",
            "refresh_token",
            400,
            Problem.CLIENT_AUTH_METHOD,
        ),
        ("invalid_redirect_uri", None, "authorization_code", 400, Problem.REDIRECT_MISMATCH),
        ("bad_redirect_uri", None, "authorization_code", 200, Problem.REDIRECT_MISMATCH),
        (
            "invalid_request",
            "redirect_uri does not match",
            "authorization_code",
            400,
            Problem.REDIRECT_MISMATCH,
        ),
        ("invalid_scope", None, "refresh_token", 400, Problem.SCOPE_MISMATCH),
        ("access_denied", None, "refresh_token", 403, Problem.ACCESS_DENIED),
        ("code_already_used", None, "authorization_code", 200, Problem.CODE_REJECTED),
        ("expired_token", None, "refresh_token", 400, Problem.REFRESH_TOKEN_INVALIDATED),
        ("expired_token", None, "authorization_code", 400, Problem.CODE_REJECTED),
        ("invalid_grant", None, "revoke", 400, Problem.PROVIDER_ERROR),
        ("interaction_required", "MFA", "refresh_token", 400, Problem.REFRESH_TOKEN_INVALIDATED),
        ("bad_refresh_token", None, "authorization_code", 200, Problem.REFRESH_TOKEN_INVALIDATED),
        ("unsupported_grant_type", None, "refresh_token", 400, Problem.PROVIDER_ERROR),
        ("something_new", None, "refresh_token", 401, Problem.INVALID_SETTINGS),
        ("something_new", None, "refresh_token", 400, Problem.PROVIDER_ERROR),
    ],
)
def test_classify(error, description, grant, status, problem) -> None:
    assert classify(error, description, grant=grant, status=status) is problem


@pytest.mark.parametrize(
    ("error", "description", "problem"),
    [
        ("access_denied", "The user denied access", Problem.ACCESS_DENIED),
        ("consent_required", None, Problem.ACCESS_DENIED),
        ("invalid_scope", None, Problem.SCOPE_MISMATCH),
        ("unauthorized_client", None, Problem.INVALID_SETTINGS),
        ("unsupported_response_type", None, Problem.INVALID_SETTINGS),
        ("invalid_request", "Invalid redirect_uri parameter", Problem.REDIRECT_MISMATCH),
        ("redirect_uri_mismatch", None, Problem.REDIRECT_MISMATCH),
        ("invalid_request", "missing parameter", Problem.PROVIDER_ERROR),
        ("server_error", None, Problem.PROVIDER_ERROR),
        ("temporarily_unavailable", None, Problem.PROVIDER_ERROR),
    ],
)
def test_callback_problem(error, description, problem) -> None:
    assert callback_problem(error, description) is problem


def test_client_refuses_an_unknown_client_auth() -> None:
    with pytest.raises(ValueError, match="client_auth"):
        Client(client_id="x", client_auth="header")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
token_keys = st.sampled_from(
    [
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_token_expires_in",
        "x_refresh_token_expires_in",
        "scope",
        "error",
        "error_description",
        "ok",
    ]
)
json_objects = st.dictionaries(token_keys | st.text(max_size=10), json_values, max_size=8)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 408, 429, 500, 503])
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "text/html", ""]
)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


async def outcome(status: int, body: str | bytes, content_type: str, grant: str) -> object:
    """What request_token makes of one answer: a TokenResponse, or the OAuthError raised."""
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=status, body=body, content_type=content_type)
        async with aiohttp.ClientSession() as http:
            try:
                return await request_token(
                    http, client(), {"grant_type": grant}, grant=grant, max_body=4096
                )
            except OAuthError as exc:
                assert str(exc)  # always printable
                assert exc.problem is not None
                return exc


@PROPERTY_SETTINGS
@given(data=json_objects, status=statuses, content_type=content_types)
async def test_any_json_object_gives_a_token_response_or_an_oauth_error(
    data, status, content_type
) -> None:
    result = await outcome(status, json.dumps(data), content_type, "refresh_token")
    assert isinstance(result, TokenResponse | OAuthError)
    if isinstance(result, TokenResponse):
        assert isinstance(result.access_token, str) and result.access_token
        assert result.expires_in is None or result.expires_in >= 0


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=300), status=statuses, content_type=content_types)
async def test_any_body_gives_a_token_response_or_an_oauth_error(
    body, status, content_type
) -> None:
    result = await outcome(status, body, content_type, "authorization_code")
    assert isinstance(result, TokenResponse | OAuthError)


safe_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    client_id=safe_text,
    redirect_uri=safe_text,
    state=safe_text,
    scopes=st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters=" ,"),
            min_size=1,
        ),
        max_size=4,
    ),
    extra=st.dictionaries(
        st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8
        ).map(lambda k: "x_" + k),
        safe_text,
    ),
)
def test_authorize_url_round_trips_every_value(client_id, redirect_uri, state, scopes, extra):
    app = client(client_id=client_id, authorize_params=extra)
    url = build_authorize_url(
        app, redirect_uri=redirect_uri, scopes=scopes, state=state, code_challenge="c"
    )
    params = dict(query_of(url))
    assert params["client_id"] == client_id
    assert params["redirect_uri"] == redirect_uri
    assert params["state"] == state
    assert params.get("scope") == (" ".join(scopes) if scopes else None)
    for key, value in extra.items():
        assert params[key] == value


# --------------------------------------------------------------------------------------------
# Placements that correct themselves, JSON bodies, client assertions, token shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "other"), [("body", "basic"), ("basic", "body")])
async def test_a_refused_fixed_placement_tries_the_other_and_says_so(
    session, mock, setting, other
) -> None:
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, payload=TOKENS, into=seen)
    tokens = await exchange(session, client(client_auth=setting))
    assert len(seen) == 2
    assert ("Authorization" in seen[0].headers) == (setting == "basic")
    assert ("Authorization" in seen[1].headers) == (other == "basic")
    assert (tokens.placement, tokens.refused_placement) == (other, setting)


async def test_the_configured_placement_that_works_is_not_a_correction(session, mock) -> None:
    respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="basic"))
    assert (tokens.placement, tokens.refused_placement) == ("basic", None)


async def test_auto_finding_the_body_is_not_a_correction(session, mock) -> None:
    respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="auto"))
    assert (tokens.placement, tokens.refused_placement) == ("body", None)


async def test_a_query_setting_tries_the_query_then_the_body_then_basic(session, mock) -> None:
    seen = respond(mock, method="GET", status=400, payload={"error": "invalid_client"})
    respond(mock, status=400, payload={"error": "invalid_client"}, into=seen)
    respond(mock, payload=TOKENS, into=seen)
    tokens = await exchange(session, client(client_auth="query"))
    assert [r.method for r in seen] == ["GET", "POST", "POST"]
    assert seen[1].form["client_secret"] == SECRET and "Authorization" not in seen[1].headers
    assert seen[2].headers["Authorization"] == BASIC
    assert (tokens.placement, tokens.refused_placement) == ("basic", "query")


async def test_a_grant_error_is_not_retried_in_another_placement(session, mock) -> None:
    seen = respond(mock, status=400, payload={"error": "invalid_grant"})
    with pytest.raises(ProviderRejected):
        await refresh_token(session, client(client_auth="basic"), refresh_token=REFRESH)
    assert len(seen) == 1


async def test_every_placement_refused_names_each_answer_and_no_secret(session, mock) -> None:
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(
        mock,
        status=400,
        payload={"error": "unauthorized_client", "error_description": f"bad {SECRET}"},
        into=seen,
    )
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client(client_auth="body"))
    assert caught.value.problem is Problem.INVALID_SETTINGS
    assert caught.value.description == (
        "the client credentials were refused in every placement tried (body: invalid_client "
        "(HTTP 401); basic: unauthorized_client 'bad [redacted]' (HTTP 400))"
    )
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("setting", ["body", "basic"])
async def test_json_bodies_carry_the_grant_and_the_placement(session, mock, setting) -> None:
    seen: list[dict[str, Any]] = []

    def callback(url: URL, **kwargs: Any) -> CallbackResult:
        seen.append({"headers": kwargs["headers"], "body": json.loads(kwargs["data"])})
        return CallbackResult(status=200, payload=TOKENS)

    mock.post(TOKEN_URL, callback=callback)
    await exchange(session, client(client_auth=setting, token_request_format="json"))
    (request,) = seen
    assert request["headers"]["Content-Type"] == "application/json"
    expected = {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }
    if setting == "body":
        expected |= {"client_id": CLIENT_ID, "client_secret": SECRET}
    else:
        assert request["headers"]["Authorization"] == BASIC
    assert request["body"] == expected


def _assertion_of(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = form["client_assertion"].split(".")

    def decode(part: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    return decode(header), decode(claims)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_private_key_jwt_signs_an_assertion_for_the_token_endpoint(
    session, mock, alg
) -> None:
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet

    key = oauth.jwt.generate_key(alg)
    seen = respond(mock, payload=TOKENS)
    tokens = await exchange(session, client(client_auth="private_key_jwt", signing_keys=(key,)))
    (request,) = seen
    form = request.form
    assert "Authorization" not in request.headers and "client_secret" not in form
    assert form["client_id"] == CLIENT_ID
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header, claims = _assertion_of(form)
    assert header == {"alg": alg, "kid": key.kid, "typ": "JWT"}
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) >= 20
    # The signature checks out with the public key alone.
    verified = jose_jwt.decode(
        form["client_assertion"], KeySet.import_key_set(oauth.jwt.jwks([key]))
    )
    assert verified.claims["sub"] == CLIENT_ID
    assert tokens.placement == "body" and tokens.refused_placement is None
    assert key.pem not in repr(key) and "PRIVATE" not in json.dumps(oauth.jwt.jwks([key]))


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the test's short secret
async def test_client_secret_jwt_is_hs256_over_the_secret_to_a_named_audience(
    session, mock
) -> None:
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import OctKey

    seen = respond(mock, payload=TOKENS)
    app = client(client_auth="client_secret_jwt", assertion_audience="https://issuer.example/")
    await exchange(session, app)
    form = seen[0].form
    assert "client_secret" not in form
    verified = jose_jwt.decode(form["client_assertion"], OctKey.import_key(SECRET))
    assert verified.header["alg"] == "HS256"
    assert verified.claims["aud"] == "https://issuer.example/"


async def test_an_assertion_is_not_tried_elsewhere_and_never_echoed(session, mock) -> None:
    key = oauth.jwt.generate_key("ES256")

    def echo(url: URL, **kwargs: Any) -> CallbackResult:
        form = dict(parse_qsl(kwargs["data"].decode()))
        text = f"bad assertion {form['client_assertion']}"
        return CallbackResult(
            status=401, payload={"error": "invalid_client", "error_description": text}
        )

    mock.post(TOKEN_URL, callback=echo, repeat=True)
    with pytest.raises(ProviderRejected) as caught:
        await exchange(session, client(client_auth="private_key_jwt", signing_keys=(key,)))
    assert caught.value.description == "bad assertion [redacted]"
    assert caught.value.problem is Problem.INVALID_SETTINGS
    assert len(mock.requests[("POST", URL(TOKEN_URL))]) == 1  # one key, the body only


async def test_a_previous_signing_key_is_tried_after_the_current_one(session, mock) -> None:
    current, previous = oauth.jwt.generate_key("ES256"), oauth.jwt.generate_key("ES256")
    seen = respond(mock, status=401, payload={"error": "invalid_client"})
    respond(mock, payload=TOKENS, into=seen)
    app = client(client_auth="private_key_jwt", signing_keys=(current, previous))
    await exchange(session, app)
    assert [_assertion_of(r.form)[0]["kid"] for r in seen] == [current.kid, previous.kid]


def test_keys_are_checked_when_uploaded() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(key: Any) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    small = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match="1024 bits; at least 2048"):
        oauth.jwt.import_key(small)
    with pytest.raises(ValueError, match=r"secp384r1|P-384"):
        oauth.jwt.import_key(pem(ec.generate_private_key(ec.SECP384R1())))
    good = pem(ec.generate_private_key(ec.SECP256R1()))
    assert oauth.jwt.import_key(good).alg == "ES256"
    with pytest.raises(ValueError, match="signs with ES256, not RS256"):
        oauth.jwt.import_key(good, "RS256")
    with pytest.raises(ValueError, match="not a PEM private key"):
        oauth.jwt.import_key("hello")
    same = oauth.jwt.import_key(good)
    assert same.kid == oauth.jwt.import_key(good).kid  # the RFC 7638 thumbprint


SLACK_USER = oauth.TokenShape.of({"path": "authed_user", "success_field": "ok"})


async def test_tokens_nested_where_the_shape_says_are_read_there(session, mock) -> None:
    respond(
        mock,
        payload={
            "ok": True,
            "access_token": "xoxb-bot",
            "token_type": "bot",
            "team": {"id": "T1"},
            "authed_user": {
                "id": "U1",
                "access_token": "xoxp-user",
                "refresh_token": "xoxe-1-user",
                "expires_in": 43200,
                "scope": "search:read,chat:write",
                "token_type": "user",
            },
        },
    )
    tokens = await exchange(session, client(token_shape=SLACK_USER))
    assert tokens.access_token == "xoxp-user" and tokens.refresh_token == "xoxe-1-user"
    assert tokens.expires_in == 43200 and tokens.scopes == ["search:read", "chat:write"]
    assert tokens.token_type == "user"
    assert "xoxb-bot" not in json.dumps(dict(tokens.extra)) and tokens.extra["team"] == {"id": "T1"}


async def test_an_answer_without_the_nested_object_is_read_at_the_top(session, mock) -> None:
    respond(mock, payload={"ok": True, "access_token": "xoxp-2", "refresh_token": "xoxe-2"})
    tokens = await refresh_token(session, client(token_shape=SLACK_USER), refresh_token=REFRESH)
    assert (tokens.access_token, tokens.refresh_token) == ("xoxp-2", "xoxe-2")


async def test_ok_false_is_an_error_only_where_the_shape_says(session, mock) -> None:
    respond(mock, payload={"ok": False})
    with pytest.raises(ProviderRejected) as caught:
        await refresh_token(session, client(token_shape=SLACK_USER), refresh_token=REFRESH)
    assert caught.value.error == "unknown_error"
    respond(mock, payload={"ok": False})
    with pytest.raises(ProviderMalformed):  # for any other provider it is just no token
        await refresh_token(session, client(), refresh_token=REFRESH)
