-- CONTRACT §6 "Credit": the price of every part is debited in the
-- statement that stores the message. A trigger on the statement (not on
-- each row) sums what one insert stores per account and debits each
-- account once, with one ledger row: the writer's COPY of a flush stays
-- one round trip, its own transaction, and a message is stored if and
-- only if it is paid for. When a balance cannot pay for all of it, the
-- whole statement is refused (SQLSTATE SR001) and the writer stores the
-- flush again, paying message by message under the accounts' row locks
-- (router/store/writes.py); that second insert never goes below the floor.

CREATE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    charged  integer;
    wanted   integer;
    short    text;
BEGIN
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

CREATE TRIGGER messages_reserve_credit
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION reserve_credit();
