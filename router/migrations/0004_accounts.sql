-- Accounts as rows (CONTRACT §6, §8): what an operator may change at run
-- time lives here, cached in every router process and refreshed on
-- NOTIFY smsrouter_directory. Accounts of the config file are written here
-- at start and on SIGHUP; `managed_fields` names the fields the file sets
-- (NULL: an account the operator API created), which the API refuses to
-- change (409 managed_by_config).

ALTER TABLE accounts
    ADD COLUMN initial_credit     numeric,
    ADD COLUMN credit_limit       numeric NOT NULL DEFAULT 0,
    ADD COLUMN verified           boolean NOT NULL DEFAULT true,
    ADD COLUMN locked             boolean NOT NULL DEFAULT false,
    ADD COLUMN lock_reason        text NOT NULL DEFAULT '',
    ADD COLUMN callback_url       text NOT NULL DEFAULT '',
    ADD COLUMN webhook_secret     text NOT NULL DEFAULT '',
    ADD COLUMN inbound_url        text NOT NULL DEFAULT '',
    ADD COLUMN alert_url          text NOT NULL DEFAULT '',
    ADD COLUMN allowed_ips        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN max_tps            double precision NOT NULL DEFAULT 0,
    ADD COLUMN daily_alarm        integer NOT NULL DEFAULT 0,
    ADD COLUMN daily_limit        integer NOT NULL DEFAULT 0,
    ADD COLUMN price_plan         text NOT NULL DEFAULT '',
    ADD COLUMN timezone           text NOT NULL DEFAULT 'UTC',
    ADD COLUMN stop_reply         text NOT NULL DEFAULT '',
    ADD COLUMN start_reply        text NOT NULL DEFAULT '',
    ADD COLUMN help_reply         text NOT NULL DEFAULT '',
    ADD COLUMN templates_required boolean NOT NULL DEFAULT false,
    ADD COLUMN allowed_countries  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN managed_fields     text[],
    ADD COLUMN created_at         timestamptz NOT NULL DEFAULT now();

-- balance = initial_credit + sum(ledger.amount), exactly (CONTRACT §6).
-- No ledger existed before this migration: what an account holds is its
-- initial credit.
UPDATE accounts SET initial_credit = credit;
ALTER TABLE accounts ALTER COLUMN initial_credit SET NOT NULL;

-- API keys are high-entropy random strings: a SHA-256 digest is enough to
-- keep them unreadable at rest, and a look-up by digest is one index probe.
CREATE TABLE api_keys (
    key_id             text PRIMARY KEY,
    account_id         text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name               text NOT NULL,
    digest             bytea NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz,
    expires_at         timestamptz,
    revoked_at         timestamptz,
    managed_by_config  boolean NOT NULL DEFAULT false
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);

-- SMPP passwords are low-entropy (8 characters, SMPP 3.4 §5.2.2): stored
-- with scrypt, a slow salted hash, as "scrypt$n$r$p$salt$hash".
CREATE TABLE smpp_credentials (
    account_id         text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    system_id          text NOT NULL UNIQUE,
    password_hash      text NOT NULL,
    max_binds          integer NOT NULL DEFAULT 1,
    allowed_ips        text[] NOT NULL DEFAULT '{}',
    managed_by_config  boolean NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE numbers (
    number             text PRIMARY KEY,             -- E.164 with '+', or a short code / alphanumeric
    account_id         text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type               text NOT NULL,                -- long_code | toll_free | short_code | alphanumeric
    rate               double precision,             -- parts/s override
    managed_by_config  boolean NOT NULL DEFAULT false
);

CREATE TABLE sender_ids (
    account_id         text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender_id          text NOT NULL,
    countries          text[] NOT NULL,              -- ISO 3166 alpha-2
    managed_by_config  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (account_id, sender_id)
);

-- Every change of a balance (CONTRACT §6 "Credit"). A reserve row covers
-- the messages one group commit stored for one account (`messages` of
-- them, the first being `message_id`): one balance update per account per
-- commit, not per message. A refund names its message.
CREATE TABLE ledger (
    id          bigserial PRIMARY KEY,
    account_id  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,                       -- reserve | refund | top_up | adjustment
    amount      numeric NOT NULL,                    -- signed: a reserve is negative
    balance     numeric NOT NULL,                    -- the account's credit after this row
    message_id  uuid,
    messages    integer NOT NULL DEFAULT 0,
    reference   text,
    actor       text                                 -- the operator token's name
);
CREATE INDEX ledger_account ON ledger (account_id, id DESC);

-- Every change made through the operator API (CONTRACT §8).
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,                           -- the operator token's name
    action  text NOT NULL,                           -- e.g. account.patch, api_key.revoke
    target  text NOT NULL,
    before  jsonb,
    after   jsonb
);
