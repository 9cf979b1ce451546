-- CONTRACT §6 "Opt-out": who may no longer be sent to, per account. A
-- subscriber's STOP (`source` 'subscriber') is lifted only by the
-- subscriber's START; an entry the account added ('account', PUT
-- /v1/opt-outs) only by the account; an operator's import ('import') by
-- the operator. Every router process holds the whole list in memory
-- (router/opt_outs.py) and follows changes by NOTIFY smsrouter_opt_outs.
CREATE TABLE opt_outs (
    account_id  text NOT NULL,
    recipient   text NOT NULL,                  -- E.164 with '+'
    source      text NOT NULL,                  -- subscriber | account | import
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, recipient)
);
