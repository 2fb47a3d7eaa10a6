"""The event contract for integration runtimes: one JSON object per change of auth status.

Events are built here only, so their shape stays the one the README documents. They never carry
a token or a secret: `detail` is prose for people, `data` holds names, counts and times. Each
event type has one shape of `data` (a class below), and every time in an event is written the
same way: RFC 3339, UTC, milliseconds, `Z`.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from authbroker.problems import Problem
from authbroker.states import Status

# The statuses of a connection, as events and the API report them.
ConnectionStatus = Status


class EventType(StrEnum):
    # A connection became pending: an authorization was started (for a new connection, or to
    # authorize an existing one again; its status then stays until the new grant arrives).
    AUTHORIZATION_STARTED = "connection.authorization_started"
    AUTHORIZED = "connection.authorized"
    REFRESHED = "connection.refreshed"
    REFRESH_FAILED = "connection.refresh_failed"
    INVALIDATED = "connection.invalidated"
    EXPIRED = "connection.expired"
    # Deleted: revocation at the provider is under way.
    REVOKING = "connection.revoking"
    REVOKED = "connection.revoked"
    SCOPES_DENIED = "connection.scopes_denied"
    REFRESH_TOKEN_MISSING = "connection.refresh_token_missing"
    AUTHORIZATION_FAILED = "connection.authorization_failed"
    # A runtime reported that the token lacks a scope (RFC 6750).
    INSUFFICIENT_SCOPE = "connection.insufficient_scope"
    APP_SETTINGS_INVALID = "app.settings_invalid"
    # The provider refused the app's fixed client_auth placement and accepted another: the
    # tokens were used, the setting is left as it is, and this names the change to make.
    APP_CLIENT_AUTH_MISMATCH = "app.client_auth_mismatch"
    # The app's refreshes stop (its settings were refused) and go on again (it was changed).
    APP_REFRESHES_PAUSED = "app.refreshes_paused"
    APP_REFRESHES_RESUMED = "app.refreshes_resumed"
    # The app's token endpoint turned unavailable (refreshes held back, one probe at a time)
    # and answered again (the backlog released).
    APP_PROVIDER_UNAVAILABLE = "app.provider_unavailable"
    APP_PROVIDER_RECOVERED = "app.provider_recovered"
    # A webhook subscription was disabled: its receiver answered 410 Gone, or failed every
    # attempt of a delivery for a day. About no app and no connection.
    WEBHOOK_DISABLED = "webhook.disabled"


def event_time(moment: datetime) -> str:
    """The one way times are written in events: `2026-11-27T17:40:00.000Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EventData:
    """Base of the `data` of each event type."""

    type: ClassVar[EventType]

    def as_json(self) -> dict[str, Any]:
        return {field.name: _json(getattr(self, field.name)) for field in dataclasses.fields(self)}


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return event_time(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthorizationStarted(EventData):
    type = EventType.AUTHORIZATION_STARTED
    reauthorization: bool
    # The user's authorization and when it lapses if they do not finish; both None for a service
    # connection (the client credentials grant), whose token a worker requests at once.
    authorization_id: str | None
    expires_at: datetime | None
    grant: str = "authorization_code"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Authorized(EventData):
    type = EventType.AUTHORIZED
    granted_scopes: list[str] | None  # None: the provider did not say
    expires_at: datetime | None
    has_refresh_token: bool
    reauthorization: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refreshed(EventData):
    type = EventType.REFRESHED
    expires_at: datetime | None
    refresh_token_rotated: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefreshFailed(EventData):
    type = EventType.REFRESH_FAILED
    attempt: int
    next_attempt_at: datetime
    provider_error: str | None
    provider_status: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Invalidated(EventData):
    """The grant is gone: the provider refused the refresh token (`answer_lost`: after a
    rotation whose answer never arrived), or the web service refused a fresh token (probe), or,
    for a connection without a refresh token, the access token: a runtime's report
    (`reported_status`, `reported_error`: invalid_token), confirmed by the probe
    (`probe_status`) or by `reports` bare 401s within an hour."""

    type = EventType.INVALIDATED
    provider_error: str | None = None
    answer_lost: bool = False
    probe_status: int | None = None
    reported_status: int | None = None
    reported_error: str | None = None
    reports: int | None = None
    reconnect_url: str | None = None  # when the app hands out connect links


@dataclasses.dataclass(frozen=True, kw_only=True)
class Expired(EventData):
    type = EventType.EXPIRED
    reconnect_url: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revoking(EventData):
    type = EventType.REVOKING


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revoked(EventData):
    """`revoked_at_provider` None: the app has no revoke URL; False: the provider did not
    confirm, and `provider_*` say what it answered (for the app's diagnosis)."""

    type = EventType.REVOKED
    revoked_at_provider: bool | None
    provider_error: str | None = None
    provider_status: int | None = None
    provider_description: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScopesDenied(EventData):
    type = EventType.SCOPES_DENIED
    requested_scopes: list[str]
    granted_scopes: list[str]
    missing: list[str]
    reconnect_url: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefreshTokenMissing(EventData):
    type = EventType.REFRESH_TOKEN_MISSING
    token_expires: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthorizationFailed(EventData):
    """The same shape whatever ended it: the provider's redirect (`provider_description`), the
    code exchange (`provider_status`), or nobody finishing in time (all None)."""

    type = EventType.AUTHORIZATION_FAILED
    provider_error: str | None = None
    provider_status: int | None = None
    provider_description: str | None = None
    reconnect_url: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class InsufficientScope(EventData):
    type = EventType.INSUFFICIENT_SCOPE
    required_scopes: list[str]
    granted_scopes: list[str] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SettingsInvalid(EventData):
    """`placements_refused`: where the client credentials went, each refused (empty when only
    one placement was tried); `provider_description` has each one's answer."""

    type = EventType.APP_SETTINGS_INVALID
    provider_error: str | None
    provider_status: int | None
    provider_description: str | None = None
    placements_refused: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientAuthMismatch(EventData):
    """The provider refused the credentials in the `configured` placement and accepted them in
    `worked` (client_auth's value to set; `detail` names the request and the command)."""

    type = EventType.APP_CLIENT_AUTH_MISMATCH
    configured: str
    worked: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefreshesPaused(EventData):
    type = EventType.APP_REFRESHES_PAUSED
    problem: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefreshesResumed(EventData):
    type = EventType.APP_REFRESHES_RESUMED
    paused_seconds: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProviderUnavailable(EventData):
    type = EventType.APP_PROVIDER_UNAVAILABLE
    token_endpoint: str
    failures: int
    provider_error: str | None
    provider_status: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProviderRecovered(EventData):
    type = EventType.APP_PROVIDER_RECOVERED
    token_endpoint: str
    unavailable_seconds: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebhookDisabled(EventData):
    type = EventType.WEBHOOK_DISABLED
    webhook_id: str
    reason: str  # `gone` (the receiver answered 410) or `failing` (a day of failed attempts)
    failing_since: datetime | None
    last_status: int | None  # the receiver's last HTTP status; None: no answer
    attempts: int


class Event(BaseModel):
    """One change of auth status, appended to the Redis stream `authbroker:events` and published
    on the channel of the same name (both under the configured prefix). Not served over HTTP:
    described here for runtimes that consume the stream."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    type: EventType
    occurred_at: datetime
    app: str | None = Field(description="The app the event is about; null for `webhook.` events.")
    connection_id: str | None
    status: ConnectionStatus | None
    problem: Problem | None
    detail: str | None = Field(description="Prose for people (often the remedy).")
    data: dict[str, Any] = Field(
        description="Names, counts and times of the change; never a token or secret."
    )


FIELDS = tuple(Event.model_fields)


def make_event(
    type: EventType,
    *,
    app: str | None,
    connection_id: str | None = None,
    status: str | None = None,
    problem: Problem | None = None,
    detail: str | None = None,
    data: EventData | None = None,
) -> dict[str, Any]:
    """Build an event; `detail` defaults to the problem's remedy so consumers can show it.
    `data` is the event type's own shape (ValueError for another type's)."""
    if data is not None and data.type != type:
        raise ValueError(f"{type} events carry {type} data, not {data.type}'s")
    return {
        "id": str(uuid.uuid4()),
        "type": str(type),
        "occurred_at": event_time(datetime.now(UTC)),
        "app": app,
        "connection_id": connection_id,
        "status": status,
        "problem": str(problem) if problem else None,
        "detail": detail if detail is not None else (problem.remedy if problem else None),
        "data": data.as_json() if data is not None else {},
    }
