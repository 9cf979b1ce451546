-- CONTRACT §6 "Credit" and §3 "Idempotency-Key", taken by the insert
-- that stores the messages. A trigger on the statement (not on each row)
-- sums what one insert stores per account and debits each account once,
-- with one ledger row; the first message of a request with a key carries
-- the key, its request's hash and the answer, and the trigger takes the
-- key from it. So the writer's flush stays one COPY in a transaction of
-- its own, keys or not (a transaction of its own cost four round trips a
-- flush), and a message is stored if and only if it is paid for.
--
-- When a balance cannot pay for all of an insert, the whole statement is
-- refused (SQLSTATE SR001); a key already in the table refuses it too
-- (unique_violation). The writer then stores the flush again, paying
-- message by message under the accounts' row locks and taking its keys one
-- by one (router/store/writes.py), the answers then kept on the keys' rows.
-- That second insert never goes below the floor.

ALTER TABLE messages
    ADD COLUMN idempotency_key  text,
    ADD COLUMN request_hash     bytea,
    ADD COLUMN answer_status    smallint,
    ADD COLUMN answer_body      bytea;

ALTER TABLE idempotency_keys
    ADD COLUMN message_id  uuid,                    -- the message that keeps the answer
    ALTER COLUMN body DROP NOT NULL;

CREATE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER messages_reserve_credit
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION reserve_credit();
