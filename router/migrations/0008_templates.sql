-- CONTRACT §6 "Templates", §8: texts with {name} placeholders an account
-- creates (POST /v1/templates, 'pending') and an operator approves or
-- rejects with a reason. Only approved ones may be sent by id, and an
-- account with templates_required sends nothing else. Every router process
-- holds each account's approved templates (router/accounts.py), loaded
-- with the directory and reloaded on NOTIFY smsrouter_directory.
CREATE TABLE templates (
    id          text PRIMARY KEY,                   -- 'tpl_' + 16 hex digits
    account_id  text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        text NOT NULL,
    text        text NOT NULL,
    kind        text,                               -- transactional | promotional | NULL
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'approved', 'rejected')),
    reason      text NOT NULL DEFAULT '',           -- why it was rejected
    created_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz,
    decided_by  text,                               -- the operator token's name
    UNIQUE (account_id, name)
);

-- The operator's queue (GET /admin/v1/templates?status=pending) and the
-- directory's load of the approved ones.
CREATE INDEX templates_status ON templates (status, id);
