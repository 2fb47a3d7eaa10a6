"""What a diagnosis judges, as typed facts: a connection's and an app's recorded state, their
recent events, the health of the app's token endpoint, and what its authorization URL answered.

`storage.diagnosis` builds them from the rows; they hold whether a token or a secret is set,
never its value. Values read from JSON columns (a provider's error, a runtime's report, an
event) keep only the fields the checks read, so nothing else can reach the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from authbroker import oauth
from authbroker.diagnosis.check import iso
from authbroker.problems import Problem


def parse_time(value: Any) -> datetime | None:
    """A time from a row (a datetime) or from JSON (ISO 8601 text); None if it is neither."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _text(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None


def _status(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _present(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {key: value for key, value in pairs if value is not None}


@dataclass(frozen=True)
class RecordedError:
    """A provider's error as authbroker recorded it (a connection's `last_error`, a token
    endpoint's last failure): at which stage, its code, words and HTTP status."""

    stage: str | None = None  # authorize, exchange, refresh, probe
    error: str | None = None
    description: str | None = None
    status: int | None = None

    @classmethod
    def of(cls, value: Any) -> RecordedError | None:
        if not isinstance(value, Mapping):
            return None
        found = cls(
            stage=_text(value.get("stage")),
            error=_text(value.get("error")),
            description=_text(value.get("description")),
            status=_status(value.get("status")),
        )
        return found if found.as_evidence() else None

    def as_evidence(self) -> dict[str, Any]:
        return _present(
            [
                ("stage", self.stage),
                ("error", self.error),
                ("description", self.description),
                ("status", self.status),
            ]
        )

    @property
    def brief(self) -> str:
        """`server_error, HTTP 503`: the error as summaries name it."""
        return (self.error or "error") + (f", HTTP {self.status}" if self.status else "")

    @property
    def problem(self) -> Problem | None:
        """The Problem this error stands for, classified as when it happened."""
        if not self.error:
            return Problem.ACCESS_DENIED if self.stage == "probe" and self.status == 401 else None
        if self.stage == "authorize":
            return oauth.callback_problem(self.error, self.description)
        grant: Any = {"exchange": "authorization_code", "refresh": "refresh_token"}.get(
            str(self.stage), "revoke"
        )
        return oauth.classify(self.error, self.description, grant=grant, status=self.status)


@dataclass(frozen=True)
class Report:
    """What a runtime last reported of the web service's answer (RFC 6750)."""

    status: int | None = None
    error: str | None = None
    scope: tuple[str, ...] | None = None
    at: datetime | None = None

    @classmethod
    def of(cls, value: Any) -> Report | None:
        if not isinstance(value, Mapping):
            return None
        scope = value.get("scope")
        found = cls(
            status=_status(value.get("status")),
            error=_text(value.get("error")),
            scope=tuple(scope.split() if isinstance(scope, str) else map(str, scope))
            if scope is not None
            else None,
            at=parse_time(value.get("at")),
        )
        return found if found.as_evidence() else None

    def as_evidence(self) -> dict[str, Any]:
        return _present(
            [
                ("status", self.status),
                ("error", self.error),
                ("scope", list(self.scope) if self.scope is not None else None),
                ("at", iso(self.at)),
            ]
        )


@dataclass(frozen=True)
class RecentEvent:
    """One event of the outbox, as the checks read it."""

    type: str
    occurred_at: str | None
    problem: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    connection_id: str | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> RecentEvent:
        data = event.get("data")
        return cls(
            type=str(event.get("type")),
            occurred_at=_text(event.get("occurred_at")),
            problem=_text(event.get("problem")),
            data=dict(data) if isinstance(data, Mapping) else {},
            connection_id=_text(event.get("connection_id")),
        )

    @property
    def at(self) -> datetime | None:
        return parse_time(self.occurred_at)

    def as_evidence(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "occurred_at": self.occurred_at,
            "problem": self.problem,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class PausedError:
    """What the provider answered when it paused the app: its error, words and status, and the
    placements the client credentials were refused in (when more than one was tried)."""

    error: RecordedError
    placements: tuple[str, ...] = ()

    @classmethod
    def of(cls, value: Any) -> PausedError | None:
        error = RecordedError.of(value)
        if error is None:
            return None
        placements = value.get("placements")
        found = tuple(str(p) for p in placements) if isinstance(placements, list) else ()
        return cls(error, found)

    def as_evidence(self) -> dict[str, Any]:
        evidence = self.error.as_evidence()
        if self.placements:
            evidence["placements_refused"] = list(self.placements)
        return evidence


@dataclass(frozen=True)
class AppFacts:
    """An app's settings and state; of its secrets only whether they are set."""

    name: str
    client_id: str
    authorization_url: str
    token_url: str
    revoke_url: str | None = None
    scopes: tuple[str, ...] = ()
    client_auth: str = "body"
    client_auth_detected: str | None = None
    # The fixed placement was refused and this one worked, first seen then.
    client_auth_works: str | None = None
    client_auth_works_at: datetime | None = None
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    pkce: bool = True
    refresh_token_lifetime: int | None = None
    preset: str | None = None
    client_secret_set: bool = True
    awaiting_secret: bool = False
    paused_at: datetime | None = None
    paused_problem: str | None = None
    paused_error: PausedError | None = None
    reports_to_invalidate: int = 3
    deleting: bool = False
    updated_at: datetime | None = None

    @property
    def paused(self) -> str | None:
        """Why refreshes of the app are paused (the problem its settings met), or None."""
        if self.paused_at is None:
            return None
        return self.paused_problem or str(Problem.INVALID_SETTINGS)


@dataclass(frozen=True)
class ConnectionFacts:
    """A connection's recorded state; of its tokens only whether they are stored."""

    id: str
    app: str
    status: str
    problem: str | None = None
    has_access_token: bool = False
    has_refresh_token: bool = False
    expires_at: datetime | None = None
    refresh_at: datetime | None = None
    refresh_token_expires_at: datetime | None = None
    requested_scopes: tuple[str, ...] = ()
    granted_scopes: tuple[str, ...] | None = None  # None: not authorized, or the provider said none
    lease_holder: str | None = None
    lease_until: datetime | None = None
    failed_attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: RecordedError | None = None
    last_refresh_at: datetime | None = None
    last_report: Report | None = None
    authorized_at: datetime | None = None
    answer_lost_at: datetime | None = None
    # Bare 401s reported for a token without refresh token, counted since (see revoked tokens).
    unconfirmed_401s: int = 0
    unconfirmed_401s_since: datetime | None = None
    # A service connection: its tokens come from the client credentials grant, no refresh token.
    service: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def authorized(self) -> bool:
        return self.has_access_token or self.authorized_at is not None


@dataclass(frozen=True)
class TokenEndpoint:
    """The health of an app's token endpoint, shared by every app using the same URL: the
    transient failures in a row, and whether they have made it unavailable (refreshes held
    back, one probe at a time) after `failures_to_trip` of them."""

    url: str
    available: bool
    failures: int
    failures_to_trip: int
    last_failure_at: datetime | None = None
    last_error: RecordedError | None = None
    unavailable_since: datetime | None = None
    next_probe_at: datetime | None = None


@dataclass(frozen=True)
class EndpointAnswer:
    """What a URL answered to a bare GET, redirects not followed: an HTTP status, or why there
    was none (`error`: not_allowed, unresolvable, refused, timeout, tls, connection)."""

    url: str
    status: int | None = None
    error: str | None = None
    detail: str | None = None

    def as_evidence(self) -> dict[str, Any]:
        return _present(
            [
                ("url", self.url),
                ("status", self.status),
                ("error", self.error),
                ("detail", self.detail),
            ]
        )


@dataclass(frozen=True)
class AppHistory:
    """What an app's connections met: how many are in each status, how many have each
    problem (revoked ones left out), how many lost a refresh answer not yet resolved, and the
    app's recent revocations (`connection.revoked` events, newest first)."""

    by_status: Mapping[str, int] = field(default_factory=dict)
    problems: Mapping[str, int] = field(default_factory=dict)
    answers_lost: int = 0
    revocations: Sequence[RecentEvent] = ()


@dataclass(frozen=True)
class ConnectionCase:
    """Everything the checks of one connection read."""

    connection: ConnectionFacts
    app: AppFacts
    redirect_url: str
    now: datetime
    events: Sequence[RecentEvent] = ()
    endpoint: TokenEndpoint | None = None
    provider_timeout: float | None = None

    @property
    def error(self) -> RecordedError | None:
        return self.connection.last_error

    def has(self, problem: Problem) -> bool:
        """Whether the connection has the problem, or its last provider error stands for it."""
        return self.connection.problem == problem or (
            self.error is not None and self.error.problem == problem
        )

    def events_of(self, *types: str) -> list[RecentEvent]:
        return [event for event in self.events if event.type in types]


@dataclass(frozen=True)
class AppCase:
    """Everything the checks of one app read."""

    app: AppFacts
    redirect_url: str
    now: datetime
    history: AppHistory = field(default_factory=AppHistory)
    endpoint: TokenEndpoint | None = None
    authorization_answer: EndpointAnswer | None = None
    provider_timeout: float | None = None

    def count(self, problem: Problem) -> int:
        """How many of the app's connections have the problem."""
        return int(self.history.problems.get(str(problem), 0))

    def with_count(self, problem: Problem, **extra: Any) -> dict[str, Any]:
        """Evidence that starts with that count."""
        return {"connections_with_problem": self.count(problem), **extra}
