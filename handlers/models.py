"""The bodies the HTTP API answers, as pydantic models.

Handlers answer through these models (`handlers.responses.ok`), and `/openapi.json` describes the
answers with the same models' JSON Schemas, so what is served and what is documented cannot
drift apart. Field order is the order of the answer's keys; a field declared with `omitted()` is
left out of an answer that does not set it, every other field is always present (null when it
has no value). Models never take a token or a secret except the two credential answers and the
webhook signing secret answer (creation and rotation), whose purpose is to hand one out.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, RootModel

from authbroker import provider_data
from authbroker.diagnosis import Status as CheckStatus
from authbroker.events import ConnectionStatus
from authbroker.oauth import ClientAuth, KeyAlgorithm, Placement, TokenRequestFormat
from authbroker.problems import Problem
from authbroker.roles import Role
from authbroker.schemas import without_default

if TYPE_CHECKING:
    from authbroker import diagnosis
    from services import authorizations, connect_links, service_connections
    from services.api_keys import Shown
    from storage.api_keys import ApiKey as ApiKeyRow
    from storage.apps import App as AppRow
    from storage.authorizations import Authorization
    from storage.basic import BasicCredential
    from storage.connections import Connection as ConnectionRow
    from storage.credential_reads import Found
    from storage.sealing import KeyRing
    from storage.webhooks import Attempt as AttemptRow
    from storage.webhooks import Delivery as DeliveryRow
    from storage.webhooks import Webhook as WebhookRow

Url = Annotated[str, Field(json_schema_extra={"format": "uri"})]


def omitted(description: str | None = None, **constraints: Any) -> Any:
    """A field that is left out, rather than null, when it does not apply."""
    return Field(None, description=description, json_schema_extra=without_default, **constraints)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ errors


class FieldError(Body):
    field: str
    message: str


class Error(Body):
    """Every error answer: `error` and `message`, and the fields that apply."""

    error: str = Field(description="A short code to branch on.")
    message: str = Field(description="What was wrong, for people.")
    fields: list[FieldError] = omitted("Validation errors, one per invalid field.")
    request_id: str = omitted("The request's id in the logs (internal errors).")
    status: ConnectionStatus = omitted("The connection's status.")
    problem: str | None = omitted("The problem code that explains the error.")
    detail: str | None = omitted("What to do about it.")
    next_attempt_at: datetime | None = omitted("When the next refresh attempt is due.")
    connections: int = omitted("Live connections of the app.")


# ------------------------------------------------------------------------------ apps


class Jwk(Body):
    """A public key (RFC 7517): what a provider registers to check the app's assertions."""

    kty: Literal["RSA", "EC"]
    kid: str = Field(description="The key's RFC 7638 thumbprint.")
    alg: KeyAlgorithm
    use: Literal["sig"]
    n: str = omitted("RSA modulus.")
    e: str = omitted("RSA exponent.")
    crv: Literal["P-256"] = omitted("EC curve.")
    x: str = omitted("EC x coordinate.")
    y: str = omitted("EC y coordinate.")


class Jwks(Body):
    """A JWK Set (RFC 7517 §5): the app's public keys, the signing key first."""

    keys: list[Jwk]


class AppKeyAdded(Body):
    """The app signs with the new key from now on; register its public key at the provider."""

    app: str
    kid: str = Field(description="The new signing key's id.")
    jwks: Jwks


class App(Body):
    """An OAuth application; secrets go in, never come out."""

    name: str
    client_id: str
    client_secret_set: bool
    client_secrets_previous_set: bool
    authorization_url: Url | None = Field(
        description="Absent (null): the app makes service connections only (client credentials)."
    )
    token_url: Url
    revoke_url: Url | None
    connection_settings: list[str] = Field(
        description="Values each connection gives when it starts (`settings`): the URLs hold "
        "`{name}` as the first label of their host, filled per connection."
    )
    scopes: list[str]
    scope_separator: str
    client_auth: ClientAuth
    client_auth_detected: Placement | None
    client_auth_works: Placement | None = Field(
        description="The provider refused the fixed `client_auth` placement and accepted the "
        "credentials here instead (null: nothing seen). Set `client_auth` to it; any change of "
        "`client_auth` clears it."
    )
    client_auth_works_at: datetime | None = Field(
        description="When `client_auth_works` was first seen."
    )
    token_request_format: TokenRequestFormat
    client_assertion_audience: str | None
    jwks_public: bool
    reconnect_links: bool = Field(
        description="Events whose remedy is to authorize again carry a fresh connect link "
        "(`data.reconnect_url`)."
    )
    key_ids: list[str] = Field(
        description="The ids of the app's private keys (private_key_jwt), the signing key first; "
        "GET /v1/apps/{name}/jwks has their public halves."
    )
    authorize_params: dict[str, str]
    token_params: dict[str, str]
    pkce: bool
    refresh_margin: int
    default_token_lifetime: int | None
    refresh_token_lifetime: int | None
    probe_url: Url | None
    probe_interval: int | None
    reports_to_invalidate: int = Field(
        description="For connections without a refresh token: how many bare 401 reports within "
        "an hour, unconfirmed by a probe, mark the connection `token_revoked`."
    )
    issuer: Url | None = Field(
        description="The authorization server's issuer (RFC 9207): a callback whose `iss` "
        "differs fails with `issuer_mismatch`."
    )
    require_iss: bool = Field(description="A callback without `iss` fails too.")
    preset: str | None
    paused: bool
    paused_problem: Problem | None
    deleting: bool
    awaiting_secret: bool = Field(
        description="Imported without its client secret: no authorization starts until it is set."
    )
    redirect_url: Url = Field(description="This broker's callback: register it at the provider.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, app: AppRow, redirect_url: str) -> App:
        return cls(
            name=app.name,
            client_id=app.client_id,
            client_secret_set=app.client_secret is not None,
            client_secrets_previous_set=app.client_secrets_previous is not None,
            authorization_url=app.authorization_url,
            token_url=app.token_url,
            revoke_url=app.revoke_url,
            connection_settings=app.connection_settings,
            scopes=app.scopes,
            scope_separator=app.scope_separator,
            client_auth=app.client_auth,
            client_auth_detected=app.client_auth_detected,
            client_auth_works=app.client_auth_works,
            client_auth_works_at=app.client_auth_works_at,
            token_request_format=app.token_request_format,
            client_assertion_audience=app.client_assertion_audience,
            jwks_public=app.jwks_public,
            reconnect_links=app.reconnect_links,
            key_ids=[key["kid"] for key in app.jwks.get("keys", [])],
            authorize_params=app.authorize_params,
            token_params=app.token_params,
            pkce=app.pkce,
            refresh_margin=app.refresh_margin,
            default_token_lifetime=app.default_token_lifetime,
            refresh_token_lifetime=app.refresh_token_lifetime,
            probe_url=app.probe_url,
            probe_interval=app.probe_interval,
            reports_to_invalidate=app.reports_to_invalidate,
            issuer=app.issuer,
            require_iss=app.require_iss,
            preset=app.preset,
            paused=app.paused_at is not None,
            paused_problem=app.paused_problem,
            deleting=app.deleting,
            awaiting_secret=app.awaiting_secret,
            redirect_url=redirect_url,
            created_at=app.created_at,
            updated_at=app.updated_at,
        )


class AppList(Body):
    items: list[App]


class AppDeleting(Body):
    """The app goes once its connections are revoked at the provider."""

    status: Literal["deleting"]
    connections_revoking: int
    app: str


class AppImportResult(Body):
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    skipped: list[str]


class BasicImportResult(AppImportResult):
    """What happened to each Basic credential: created ones wait for their password."""


# ------------------------------------------------------------------------------ connections


class AuthorizationStarted(Body):
    connection_id: str
    authorize_url: Url = Field(description="Send the user's browser here.")
    expires_at: datetime
    authorization_id: uuid.UUID
    status_url: Url

    @classmethod
    def of(cls, started: authorizations.Started) -> AuthorizationStarted:
        return cls(
            connection_id=started.connection_id,
            authorize_url=started.authorize_url,
            expires_at=started.expires_at,
            authorization_id=started.authorization_id,
            status_url=started.status_url,
        )


class ConnectLink(Body):
    """A single-use link that starts a fresh authorization of the connection when opened."""

    url: Url = Field(
        description="Give it to the person who must authorize (mail it, show it); it works "
        "once, needs no API key, and grants nothing else."
    )
    expires_at: datetime
    connection_id: str = Field(description="The connection it authorizes (made now if new).")

    @classmethod
    def of(cls, link: connect_links.Link) -> ConnectLink:
        return cls(url=link.url, expires_at=link.expires_at, connection_id=link.connection_id)


class ServiceConnectionStarted(Body):
    connection_id: str
    grant: Literal["client_credentials"] = "client_credentials"
    status: ConnectionStatus = Field(
        description="`pending` until its first token arrives; an existing connection keeps its "
        "status (and working token) until the next one does."
    )
    reauthorization: bool
    connection_url: Url = Field(description="Where to follow it (GET, with an API key).")

    @classmethod
    def of(cls, started: service_connections.Started, public_url: str) -> ServiceConnectionStarted:
        return cls(
            connection_id=started.connection_id,
            status=started.status,
            reauthorization=started.reauthorization,
            connection_url=f"{public_url}/v1/connections/{quote(started.connection_id, safe='')}",
        )


class ProviderError(BaseModel):
    """The last error the provider (or the probe URL) answered; never a secret."""

    # Recorded by the worker as JSON: a key this model does not know is left out of answers.
    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": False})

    stage: Literal["authorize", "exchange", "client_credentials", "refresh", "probe"]
    error: str | None = omitted()
    description: str | None = omitted()
    status: int | None = omitted()


class Connection(Body):
    """One authorized account of an app; never its tokens."""

    connection_id: str
    app: str
    grant: Literal["authorization_code", "client_credentials"] = Field(
        description="How its tokens come: a user's authorization, or the client credentials "
        "grant (a service connection)."
    )
    status: ConnectionStatus
    problem: Problem | None
    problem_detail: str | None
    requested_scopes: list[str]
    granted_scopes: list[str] | None
    token_params: dict[str, str | list[str]] | None = Field(
        description="A service connection's own token request parameters (audience, resource…)."
    )
    authorization_pending: bool = Field(
        description="A service connection's start waits for its token (false once it arrives "
        "or is refused)."
    )
    token_type: str | None
    expires_at: datetime | None
    refresh_at: datetime | None
    has_access_token: bool
    has_refresh_token: bool
    refresh_token_expires_at: datetime | None
    failed_attempts: int
    next_attempt_at: datetime | None
    last_error: ProviderError | None
    last_refresh_at: datetime | None
    authorized_at: datetime | None
    metadata: dict[str, Any]
    settings: dict[str, str] = Field(
        description="The values its app's connection settings have for it: its URLs are the "
        "app's, filled with them."
    )
    provider_data: dict[str, Any] = Field(
        description="What the provider returned besides tokens (an instance URL, a team, a "
        "company id from the redirect, the OpenID subject), without anything secret."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, c: ConnectionRow, ring: KeyRing) -> Connection:
        return cls(
            connection_id=c.id,
            app=c.app,
            grant=c.grant_type,
            status=c.status,
            problem=c.problem,
            problem_detail=c.problem_detail or Problem.remedy_of(c.problem),
            requested_scopes=c.requested_scopes,
            granted_scopes=c.granted_scopes,
            token_params=c.token_params,
            authorization_pending=c.authorization_pending,
            token_type=c.token_type,
            expires_at=c.expires_at,
            refresh_at=c.refresh_at,
            has_access_token=c.access_token is not None,
            has_refresh_token=c.refresh_token is not None,
            refresh_token_expires_at=c.refresh_token_expires_at,
            failed_attempts=c.failed_attempts,
            next_attempt_at=c.next_attempt_at,
            last_error=c.last_error,
            last_refresh_at=c.last_refresh_at,
            authorized_at=c.authorized_at,
            metadata=c.metadata,
            settings=c.settings,
            provider_data=provider_data.shown(c.open_extra(ring)),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class ConnectionPage(Body):
    items: list[Connection]
    next: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class ConnectionRevoking(Body):
    connection_id: str
    status: Literal["revoking"]


class OAuthCredentials(Body):
    type: Literal["oauth2"]
    access_token: str
    token_type: str
    expires_at: datetime | None
    scopes: list[str] | None = Field(
        description="The scopes granted; null when the provider did not say (its token "
        "response had no `scope`)."
    )
    authorization: str = Field(description="The ready `Authorization` header value.")
    provider_data: dict[str, Any] = Field(
        description="What the provider returned besides tokens: Salesforce's `instance_url`, "
        "Slack's `team` and `authed_user`, QuickBooks' `realmId`, an OpenID `id_token` and its "
        "`subject`, …"
    )


class RefreshOutcome(Body):
    outcome: Literal["refreshed", "failed", "retrying"]
    connection: Connection


class ScopeRecorded(Body):
    """insufficient_scope: recorded with the scopes the service named."""

    action: Literal["recorded"]
    problem: Literal[Problem.INSUFFICIENT_SCOPE]
    required_scopes: list[str]


class TokenRefreshed(Body):
    """invalid_token or a bare 401: the connection was refreshed."""

    action: Literal["refreshed", "refresh_attempted"]
    connection: Connection


class TokenInvalidated(Body):
    """A connection without a refresh token whose token is dead: failed with `token_revoked`."""

    action: Literal["invalidated"]
    problem: Literal[Problem.TOKEN_REVOKED]
    confirmed_by: Literal["invalid_token", "probe", "reports"] = Field(
        description="The report said invalid_token, the app's probe URL refused the token too, "
        "or this report was the app's `reports_to_invalidate`-th bare 401 within an hour."
    )
    connection: Connection


class ReportCounted(Body):
    """A bare 401 for a connection without a refresh token, which nothing confirms (no probe URL,
    or it could not be reached): counted as evidence."""

    action: Literal["counted"]
    reports: int = Field(description="Bare 401s counted within the hour, this one included.")
    confirms_at: int = Field(
        description="The count that marks the connection `token_revoked` (the app's "
        "`reports_to_invalidate`)."
    )
    since: datetime = Field(description="The first report counted; the count restarts an hour on.")


class ReportHint(Body):
    """Nothing to do: a 403 without a Bearer error, or a token the probe URL accepts; a hint."""

    action: Literal["none"]
    hint: str


class ReportOutcome(
    RootModel[
        Annotated[
            ScopeRecorded | TokenRefreshed | TokenInvalidated | ReportCounted | ReportHint,
            Field(discriminator="action"),
        ]
    ]
):
    """What authbroker did with the report."""


# ------------------------------------------------------------------------------ Basic credentials


class Basic(Body):
    name: str
    login: str
    awaiting_password: bool = Field(
        description="Imported without its password: its credentials answer 409 until "
        "PUT /v1/basic/{name} sets one."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, credential: BasicCredential) -> Basic:
        return cls(
            name=credential.name,
            login=credential.login,
            awaiting_password=credential.password is None,
            created_at=credential.created_at,
            updated_at=credential.updated_at,
        )


class BasicList(Body):
    items: list[Basic]


class BasicCredentials(Body):
    type: Literal["basic"]
    login: str
    password: str
    authorization: str = Field(description="`Basic base64(login:password)`")


# ------------------------------------------------------------------------------ webhooks


class Webhook(Body):
    """A webhook subscription; its signing secret is shown only when created or rotated."""

    id: uuid.UUID
    url: Url
    description: str | None
    types: list[str] | None = Field(description="Event types or prefixes; null: every type.")
    apps: list[str] | None = Field(description="App names; null: every app.")
    enabled: bool
    disabled_reason: Literal["operator", "gone", "failing"] | None = Field(
        description="Why it is disabled: by an operator, the receiver answered 410 Gone, or a "
        "delivery failed for a day."
    )
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="While a rotation's window is open, the previous secret signs too until "
        "then; null when only the current secret signs."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, webhook: WebhookRow) -> Webhook:
        # Only the fields declared here are read: never the sealed secrets of the row.
        return cls.model_validate(webhook, from_attributes=True)


class WebhookWithSecret(Webhook):
    """The subscription and its signing secret, shown this once."""

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: verify deliveries with it "
        "(Standard Webhooks). Never shown again."
    )

    @classmethod
    def with_secret(cls, webhook: WebhookRow, secret: str) -> WebhookWithSecret:
        return cls(**Webhook.of(webhook).model_dump(), secret=secret)


class WebhookList(Body):
    items: list[Webhook]


class WebhookAttempt(Body):
    """One attempt to deliver an event."""

    id: int
    delivery_id: int = Field(description="The delivery it belongs to (replay it by this id).")
    event_id: str = Field(description="The event's id: the `webhook-id` header.")
    event_type: str
    attempt: int = Field(description="Which attempt of its delivery, from 1.")
    attempted_at: datetime
    outcome: Literal["delivered", "retrying", "failed"]
    status_code: int | None = Field(description="The receiver's answer; null: none came.")
    latency_ms: float | None
    error: str | None
    next_attempt_at: datetime | None = Field(description="When it is tried again (retrying).")

    @classmethod
    def of(cls, attempt: AttemptRow) -> WebhookAttempt:
        return cls.model_validate(attempt, from_attributes=True)


class WebhookAttemptPage(Body):
    items: list[WebhookAttempt]
    next: int | None = Field(description="Pass as `after` for older attempts; null: no more.")


class WebhookDelivery(Body):
    """A delivery of one event to one subscription."""

    delivery_id: int
    webhook_id: uuid.UUID
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed", "abandoned"]
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: DeliveryRow) -> WebhookDelivery:
        return cls(
            delivery_id=delivery.id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            state=delivery.state,  # type: ignore[arg-type]
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
        )


# ------------------------------------------------------------------------------ diagnosis


class Check(Body):
    name: str
    status: CheckStatus
    summary: str
    evidence: dict[str, Any] = Field(description="What was recorded; never a secret.")
    remedy: str | None

    @classmethod
    def of(cls, check: diagnosis.Check) -> Check:
        return cls.model_validate(check, from_attributes=True)


class ConnectionDiagnosis(Body):
    connection_id: str
    app: str
    status: ConnectionStatus
    checks: list[Check]
    summary: CheckStatus


class AppDiagnosis(Body):
    app: str
    status: Literal["active", "paused", "deleting"]
    checks: list[Check]
    summary: CheckStatus


# ------------------------------------------------------------------------------ API keys


class ApiKey(Body):
    """An API key; never its secret (shown once, when it is created)."""

    id: str
    name: str
    role: Role
    apps: list[str] | None = Field(
        description="The apps (and Basic credentials) a runtime key is limited to; null: all."
    )
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute.")
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKeyRow) -> ApiKey:
        return cls(
            id=key.id,
            name=key.name,
            role=Role(key.role),
            apps=key.apps,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The key itself: shown only in this answer, never stored.")


class ApiKeyList(Body):
    items: list[ApiKey]


class ReadTotal(Body):
    """Every read of one subject by the key, over the days the audit keeps."""

    kind: Literal["connection", "basic"]
    subject: str = Field(description="The connection's id, or the Basic credential's name.")
    count: int
    days: int = Field(description="Days with at least one read.")
    first_at: datetime
    last_at: datetime


class ApiKeyShown(ApiKey):
    reads: list[ReadTotal] = Field(description="What the key read, the most recent first.")

    @classmethod
    def shown(cls, found: Shown) -> ApiKeyShown:
        return cls(
            **ApiKey.of(found.key).model_dump(),
            reads=[
                ReadTotal(
                    kind=r.kind,  # type: ignore[arg-type]
                    subject=r.subject,
                    count=r.count,
                    days=r.days,
                    first_at=r.first_at,
                    last_at=r.last_at,
                )
                for r in found.reads
            ],
        )


class CredentialRead(Body):
    """Reads of one subject by one key on one day (UTC)."""

    key_id: str
    key_name: str
    kind: Literal["connection", "basic"]
    subject: str
    day: date
    count: int
    first_at: datetime
    last_at: datetime

    @classmethod
    def of(cls, read: Found) -> CredentialRead:
        return cls.model_validate(read, from_attributes=True)


class CredentialReadList(Body):
    items: list[CredentialRead]


# ------------------------------------------------------------------------------ the browser's side


class CallbackOutcome(Body):
    status: Literal["pending", "succeeded", "failed"]
    app: str
    connection_id: str
    problem: Problem | None
    detail: str | None
    status_url: str

    @classmethod
    def of(cls, authorization: Authorization) -> CallbackOutcome:
        problem = Problem(authorization.problem) if authorization.problem else None
        if authorization.done:
            status = "succeeded" if authorization.outcome == "succeeded" else "failed"
        else:
            status = "pending"
        return cls(
            status=status,
            app=authorization.app,
            connection_id=authorization.connection_id,
            problem=problem,
            detail=problem.remedy if problem else None,
            status_url=f"/oauth/status/{authorization.id}",
        )


# ------------------------------------------------------------------------------ health


class Health(Body):
    status: Literal["ok"]


class ReadinessChecks(Body):
    postgres: str
    redis: str


class Readiness(Body):
    status: Literal["ready", "unavailable"]
    checks: ReadinessChecks
    message: str = omitted("What does not answer.")
