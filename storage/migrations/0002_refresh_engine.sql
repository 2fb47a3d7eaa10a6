-- The refresh engine: the health of each token endpoint, shared by every worker, and what a
-- connection's next refresh must know about the last one.

-- One row per token URL that has failed at least once. While `available` is false, refreshes
-- for its apps are held back and one connection at a time probes it (`next_probe_at`).
CREATE TABLE token_endpoints (
    url                text PRIMARY KEY,
    available          boolean NOT NULL DEFAULT true,
    -- Transient failures in a row across all connections (timeouts, 5xx, 429); a success, or
    -- a minute without failures, starts the count again.
    failures           integer NOT NULL DEFAULT 0,
    last_failure_at    timestamptz,
    last_error         jsonb,
    unavailable_since  timestamptz,
    probes             integer NOT NULL DEFAULT 0,
    next_probe_at      timestamptz,
    retry_after_until  timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Set when a refresh with the stored refresh token reached the provider and its answer never
-- arrived (a timeout, a dropped connection, a worker that died mid-refresh): the provider may
-- have rotated the token. Cleared when new tokens are stored. A refusal of the token while
-- set is `rotation_lost`, not a revoked grant.
ALTER TABLE connections ADD COLUMN answer_lost_at timestamptz;

-- Connections whose refreshes are backing off, by app: what a recovered endpoint pulls forward.
CREATE INDEX connections_retrying ON connections (app_id)
    WHERE failed_attempts > 0 AND status = 'active';
