-- CONTRACT §3: during a webhook secret rotation an account holds a second
-- secret; callbacks are signed with both until the first is dropped.
ALTER TABLE accounts ADD COLUMN webhook_secret_next text NOT NULL DEFAULT '';
