"""The problems a connection or an application can have, each with the remedy an operator needs.

Every failure authbroker records is one of these codes, so that runtimes can branch on it and
operators read the same words in events, the API and the logs.
"""

from __future__ import annotations

from enum import StrEnum


class Problem(StrEnum):
    """What is wrong with a connection or an application, as a code to branch on; the remedy
    comes beside it (`detail`, `problem_detail`)."""

    INVALID_SETTINGS = "invalid_settings"
    REDIRECT_MISMATCH = "redirect_mismatch"
    SCOPE_MISMATCH = "scope_mismatch"
    SCOPES_DENIED = "scopes_denied"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    ACCESS_DENIED = "access_denied"
    CLIENT_AUTH_METHOD = "client_auth_method"
    REFRESH_TOKEN_MISSING = "refresh_token_missing"
    REFRESH_TOKEN_INVALIDATED = "refresh_token_invalidated"
    TOKEN_EXPIRED = "token_expired"
    # Not in the original table: the provider refused the authorization code itself (expired,
    # already used, or issued to another client). Nothing is wrong with the settings; the user
    # only has to authorize again.
    CODE_REJECTED = "code_rejected"
    # The authorization was started but never completed at the provider within its lifetime.
    AUTHORIZATION_EXPIRED = "authorization_expired"
    # The provider answered something that is not an OAuth token response at all.
    PROVIDER_ERROR = "provider_error"
    # A refresh reached the provider, which rotated the refresh token, but its answer (the only
    # copy of the new one) never arrived, and the provider refused the old one on the retry.
    ROTATION_LOST = "rotation_lost"
    # The app's token endpoint is failing for every connection (timeouts, 5xx, 429): refreshes
    # wait for it to answer again.
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    # The callback came from another authorization server than the app's (RFC 9207): its `iss`
    # is not the app's issuer, or is missing where the provider promises it.
    ISSUER_MISMATCH = "issuer_mismatch"
    # A connection without a refresh token whose access token the provider no longer accepts
    # (a runtime reported invalid_token, the probe URL answered 401, or enough bare 401s).
    TOKEN_REVOKED = "token_revoked"
    # The provider knows the client but will not let it use the client credentials grant.
    GRANT_NOT_ALLOWED = "grant_not_allowed"

    @property
    def remedy(self) -> str:
        return REMEDIES[self]

    @classmethod
    def remedy_of(cls, code: str | None) -> str | None:
        """The remedy of a stored problem code; None for no or an unknown code."""
        return REMEDIES[cls(code)] if code in cls._value2member_map_ else None


REMEDIES: dict[Problem, str] = {
    Problem.INVALID_SETTINGS: (
        "The provider refused the client credentials wherever authbroker sent them (in the body "
        "and in a Basic header, after the query for a query setting; a JWT setting sends only "
        "its assertion). Check the client id and secret "
        "(and that the secret has not expired) against the provider's application settings, or "
        "for private_key_jwt that the provider has the app's current public key (GET "
        "/v1/apps/{name}/jwks), then update the app."
    ),
    Problem.REDIRECT_MISMATCH: (
        "The provider does not have this broker's redirect URL. Copy the app's redirect_url "
        "exactly into the provider's application settings."
    ),
    Problem.SCOPE_MISMATCH: (
        "The app requests scopes the provider's application does not allow. Enable them at the "
        "provider or remove them from the app's scopes."
    ),
    Problem.SCOPES_DENIED: (
        "The user granted fewer scopes than requested. Ask the user to authorize again and "
        "accept every requested scope, or reduce the scopes the integration needs."
    ),
    Problem.INSUFFICIENT_SCOPE: (
        "The web service needs a scope the token does not have. Add the scope to the app and "
        "authorize the connection again."
    ),
    Problem.ACCESS_DENIED: (
        "The user declined, or the provider restricts access (IP ranges, domains, admin "
        "consent). Ask the user to authorize again or lift the restriction at the provider."
    ),
    Problem.CLIENT_AUTH_METHOD: (
        "The provider refused the client credentials where the app's client_auth puts them. "
        "After such a refusal authbroker tries the body and a Basic header: when one of them "
        "worked, the app shows it (client_auth_works) and every token request still tries the "
        "configured placement first, so set client_auth to it (PATCH /v1/apps/{name}, or "
        "authbroker apps update NAME --client-auth), or to auto, which tries a Basic header, "
        "then the body, and remembers what works. If the provider refused every placement "
        "because it wants a signed JWT, set client_auth to private_key_jwt (register the app's "
        "public key, GET /v1/apps/{name}/jwks) or client_secret_jwt."
    ),
    Problem.REFRESH_TOKEN_MISSING: (
        "The provider issued no refresh token: the token may not expire, the provider may not "
        "support refresh, refresh may need enabling (e.g. Google's access_type=offline and "
        "prompt=consent, scope offline_access elsewhere), or it is issued once per user and the "
        "old grant must be revoked in the provider's settings before authorizing again."
    ),
    Problem.REFRESH_TOKEN_INVALIDATED: (
        "The provider no longer accepts the stored refresh token (revoked, expired, or used "
        "twice). Delete the connection and authorize again."
    ),
    Problem.TOKEN_EXPIRED: (
        "The access token expired and could not be refreshed yet. Retry later; if the problem "
        "stays, authorize the connection again."
    ),
    Problem.CODE_REJECTED: (
        "The provider refused the authorization code (expired, already used, or issued to "
        "another client). Start the authorization again."
    ),
    Problem.AUTHORIZATION_EXPIRED: (
        "The authorization was not completed in time. Start the authorization again."
    ),
    Problem.ROTATION_LOST: (
        "The provider rotated the refresh token, but its answer never reached authbroker (a "
        "timeout, a dropped connection or a worker that stopped mid-refresh), and it refused the "
        "old token on the retry. Nothing is wrong with the settings: authorize the connection "
        "again. If it recurs, raise AUTHBROKER_PROVIDER_TIMEOUT or ask the provider for a reuse "
        "grace period on rotated refresh tokens."
    ),
    Problem.PROVIDER_UNAVAILABLE: (
        "The provider's token endpoint is failing (timeouts, server errors or rate limits). "
        "authbroker probes it and refreshes every waiting connection as soon as it answers; "
        "nothing needs doing unless it lasts."
    ),
    Problem.ISSUER_MISMATCH: (
        "The sign-in came back naming another authorization server than the app's (its iss is "
        "not the app's issuer, or is missing though the provider always sends it): a mix-up "
        "attack, or a wrong issuer setting. The code was not used. Check the app's issuer against "
        "the provider's metadata, then start the authorization again."
    ),
    Problem.TOKEN_REVOKED: (
        "The provider no longer accepts the access token (revoked by the user or an "
        "administrator, or expired early) and the connection has no refresh token to get "
        "another: authorize the connection again."
    ),
    Problem.GRANT_NOT_ALLOWED: (
        "The provider accepted the client but will not let it use the client credentials grant "
        "(unauthorized_client or unsupported_grant_type). Enable the grant for the application "
        "at the provider (it may be called machine-to-machine, service account, or application "
        "permissions), then start the connection again."
    ),
    Problem.PROVIDER_ERROR: (
        "The provider answered with something that is not a valid token response. Check the "
        "app's token URL; if it is right, the provider may be failing."
    ),
}


PLACEMENT_NAMES = {"body": "the body", "basic": "a Basic header", "query": "the query"}


def placement_remedy(app: str, works: str) -> str:
    """The exact change that makes an app's client_auth the placement the provider accepted."""
    return (
        f"Set client_auth to {works}: PATCH /v1/apps/{app} "
        f'{{"client_auth": "{works}"}}, or authbroker apps update {app} --client-auth {works}.'
    )


def mismatch_summary(configured: str, worked: str) -> str:
    """A fixed placement refused and another accepted, in the words the
    `app.client_auth_mismatch` event and the diagnosis share."""
    return (
        f"The provider refused the client credentials in {PLACEMENT_NAMES[configured]} "
        f"(client_auth {configured}) and accepted them in {PLACEMENT_NAMES[worked]}; every token "
        f"request tries {configured} first."
    )
