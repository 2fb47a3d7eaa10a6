-- Least privilege for API keys: each key has a role (authbroker/roles.py) and, for runtime
-- keys, the apps it is limited to; every read of credentials is counted per key and subject.

-- Every key made before roles existed could do everything: it stays an admin key. New keys
-- always name their role (no default).
ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'operator', 'runtime'));
ALTER TABLE api_keys ALTER COLUMN role DROP DEFAULT;
-- The app (and Basic credential) names a limited key reaches; NULL: every one.
ALTER TABLE api_keys ADD COLUMN apps text[];

-- The credential audit: how often each key read each connection's token or Basic credential,
-- per day. Upserted in batches by each web process (services/audit.py), so `count` may lag
-- the truth by a few seconds, never the other way.
CREATE TABLE credential_reads (
    key_id    text NOT NULL REFERENCES api_keys (id),
    kind      text NOT NULL CHECK (kind IN ('connection', 'basic')),
    subject   text NOT NULL,
    day       date NOT NULL,
    count     bigint NOT NULL,
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL,
    PRIMARY KEY (key_id, kind, subject, day)
);

-- Who read this connection's token (the primary key serves "what did this key read").
CREATE INDEX credential_reads_subject ON credential_reads (kind, subject, day);
