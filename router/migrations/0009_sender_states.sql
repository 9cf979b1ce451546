-- CONTRACT §6 "Opt-out rate": sender numbers whose opt-out rate passed a
-- threshold. A row exists while the number is flagged or suspended; the
-- process that saw the rate cross writes it (with an audit row and NOTIFY
-- smsrouter_senders), an operator's resume deletes it (audit row, NOTIFY).
-- Every router process holds the rows in memory (router/sender_states.py)
-- and refuses new sends from a suspended number (`sender_suspended`).
CREATE TABLE sender_states (
    number      text PRIMARY KEY,               -- canonical: "+digits" or a short code
    account_id  text NOT NULL,
    state       text NOT NULL CHECK (state IN ('flagged', 'suspended')),
    opt_outs    integer NOT NULL,               -- distinct subscribers who opted out, 24 h
    recipients  integer NOT NULL,               -- distinct subscribers sent to, 24 h (estimated)
    rate        double precision NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),  -- when it entered this state
    decided_by  text NOT NULL                   -- the router instance that saw the rate
);
CREATE INDEX sender_states_state ON sender_states (state, number);
