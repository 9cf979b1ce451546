-- Idempotency-Keys taken by the insert that stores their messages
-- (CONTRACT §3): the first message of a request with a key carries the
-- key, its request's hash and the answer, and the statement trigger of
-- 0005 takes the key from it. A flush of requests with keys is then one
-- COPY, as one without (a transaction of its own cost four round trips a
-- flush). The answer is kept once, on that message; a key already in the
-- table fails the insert (unique_violation), and the writer stores the
-- flush again taking its keys one by one (router/store/writes.py), the
-- answers then kept on the keys' rows.

ALTER TABLE messages
    ADD COLUMN idempotency_key  text,
    ADD COLUMN request_hash     bytea,
    ADD COLUMN answer_status    smallint,
    ADD COLUMN answer_body      bytea;

ALTER TABLE idempotency_keys
    ADD COLUMN message_id  uuid,                    -- the message that keeps the answer
    ALTER COLUMN body DROP NOT NULL;

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    charged  integer;
    wanted   integer;
    short    text;
BEGIN
    INSERT INTO idempotency_keys (account_id, key, request_hash, status, message_id)
        SELECT account_id, idempotency_key, request_hash, answer_status, id
        FROM stored WHERE idempotency_key IS NOT NULL;
    SELECT count(DISTINCT account_id) INTO wanted FROM stored WHERE price > 0;
    IF wanted = 0 THEN
        RETURN NULL;
    END IF;
    -- Row locks in one order (by id): two inserts that each charge two
    -- accounts cannot take them in opposite orders and deadlock.
    PERFORM 1 FROM accounts
        WHERE id IN (SELECT account_id FROM stored WHERE price > 0)
        ORDER BY id FOR UPDATE;
    WITH d AS (
        SELECT account_id, sum(price) AS amount, count(*) AS n,
               (array_agg(id))[1] AS first_id
        FROM stored WHERE price > 0 GROUP BY account_id
    ), u AS (
        UPDATE accounts a SET credit = a.credit - d.amount
        FROM d WHERE a.id = d.account_id
        RETURNING a.id, a.credit, a.credit_limit
    ), l AS (
        INSERT INTO ledger (account_id, at, kind, amount, balance, message_id, messages)
        SELECT u.id, now(), 'reserve', -d.amount, u.credit, d.first_id, d.n
        FROM u JOIN d ON d.account_id = u.id
        RETURNING account_id, balance
    )
    SELECT count(*), min(u.id) FILTER (WHERE u.credit < -u.credit_limit)
        INTO charged, short
        FROM u;
    IF charged < wanted OR short IS NOT NULL THEN
        RAISE EXCEPTION 'the balance of account % cannot pay for this insert',
            coalesce(short, '(no balance row)')
            USING ERRCODE = 'SR001';
    END IF;
    RETURN NULL;
END
$$;
