-- What the provider's redirect carried besides the code that runtimes need later (parameters
-- presets name, such as QuickBooks' realmId): merged into the connection's provider data when
-- the code is exchanged. Not secret.
ALTER TABLE authorizations ADD COLUMN callback_data jsonb;

-- Reports of a bare 401 (no `invalid_token`, no probe to confirm it) for a connection without a
-- refresh token: evidence, counted within an hour, that its long-lived token died at the provider.
ALTER TABLE connections ADD COLUMN unconfirmed_401s integer NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN unconfirmed_401s_since timestamptz;

-- How many such reports within an hour confirm it (per app).
ALTER TABLE apps ADD COLUMN reports_to_invalidate integer NOT NULL DEFAULT 3
    CHECK (reports_to_invalidate BETWEEN 1 AND 100);
