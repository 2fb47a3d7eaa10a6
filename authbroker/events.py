"""The event contract for integration runtimes: one JSON object per change of auth status.

Events are built here only, so their shape stays the one the README documents. They never carry
a token or a secret: `detail` is prose for people, `data` holds names, counts and times.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from authbroker.problems import Problem

# The statuses of a connection, as events and the API report them.
ConnectionStatus = Literal["pending", "active", "failed", "expired", "revoking", "revoked"]


class EventType(StrEnum):
    AUTHORIZED = "connection.authorized"
    REFRESHED = "connection.refreshed"
    REFRESH_FAILED = "connection.refresh_failed"
    INVALIDATED = "connection.invalidated"
    EXPIRED = "connection.expired"
    REVOKED = "connection.revoked"
    SCOPES_DENIED = "connection.scopes_denied"
    REFRESH_TOKEN_MISSING = "connection.refresh_token_missing"
    AUTHORIZATION_FAILED = "connection.authorization_failed"
    # A runtime reported that the token lacks a scope (RFC 6750).
    INSUFFICIENT_SCOPE = "connection.insufficient_scope"
    APP_SETTINGS_INVALID = "app.settings_invalid"
    # The app's token endpoint turned unavailable (refreshes held back, one probe at a time)
    # and answered again (the backlog released).
    APP_PROVIDER_UNAVAILABLE = "app.provider_unavailable"
    APP_PROVIDER_RECOVERED = "app.provider_recovered"


class Event(BaseModel):
    """One change of auth status, appended to the Redis stream `authbroker:events` and published
    on the channel of the same name (both under the configured prefix). Not served over HTTP:
    described here for runtimes that consume the stream."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    type: EventType
    occurred_at: datetime
    app: str
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
    app: str,
    connection_id: str | None = None,
    status: str | None = None,
    problem: Problem | None = None,
    detail: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an event; `detail` defaults to the problem's remedy so consumers can show it."""
    return {
        "id": str(uuid.uuid4()),
        "type": str(type),
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "app": app,
        "connection_id": connection_id,
        "status": status,
        "problem": str(problem) if problem else None,
        "detail": detail if detail is not None else (problem.remedy if problem else None),
        "data": data or {},
    }
