-- Connect links: single-use, expiring URLs (`{public_url}/connect/{token}`) that start a fresh
-- authorization of one connection when a person opens them, so the end user who must
-- authorize again can do it without an API key. The token is stored only as its SHA-256, like
-- an authorization's state: a database leak opens no link. `connection_id` is not a foreign
-- key: a link for a new connection names the id the connection gets when the link is opened.
CREATE TABLE connect_links (
    id                uuid PRIMARY KEY,
    token_hash        bytea NOT NULL UNIQUE,
    app_id            uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    connection_id     text NOT NULL,
    scopes            text[] NOT NULL,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- When it was opened, and the authorization that started: a link works once.
    used_at           timestamptz,
    authorization_id  uuid
);

-- Forgetting links a while after they expired.
CREATE INDEX connect_links_expires ON connect_links (expires_at);

-- The app puts a fresh connect link (`reconnect_url`) in the events whose remedy is to
-- authorize again.
ALTER TABLE apps ADD COLUMN reconnect_links boolean NOT NULL DEFAULT false;
