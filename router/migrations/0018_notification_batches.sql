-- What a status flush owes the outside, held by one row per flush instead
-- of an outbox row per notification (router/store/notices.py). A flush
-- that ends messages with a callback or a receipt to send writes one row
-- naming each notification (its message, its kind, and the outbox id it
-- keeps for good: the webhook-id of every try, CONTRACT §3); the
-- dispatcher sends them from memory and deletes the row once each was
-- delivered or moved to an outbox row of its own (a first try that did not
-- deliver it). A row still here after a crash, a lost commit answer, a
-- stop or an instance reaped is turned into outbox rows by the statement
-- that plans them from the messages' final rows. An outbox row and its
-- cleanup cost PostgreSQL a quarter of the status flush per message
-- (bench/RESULTS.md, issue 17).
--
-- Rows live for a second or so; the table stays small and is read whole
-- (by owner) only at a start, a takeover and after a database outage.

CREATE TABLE notification_batches (
    id           bigserial PRIMARY KEY,
    owner        text DEFAULT current_setting('smsrouter.instance', true),
    created_at   timestamptz NOT NULL DEFAULT now(),
    retry_hours  float8 NOT NULL,
    message_ids  uuid[] NOT NULL,
    kinds        text[] NOT NULL,
    outbox_ids   int8[] NOT NULL
);
