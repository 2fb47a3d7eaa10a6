"""From a token response to the times stored with it: expiry, refresh moment, refresh-token expiry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbroker import oauth, timing
from storage.apps import App


@dataclass(frozen=True)
class TokenTimes:
    expires_at: datetime | None
    refresh_at: datetime | None
    refresh_token_expires_at: datetime | None


def token_times(
    app: App, tokens: oauth.TokenResponse, issued_at: datetime, *, has_refresh_token: bool
) -> TokenTimes:
    """An absent `expires_in` means the app's default lifetime when one is set, else a token
    that does not expire. A refresh token with a lifetime of its own (reported by the provider
    or configured on the app) is refreshed before it ages out, even if the access token lives
    longer. Without a refresh token, `refresh_at` is the expiry itself: the moment the worker
    must report the connection expired."""
    lifetime = tokens.expires_in if tokens.expires_in is not None else app.default_token_lifetime
    refresh_lifetime = tokens.refresh_token_expires_in
    if refresh_lifetime is None and tokens.refresh_token:
        refresh_lifetime = app.refresh_token_lifetime
    expires_at = issued_at + timedelta(seconds=lifetime) if lifetime is not None else None
    refresh_expires_at = (
        issued_at + timedelta(seconds=refresh_lifetime) if refresh_lifetime is not None else None
    )
    if has_refresh_token:
        refresh_at = timing.refresh_at(
            issued_at,
            lifetime=lifetime,
            app_margin=app.refresh_margin,
            refresh_token_lifetime=refresh_lifetime,
        )
    else:
        # Nothing to refresh with: look again at expiry, to mark the connection expired.
        refresh_at = expires_at
    return TokenTimes(expires_at, refresh_at, refresh_expires_at)


def missing_scopes(requested: Sequence[str], granted: Sequence[str] | None) -> list[str]:
    """The requested scopes the provider did not grant; none when it did not say what it
    granted (`granted` None: a response without `scope`, which is not proof of a refusal)."""
    return [] if granted is None else [s for s in requested if s not in granted]
