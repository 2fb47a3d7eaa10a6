-- An app's recent revocations, for its diagnosis: whether the provider confirmed the last ones
-- (`connection.revoked` events carry `revoked_at_provider` and the provider's answer). Partial,
-- so the outbox's other events cost nothing more to write.
CREATE INDEX outbox_revocations ON outbox ((event ->> 'app'), id)
    WHERE event ->> 'type' = 'connection.revoked';
