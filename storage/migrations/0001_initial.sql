-- The whole schema. Every bytea column named like a secret holds a sealed value
-- (storage/sealing.py), never plaintext.

CREATE TABLE apps (
    id                       uuid PRIMARY KEY,
    name                     text NOT NULL UNIQUE,
    client_id                text NOT NULL,
    client_secret            bytea,
    client_secrets_previous  bytea,
    authorization_url        text NOT NULL,
    token_url                text NOT NULL,
    revoke_url               text,
    scopes                   text[] NOT NULL DEFAULT '{}',
    scope_separator          text NOT NULL DEFAULT ' ',
    client_auth              text NOT NULL DEFAULT 'body'
                             CHECK (client_auth IN ('body', 'basic', 'query', 'auto')),
    client_auth_detected     text CHECK (client_auth_detected IN ('body', 'basic', 'query')),
    authorize_params         jsonb NOT NULL DEFAULT '{}',
    token_params             jsonb NOT NULL DEFAULT '{}',
    pkce                     boolean NOT NULL DEFAULT true,
    refresh_margin           integer NOT NULL DEFAULT 300 CHECK (refresh_margin >= 0),
    default_token_lifetime   integer CHECK (default_token_lifetime > 0),
    refresh_token_lifetime   integer CHECK (refresh_token_lifetime > 0),
    probe_url                text,
    probe_interval           integer CHECK (probe_interval > 0),
    preset                   text,
    paused_at                timestamptz,
    paused_problem           text,
    deleting                 boolean NOT NULL DEFAULT false,
    -- Imported without its secret: no authorization can start until one is set.
    awaiting_secret          boolean NOT NULL DEFAULT false,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE basic_credentials (
    name        text PRIMARY KEY,
    login       text NOT NULL,
    password    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE connections (
    id                        text PRIMARY KEY,
    app_id                    uuid NOT NULL REFERENCES apps (id),
    status                    text NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'active', 'failed', 'expired', 'revoking', 'revoked')),
    problem                   text,
    problem_detail            text,
    access_token              bytea,
    refresh_token             bytea,
    token_type                text,
    extra                     bytea,
    expires_at                timestamptz,
    refresh_at                timestamptz,
    refresh_token_expires_at  timestamptz,
    requested_scopes          text[] NOT NULL DEFAULT '{}',
    granted_scopes            text[],
    metadata                  jsonb NOT NULL DEFAULT '{}',
    version                   bigint NOT NULL DEFAULT 0,
    lease_holder              text,
    lease_until               timestamptz,
    failed_attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at           timestamptz,
    last_error                jsonb,
    last_refresh_at           timestamptz,
    last_report               jsonb,
    last_probe_at             timestamptz,
    authorized_at             timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX connections_app ON connections (app_id, id);
CREATE INDEX connections_status ON connections (status, id);
-- The scheduler's query: due active connections in refresh_at order. Partial, so idle
-- non-active rows cost nothing and its size follows the active set only.
CREATE INDEX connections_refresh_due ON connections (refresh_at)
    WHERE status = 'active' AND refresh_at IS NOT NULL;

CREATE TABLE authorizations (
    id                uuid PRIMARY KEY,
    state_hash        bytea NOT NULL UNIQUE,
    app_id            uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    connection_id     text NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    code_verifier     bytea,
    requested_scopes  text[] NOT NULL DEFAULT '{}',
    redirect_uri      text NOT NULL,
    expires_at        timestamptz NOT NULL,
    code              bytea,
    code_received_at  timestamptz,
    enqueued_at       timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    done              boolean NOT NULL DEFAULT false,
    outcome           text,
    problem           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    done_at           timestamptz
);

CREATE INDEX authorizations_connection ON authorizations (connection_id);
-- The sweep: codes received whose exchange has not finished.
CREATE INDEX authorizations_pending_code ON authorizations (code_received_at)
    WHERE code IS NOT NULL AND NOT done;

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    relayed_at   timestamptz
);

CREATE INDEX outbox_unrelayed ON outbox (id) WHERE relayed_at IS NULL;
-- A connection's recent history (diagnosis).
CREATE INDEX outbox_connection ON outbox ((event ->> 'connection_id'), id);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    key_hash      bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
