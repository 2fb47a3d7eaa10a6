-- A fixed client_auth placement (body, basic, query) the provider refused while another one
-- worked: the placement that worked and when that was first seen. The setting itself is never
-- changed behind the operator's back; changing client_auth clears this.
ALTER TABLE apps ADD COLUMN client_auth_works text
    CHECK (client_auth_works IN ('body', 'basic', 'query'));
ALTER TABLE apps ADD COLUMN client_auth_works_at timestamptz;

-- What the provider answered when it paused the app (error, description, status, and the
-- placements it refused the client credentials in): the evidence the app's diagnosis shows.
ALTER TABLE apps ADD COLUMN paused_error jsonb;
