-- The insert's trigger (0005, 0006) in fewer statements: most inserts
-- carry one account's messages, so the row locks in one order are taken
-- only when there are several, and the debit, its ledger row and the
-- floor check are one statement. Each statement of a trigger costs
-- PostgreSQL its own execution per insert, and the writer inserts a flush
-- of messages at a time, hundreds of times a second.

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted   integer;
    charged  integer;
    short    text;
BEGIN
    IF EXISTS (SELECT 1 FROM stored WHERE idempotency_key IS NOT NULL) THEN
        INSERT INTO idempotency_keys (account_id, key, request_hash, status, message_id)
            SELECT account_id, idempotency_key, request_hash, answer_status, id
            FROM stored WHERE idempotency_key IS NOT NULL;
    END IF;
    SELECT count(DISTINCT account_id) INTO wanted FROM stored WHERE price > 0;
    IF wanted = 0 THEN
        RETURN NULL;
    ELSIF wanted > 1 THEN
        -- Row locks in one order (by id): two inserts that each charge two
        -- accounts cannot take them in opposite orders and deadlock.
        PERFORM 1 FROM accounts
            WHERE id IN (SELECT account_id FROM stored WHERE price > 0)
            ORDER BY id FOR UPDATE;
    END IF;
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
        RETURNING account_id
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
