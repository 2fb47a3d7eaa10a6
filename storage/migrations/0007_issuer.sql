-- Mix-up defence (RFC 9207): the issuer an app's authorization server names itself, and
-- whether it promises `iss` on every authorization response. A callback whose `iss` is not the
-- app's issuer came from another server (a mix-up attack) and fails the authorization; with
-- `require_iss`, so does a callback without `iss`.
ALTER TABLE apps ADD COLUMN issuer text;
ALTER TABLE apps ADD COLUMN require_iss boolean NOT NULL DEFAULT false;
