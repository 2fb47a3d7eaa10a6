-- A connection's token URL: its app's, with the connection's settings filled in, as
-- authbroker/connection_settings.py fills it. Token endpoint health (token_endpoints) is kept per
-- filled URL, so an outage at one tenant's host ({subdomain}.zendesk.com) holds back that
-- tenant's connections only; apps without per-connection settings are unchanged.
CREATE FUNCTION connection_token_url(template text, settings jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    name text;
    value text;
BEGIN
    IF template IS NULL OR settings IS NULL OR settings = '{}'::jsonb THEN
        RETURN template;
    END IF;
    FOR name, value IN SELECT key, s.value FROM jsonb_each_text(settings) AS s LOOP
        template := replace(template, '{' || name || '}', value);
    END LOOP;
    RETURN template;
END
$$;
