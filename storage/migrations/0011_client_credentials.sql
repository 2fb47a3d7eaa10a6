-- Service connections: tokens obtained with the client credentials grant (RFC 6749 §4.4), for
-- no user and without a refresh token. The refresh engine requests each next token before the
-- current one expires, as it refreshes other connections.
ALTER TABLE connections ADD COLUMN grant_type text NOT NULL DEFAULT 'authorization_code'
    CHECK (grant_type IN ('authorization_code', 'client_credentials'));
-- The connection's own token request parameters (audience, RFC 8707 resource, ...): not secret.
ALTER TABLE connections ADD COLUMN token_params jsonb;
-- A start asked for a new grant: the next token answer ends it (connection.authorized) and a
-- refusal fails it (connection.authorization_failed), rather than counting as a refresh.
ALTER TABLE connections ADD COLUMN authorization_pending boolean NOT NULL DEFAULT false;

-- An app used only for service connections has no authorization endpoint.
ALTER TABLE apps ALTER COLUMN authorization_url DROP NOT NULL;

-- A pending service connection is due for its first token like an active one for its next.
-- (Pending authorization-code connections never have a refresh_at.)
DROP INDEX connections_refresh_due;
CREATE INDEX connections_refresh_due ON connections (refresh_at)
    WHERE status IN ('active', 'pending') AND refresh_at IS NOT NULL;
