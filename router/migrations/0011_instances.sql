-- CONTRACT §9: several instances on one database. Each live instance has a
-- row it renews; sender queues are split into shards, each owned through
-- a lease row; outbox rows belong to the instance that holds them.

CREATE TABLE instances (
    id           text PRIMARY KEY,
    incarnation  uuid NOT NULL,               -- this run of the instance
    started_at   timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_leases (
    shard        smallint PRIMARY KEY,
    owner        text,                        -- instances.id, NULL when free
    -- The fencing token: raised at every takeover, checked when a part is
    -- recorded as sent.
    epoch        bigint NOT NULL DEFAULT 0,
    expires_at   timestamptz NOT NULL DEFAULT '-infinity',
    -- From when the last owner sent nothing more: its hand-back, or its
    -- lease's expiry. The next owner's buckets start empty at this time.
    quiet_since  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO shard_leases (shard) SELECT generate_series(0, 1023);

-- Who delivers an outbox row: the instance whose writer stored it (each
-- pool connection names its instance), NULL when any instance may take it
-- (its owner died, or it waits for an SMPP receiving bind held elsewhere).
ALTER TABLE outbox ADD COLUMN owner text DEFAULT current_setting('smsrouter.instance', true);
CREATE INDEX outbox_unowned ON outbox (account_id) WHERE done_at IS NULL AND owner IS NULL;
UPDATE outbox SET owner = NULL WHERE done_at IS NULL;
