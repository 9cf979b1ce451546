-- Idempotency-Key of POST /v1/messages (CONTRACT §3): per account, kept
-- 24 h. Written in the commit that stores the request's messages, so a
-- key is taken if and only if its messages are stored; a repeat answers
-- what the first answered.

CREATE TABLE idempotency_keys (
    account_id    text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,                -- SHA-256 of the request body
    status        smallint NOT NULL,             -- the HTTP status answered
    body          bytea NOT NULL,                -- the JSON body answered
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
