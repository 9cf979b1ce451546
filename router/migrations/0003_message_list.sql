-- GET /v1/messages (CONTRACT §3): an account's messages newest first, read
-- page by page from where the last page ended (created_at, id).

CREATE INDEX messages_by_account ON messages (account_id, created_at DESC, id DESC);
