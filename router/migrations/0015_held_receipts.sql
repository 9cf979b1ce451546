-- A carrier's receipt that matches no sent part yet (it beat our record of
-- the submit_sm_resp: the part's flush, or another instance's, is still on
-- its way) is kept here, in the transaction that looked for its part, and
-- the carrier is answered once that commits. It used to wait in the memory
-- of the process that took it: a SIGKILL (or a stop) lost it, and its
-- message stayed sent without a final status (CONTRACT §9, §11). Held
-- receipts are tried again about every second by one instance (the owner
-- of shard 0) until they match, or given up after the grace period
-- (router/engine.py RECEIPT_GRACE_SECONDS).

CREATE TABLE held_receipts (
    carrier             text NOT NULL,
    carrier_message_id  text NOT NULL,
    status              text NOT NULL,
    error_code          text,
    at                  timestamptz NOT NULL,
    held_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (carrier, carrier_message_id)
);
CREATE INDEX held_receipts_held_at ON held_receipts (held_at);
