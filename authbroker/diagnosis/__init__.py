"""Diagnosis: the common failures of OAuth integrations, checked against what authbroker recorded.

Pure functions over typed facts (`facts`): no storage, no I/O. A diagnosis is a list of small
checks, each answering ok, warning or failing with the evidence it used and, when something is
wrong, the remedy in plain words. The checks are grouped by subject: `state`, `settings`
(client credentials and their placement), `redirect` (the authorization and redirect URLs),
`scopes`, `access`, `refresh_tokens`, `provider` (token endpoint health), `expiry`,
`revocation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from authbroker.diagnosis import (
    access,
    expiry,
    provider,
    redirect,
    refresh_tokens,
    revocation,
    scopes,
    settings,
    state,
)
from authbroker.diagnosis.check import SEVERITY, Check, Status, worst
from authbroker.diagnosis.facts import (
    AppCase,
    AppFacts,
    AppHistory,
    ConnectionCase,
    ConnectionFacts,
    EndpointAnswer,
    PausedError,
    RecentEvent,
    RecordedError,
    Report,
    TokenEndpoint,
)

__all__ = [
    "APP_CHECKS",
    "CONNECTION_CHECKS",
    "SEVERITY",
    "AppFacts",
    "AppHistory",
    "Check",
    "ConnectionFacts",
    "EndpointAnswer",
    "PausedError",
    "RecentEvent",
    "RecordedError",
    "Report",
    "Status",
    "TokenEndpoint",
    "diagnose_app",
    "diagnose_connection",
    "worst",
]

# In the order an operator would look.
CONNECTION_CHECKS: tuple[Callable[[ConnectionCase], Check], ...] = (
    state.connection,
    settings.connection_settings,
    redirect.connection_redirect_url,
    settings.connection_client_auth,
    scopes.connection_scope_mismatch,
    scopes.connection_scopes_denied,
    scopes.connection_insufficient_scope,
    access.authentication,
    access.connection_access_restrictions,
    refresh_tokens.connection_refresh_token,
    refresh_tokens.connection_invalidated,
    refresh_tokens.connection_rotation_lost,
    provider.connection_token_endpoint,
    expiry.connection_token_expiry,
)
APP_CHECKS: tuple[Callable[[AppCase], Check], ...] = (
    state.connections,
    settings.app_settings,
    redirect.authorization_url,
    redirect.app_redirect_url,
    settings.app_client_auth,
    scopes.app_scope_mismatch,
    scopes.app_scopes_denied,
    scopes.app_insufficient_scope,
    access.app_access_restrictions,
    refresh_tokens.app_refresh_token,
    refresh_tokens.app_invalidated,
    refresh_tokens.app_rotation_lost,
    provider.app_token_endpoint,
    expiry.app_token_expiry,
    revocation.revocation,
)


def diagnose_connection(
    connection: ConnectionFacts,
    app: AppFacts,
    *,
    redirect_url: str,
    recent_events: Sequence[RecentEvent] = (),
    endpoint: TokenEndpoint | None = None,
    provider_timeout: float | None = None,
    now: datetime | None = None,
) -> list[Check]:
    """Every check of one connection (`recent_events`: its events, newest first; `endpoint`:
    the health of its app's token endpoint, None when it never failed)."""
    case = ConnectionCase(
        connection=connection,
        app=app,
        redirect_url=redirect_url,
        now=now or datetime.now(UTC),
        events=tuple(recent_events),
        endpoint=endpoint,
        provider_timeout=provider_timeout,
    )
    return [each(case) for each in CONNECTION_CHECKS]


def diagnose_app(
    app: AppFacts,
    *,
    redirect_url: str,
    history: AppHistory,
    endpoint: TokenEndpoint | None = None,
    authorization_answer: EndpointAnswer | None = None,
    provider_timeout: float | None = None,
    now: datetime | None = None,
) -> list[Check]:
    """Every check of an application's settings, with what its connections met
    (`authorization_answer`: what its authorization URL answered, None when not fetched)."""
    case = AppCase(
        app=app,
        redirect_url=redirect_url,
        now=now or datetime.now(UTC),
        history=history,
        endpoint=endpoint,
        authorization_answer=authorization_answer,
        provider_timeout=provider_timeout,
    )
    return [each(case) for each in APP_CHECKS]
