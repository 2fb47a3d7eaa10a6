-- Per-connection settings (authbroker/connection_settings.py): the placeholders an app's URLs
-- keep for each connection to fill (Zendesk's {subdomain}), and each authorization's and
-- connection's values for them. An authorization carries the values its URLs were filled with;
-- the connection takes them when its grant arrives. Not secret.
ALTER TABLE apps ADD COLUMN connection_settings text[] NOT NULL DEFAULT '{}';
ALTER TABLE authorizations ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
ALTER TABLE connections ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
