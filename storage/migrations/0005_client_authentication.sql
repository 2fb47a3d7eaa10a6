-- Client authentication with JWTs (RFC 7523 §2.2) and JSON token requests.

-- private_key_jwt and client_secret_jwt join the placements of id and secret.
ALTER TABLE apps DROP CONSTRAINT apps_client_auth_check;
ALTER TABLE apps ADD CONSTRAINT apps_client_auth_check CHECK (client_auth IN
    ('body', 'basic', 'query', 'auto', 'private_key_jwt', 'client_secret_jwt'));

ALTER TABLE apps
    -- The app's private keys, sealed like every secret: a JSON list of {kid, alg, pem,
    -- created_at}, the signing key first, then at most one previous key (tried after it, like
    -- a previous secret, while the provider still knows only the old one).
    ADD COLUMN client_keys bytea,
    -- Their public halves as a JWK Set: what operators register and what /oauth/jwks/{name}
    -- serves (when jwks_public), readable without opening any secret.
    ADD COLUMN jwks jsonb NOT NULL DEFAULT '{"keys": []}',
    ADD COLUMN jwks_public boolean NOT NULL DEFAULT false,
    -- The `aud` of client assertions; NULL: the token URL.
    ADD COLUMN client_assertion_audience text,
    ADD COLUMN token_request_format text NOT NULL DEFAULT 'form'
        CHECK (token_request_format IN ('form', 'json'));
