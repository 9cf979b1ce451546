-- Messages, their carrier submissions, their history, and the outbox of
-- everything that leaves the router (receipts, webhooks, MO forwards).

CREATE TABLE accounts (
    id          text PRIMARY KEY,
    credit      numeric NOT NULL,
    currency    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    id            uuid PRIMARY KEY,
    account_id    text NOT NULL,
    ingress       text NOT NULL,                -- 'http' | 'smpp'
    sender        text NOT NULL,
    recipient     text NOT NULL,                -- E.164 with '+'
    body          text NOT NULL,
    encoding      text NOT NULL,                -- 'gsm7' | 'ucs2' | 'latin1' | 'binary'
    data_coding   smallint NOT NULL,
    udh           bytea,                        -- SMPP ingress: the ESME's own UDH, forwarded as is
    parts         smallint NOT NULL,
    parts_sent    smallint NOT NULL DEFAULT 0,
    price         numeric NOT NULL,
    client_ref    text,
    callback_url  text,
    registered_delivery smallint NOT NULL DEFAULT 0, -- SMPP 3.4 §5.2.17, receipts to the ESME
    status        text NOT NULL,
    error_code    text,
    carrier       text,
    created_at    timestamptz NOT NULL,
    sent_at       timestamptz,
    done_at       timestamptz,
    valid_until   timestamptz,
    send_at       timestamptz                   -- scheduled send: not before
);

-- Work to resume after a restart: everything not yet handed to a carrier.
CREATE INDEX messages_pending ON messages (created_at) WHERE status IN ('accepted', 'queued');

CREATE TABLE carrier_submits (
    carrier             text NOT NULL,
    carrier_message_id  text NOT NULL,
    message_id          uuid NOT NULL REFERENCES messages (id),
    part                smallint NOT NULL,
    status              text NOT NULL DEFAULT 'sent',
    error_code          text,
    submitted_at        timestamptz NOT NULL,
    done_at             timestamptz,
    -- A message sent whole in message_payload has one carrier id for all
    -- its parts: one row per part, so "every part has its receipt" holds.
    PRIMARY KEY (carrier, carrier_message_id, part)
);
CREATE INDEX carrier_submits_message ON carrier_submits (message_id);

CREATE TABLE message_events (
    message_id  uuid NOT NULL,
    at          timestamptz NOT NULL,
    status      text NOT NULL,
    detail      text
);
CREATE INDEX message_events_message ON message_events (message_id, at);

CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,              -- 'webhook' | 'smpp_receipt'
    account_id       text NOT NULL,
    message_id       uuid,
    target           text,                       -- webhook URL
    payload          bytea NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz
);
CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE done_at IS NULL;
