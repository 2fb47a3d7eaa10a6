-- The connection settings a connect link authorizes with (an app's per-connection values, such
-- as a subdomain); NULL: those of the connection it names.
ALTER TABLE connect_links ADD COLUMN settings jsonb;
