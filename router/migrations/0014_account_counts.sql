-- CONTRACT §6 "Daily thresholds", exact on every instance (§9): each
-- process counted the messages it accepted itself, so two instances each
-- let an account's daily_limit through, and each raised its alarm. The
-- count is now kept on the account's row and raised by the insert that
-- stores the messages, in the same statement trigger that debits their
-- price (migration 0005, 0012): the row is locked by that update to the
-- commit, so the inserts of all instances count one after the other.
--
-- * An insert that would take an account past its daily_limit stores
--   nothing (SQLSTATE SR002, as SR001 for credit); the writer stores the
--   flush again message by message under the accounts' row locks, and
--   those past the limit are refused `limit_reached`
--   (router/store/writes.py).
-- * The insert whose messages take the count to daily_alarm raises the
--   alarm, once a day whatever the number of instances: the signed POST to
--   the account's alert_url as an outbox row no instance holds yet (the
--   first to hear `smsrouter_shards` claims it), and NOTIFY
--   smsrouter_alarm, on which every instance sets its gauge.
--
-- The day is the account's (`timezone`) by the database's clock. Only
-- accounts with a threshold are counted; an account that gets one, or a
-- new time zone, is counted from what it stored that day so far. The
-- router's own replies to STOP, START and HELP (ingress 'keyword') are not
-- the account's sending: they are never counted nor refused (CTIA's
-- handset rules want the opt-out confirmed).

-- CONTRACT §6 "Throughput plan", over every instance (§9), the same way:
-- each process kept its own bucket of the account's max_tps, so N
-- instances let N times it through. The same update runs the account's
-- bucket on its row: `rate_due` is the generic cell rate
-- algorithm's theoretical arrival time of the account's next message, and
-- an insert that would put it more than the bucket (1 s, or one message's
-- interval under 1 a second) plus a margin ahead of now stores nothing
-- (SQLSTATE SR003); the writer stores the flush again message by message
-- and those over are refused `throughput_exceeded` (router/store/writes.py).
--
-- The margin (0.25 s) is the commit's lateness: a process admits messages
-- by its own bucket, on its clock, and their flush reaches the database a
-- few milliseconds later, some later than others; without it a message
-- one process found within its bucket could be refused here. So over all
-- instances an account's bursts may reach 1.25 s of its plan, and its
-- sustained rate never passes max_tps. The router's replies to STOP, START
-- and HELP are not counted (as above).

ALTER TABLE accounts
    ADD COLUMN counted_day  date,
    ADD COLUMN day_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_due     timestamptz;

CREATE FUNCTION count_account_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.daily_limit > 0 OR NEW.daily_alarm > 0)
       AND (TG_OP = 'INSERT' OR (OLD.daily_limit = 0 AND OLD.daily_alarm = 0)
            OR NEW.timezone IS DISTINCT FROM OLD.timezone) THEN
        NEW.counted_day := (now() AT TIME ZONE NEW.timezone)::date;
        SELECT count(*) INTO NEW.day_count FROM messages
            WHERE account_id = NEW.id AND ingress <> 'keyword'
              AND created_at >= NEW.counted_day::timestamp AT TIME ZONE NEW.timezone;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER accounts_count_day
    BEFORE INSERT OR UPDATE OF daily_limit, daily_alarm, timezone ON accounts
    FOR EACH ROW EXECUTE FUNCTION count_account_day();

-- Accounts with thresholds today: counted from what they stored today.
UPDATE accounts SET
    counted_day = (now() AT TIME ZONE timezone)::date,
    day_count = (SELECT count(*) FROM messages m
                 WHERE m.account_id = accounts.id AND m.ingress <> 'keyword'
                   AND m.created_at >= ((now() AT TIME ZONE accounts.timezone)::date)::timestamp
                                       AT TIME ZONE accounts.timezone)
WHERE daily_limit > 0 OR daily_alarm > 0;

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_account  text;
    last_account   text;
    keyed          boolean;
    wanted         integer;
    charged        integer;
    short          text;
    over           text;
    fast           text;
    alarmed        integer;
BEGIN
    SELECT min(account_id), max(account_id),
           count(DISTINCT account_id) FILTER (WHERE price > 0),
           bool_or(idempotency_key IS NOT NULL)
        INTO first_account, last_account, wanted, keyed
        FROM stored;
    IF keyed THEN
        INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, message_id)
            SELECT account_id, idempotency_key, (now() AT TIME ZONE 'UTC')::date + n,
                   request_hash, answer_status, id
            FROM stored, (VALUES (0), (1)) AS carried(n)
            WHERE idempotency_key IS NOT NULL;
    END IF;
    IF first_account IS NULL THEN
        RETURN NULL;
    END IF;
    IF first_account <> last_account THEN
        -- Row locks in one order (by id): two inserts that each update two
        -- accounts cannot take them in opposite orders and deadlock.
        PERFORM 1 FROM accounts
            WHERE id IN (SELECT account_id FROM stored)
            ORDER BY id FOR UPDATE;
    END IF;
    -- One update per account: its debit (priced messages), its day's count
    -- (accounts with a threshold) and its bucket (accounts with max_tps).
    -- The SET expressions read the row as it was; RETURNING gives it as it
    -- is now.
    WITH d AS (
        SELECT account_id, sum(price) AS amount,
               count(*) FILTER (WHERE ingress <> 'keyword') AS counted, count(*) AS n,
               (array_agg(id))[1] AS first_id
        FROM stored GROUP BY account_id
    ), u AS (
        UPDATE accounts a SET
            credit = a.credit - d.amount,
            counted_day = CASE WHEN a.daily_limit > 0 OR a.daily_alarm > 0
                               THEN (now() AT TIME ZONE a.timezone)::date
                               ELSE a.counted_day END,
            day_count = CASE WHEN a.daily_limit = 0 AND a.daily_alarm = 0 THEN a.day_count
                             WHEN a.counted_day = (now() AT TIME ZONE a.timezone)::date
                             THEN a.day_count + d.counted
                             ELSE d.counted END,
            rate_due = CASE WHEN a.max_tps > 0
                            THEN greatest(a.rate_due, now())
                                 + (d.counted / a.max_tps) * interval '1 second'
                            ELSE a.rate_due END
        FROM d
        WHERE a.id = d.account_id
          AND (d.amount > 0 OR a.daily_limit > 0 OR a.daily_alarm > 0 OR a.max_tps > 0)
        RETURNING a.id, a.credit, a.credit_limit, a.daily_limit, a.daily_alarm, a.alert_url,
                  a.counted_day, a.day_count, a.max_tps, a.rate_due, d.amount, d.counted, d.n,
                  d.first_id
    ), l AS (
        INSERT INTO ledger (account_id, at, kind, amount, balance, message_id, messages)
        SELECT u.id, now(), 'reserve', -u.amount, u.credit, u.first_id, u.n
        FROM u WHERE u.amount > 0
        RETURNING account_id
    ), crossed AS (
        SELECT u.id, u.alert_url, u.counted_day, u.day_count FROM u
        WHERE u.daily_alarm > 0 AND u.day_count >= u.daily_alarm
          AND u.day_count - u.counted < u.daily_alarm
    ), alert AS (
        -- The POST of CONTRACT §6, signed and retried like a receipt's.
        INSERT INTO outbox (kind, account_id, target, payload, next_attempt_at, expires_at, owner)
        SELECT 'webhook', c.id, c.alert_url,
               convert_to(format('{"account":%s,"kind":"daily_alarm","count":%s,"day":"%s"}',
                                 to_json(c.id), c.day_count, c.counted_day), 'UTF8'),
               now(),
               now() + coalesce(nullif(current_setting('smsrouter.webhook_retry_hours', true), '')
                                ::float8, 72) * interval '1 hour',
               NULL
        FROM crossed c WHERE c.alert_url <> ''
        RETURNING account_id
    )
    SELECT count(*) FILTER (WHERE u.amount > 0),
           min(u.id) FILTER (WHERE u.amount > 0 AND u.credit < -u.credit_limit),
           min(u.id) FILTER (WHERE u.daily_limit > 0 AND u.day_count > u.daily_limit),
           min(u.id) FILTER (WHERE u.max_tps > 0 AND u.rate_due > now()
                             + (greatest(1.0, 1.0 / u.max_tps) + 0.25) * interval '1 second'),
           (SELECT count(*) FROM crossed)
        INTO charged, short, over, fast, alarmed
        FROM u;
    IF charged < wanted OR short IS NOT NULL THEN
        RAISE EXCEPTION 'the balance of account % cannot pay for this insert',
            coalesce(short, '(no balance row)')
            USING ERRCODE = 'SR001';
    END IF;
    IF over IS NOT NULL THEN
        RAISE EXCEPTION 'this insert would take account % past its daily limit', over
            USING ERRCODE = 'SR002';
    END IF;
    IF fast IS NOT NULL THEN
        RAISE EXCEPTION 'this insert would take account % over its max_tps', fast
            USING ERRCODE = 'SR003';
    END IF;
    IF alarmed > 0 THEN
        -- Sent at commit: every instance sets its gauge, and one claims the
        -- alert's outbox row at once.
        PERFORM pg_notify('smsrouter_alarm', ''), pg_notify('smsrouter_shards', 'alarm');
    END IF;
    RETURN NULL;
END
$$;
