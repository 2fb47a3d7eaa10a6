-- Webhooks: subscriptions that receive the outbox's events over HTTPS, signed per Standard
-- Webhooks; one delivery per event and subscription, retried until it is taken or the
-- subscription gives up; every attempt recorded.

CREATE TABLE webhooks (
    id                          uuid PRIMARY KEY,
    url                         text NOT NULL,
    description                 text,
    -- Event types, or prefixes ending in '.' (`connection.`); NULL: every type.
    types                       text[],
    -- App names; NULL: every app (and events about no app).
    apps                        text[],
    -- Sealed `whsec_…`. While a rotation's window is open the previous secret signs too.
    secret                      bytea NOT NULL,
    previous_secret             bytea,
    previous_secret_expires_at  timestamptz,
    enabled                     boolean NOT NULL DEFAULT true,
    disabled_reason             text CHECK (disabled_reason IN ('operator', 'gone', 'failing')),
    disabled_at                 timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- One event for one subscription. The event itself stays in the outbox (pruned after a week,
-- and its deliveries with it).
CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    outbox_id        bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    -- Deliveries with the same key go out one at a time in outbox order: `connection:<id>`,
    -- else `app:<name>`; NULL (an event about no app) is not ordered.
    order_key        text,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed', 'abandoned')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A worker is sending it until then; after that another may (at least once).
    claimed_until    timestamptz,
    -- The first failed attempt of the current run: retries go on for a day from here.
    first_failed_at  timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, outbox_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE state = 'pending';
-- What an earlier pending delivery of the same key holds back.
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, order_key, outbox_id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_outbox ON webhook_deliveries (outbox_id);

CREATE TABLE webhook_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    webhook_id       uuid NOT NULL,
    attempt          integer NOT NULL,
    attempted_at     timestamptz NOT NULL DEFAULT now(),
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    status_code      integer,
    latency_ms       double precision,
    error            text,
    next_attempt_at  timestamptz
);

CREATE INDEX webhook_attempts_webhook ON webhook_attempts (webhook_id, id);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);

-- Events not yet turned into deliveries. Rows already there count as done (a constant default
-- is stored once, not written to every row); new rows start undone.
ALTER TABLE outbox ADD COLUMN fanned_out boolean NOT NULL DEFAULT true;
ALTER TABLE outbox ALTER COLUMN fanned_out SET DEFAULT false;
CREATE INDEX outbox_fan_out ON outbox (id) WHERE NOT fanned_out;
