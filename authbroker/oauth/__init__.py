"""The OAuth 2.0 client protocol, written once for the web side and the workers.

A module per subject, requests built pure and apart from sending them:

- `authorization`: state and PKCE values (RFC 7636), the authorization URL (RFC 6749 §4.1.1).
- `client_auth`: client authentication (RFC 6749 §2.3.1 placements, RFC 7523 §2.2 assertions),
  the requests it builds and the placements that correct themselves.
- `jwt`: the app's signing keys, their JWKS, client assertions.
- `tokens`: code exchange and refresh (RFC 6749 §4.1.3, §6); `revocation`: RFC 7009.
- `answers`: reading the answers providers really give; `errors`: mapping them to a `Problem`.
- `transport`: one HTTP exchange; `redact`: what we sent kept out of what we say.
- `bearer`: RFC 6750 challenges from resource servers.

Rules this package keeps:

- It never logs; callers log. Every exception's text is safe to log: no token, secret, code,
  verifier, key or assertion, and provider descriptions are cleaned of anything we sent before
  they are kept.
- Every failure is an `OAuthError` subclass with a `Problem`: `ProviderRejected` (the provider
  said no), `ProviderUnavailable` (transient: retry later, never declare a grant dead for it),
  `ProviderMalformed` (the answer is not a token response at all).
- Redirects are never followed (RFC 9700 §4.11, SSRF hygiene) and bodies are read up to a cap.
- Each request has two limits: a short one to connect (a request never sent is safe to retry at
  once) and a long one for the answer once it is sent. When a sent request's answer is lost
  (timed out, connection dropped, a gateway's 5xx), `ProviderUnavailable.answer_lost` says so:
  the provider may have acted on it, and for a refresh its answer held the only copy of a
  rotated refresh token.
- Provider quirks are data (`TokenShape`, from presets), never a test of the provider's URL.
"""

from authbroker.oauth.authorization import (
    build_authorize_url,
    code_challenge,
    issuer_mismatch,
    new_code_verifier,
    new_state,
    parse_scopes,
    state_digest,
)
from authbroker.oauth.bearer import BearerChallenge, parse_bearer_challenge
from authbroker.oauth.client_auth import basic_credentials
from authbroker.oauth.errors import (
    CLIENT_CREDENTIAL_ERRORS,
    OAuthError,
    ProviderMalformed,
    ProviderRejected,
    ProviderUnavailable,
    callback_problem,
    classify,
)
from authbroker.oauth.jwt import KeyAlgorithm, SigningKey
from authbroker.oauth.model import (
    JWT_METHODS,
    PLACEMENTS,
    Authenticated,
    Client,
    ClientAuth,
    Grant,
    Placement,
    TokenRequestFormat,
    TokenResponse,
    TokenShape,
)
from authbroker.oauth.revocation import revoke_token
from authbroker.oauth.tokens import client_credentials, exchange_code, refresh_token, request_token
from authbroker.oauth.transport import Timeouts

__all__ = [
    "CLIENT_CREDENTIAL_ERRORS",
    "JWT_METHODS",
    "PLACEMENTS",
    "Authenticated",
    "BearerChallenge",
    "Client",
    "ClientAuth",
    "Grant",
    "KeyAlgorithm",
    "OAuthError",
    "Placement",
    "ProviderMalformed",
    "ProviderRejected",
    "ProviderUnavailable",
    "SigningKey",
    "Timeouts",
    "TokenRequestFormat",
    "TokenResponse",
    "TokenShape",
    "basic_credentials",
    "build_authorize_url",
    "callback_problem",
    "classify",
    "client_credentials",
    "code_challenge",
    "exchange_code",
    "issuer_mismatch",
    "new_code_verifier",
    "new_state",
    "parse_bearer_challenge",
    "parse_scopes",
    "refresh_token",
    "request_token",
    "revoke_token",
    "state_digest",
]
