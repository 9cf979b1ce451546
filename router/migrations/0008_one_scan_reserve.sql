-- The insert's trigger (0005-0007) reads what it needs of the inserted
-- rows in one scan: whether any carries an Idempotency-Key, and whether
-- one account or several are charged (min = max), instead of a count of
-- distinct accounts (a sort) and a second look for keys.

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_account  text;
    last_account   text;
    keyed          boolean;
    wanted         integer;
    charged        integer;
    short          text;
BEGIN
    SELECT min(account_id) FILTER (WHERE price > 0),
           max(account_id) FILTER (WHERE price > 0),
           bool_or(idempotency_key IS NOT NULL)
        INTO first_account, last_account, keyed
        FROM stored;
    IF keyed THEN
        INSERT INTO idempotency_keys (account_id, key, request_hash, status, message_id)
            SELECT account_id, idempotency_key, request_hash, answer_status, id
            FROM stored WHERE idempotency_key IS NOT NULL;
    END IF;
    IF first_account IS NULL THEN
        RETURN NULL;
    END IF;
    wanted := 1;
    IF first_account <> last_account THEN
        -- Row locks in one order (by id): two inserts that each charge two
        -- accounts cannot take them in opposite orders and deadlock.
        PERFORM 1 FROM accounts
            WHERE id IN (SELECT account_id FROM stored WHERE price > 0)
            ORDER BY id FOR UPDATE;
        SELECT count(DISTINCT account_id) INTO wanted FROM stored WHERE price > 0;
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
