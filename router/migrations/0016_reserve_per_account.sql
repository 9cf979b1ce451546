-- The insert's statement trigger (migrations 0005, 0012, 0014), the same
-- rules in fewer steps. Its one statement for every account (the stored
-- rows grouped by account in a hash table, the accounts updated from the
-- groups, the ledger and alarm rows inserted from what the update
-- returned, the checks aggregated over it) cost PostgreSQL a fixed
-- ~0.25 ms of CPU per insert, more than storing a flush of 16 messages did
-- (bench/RESULTS.md, issue 17's budget). Nearly every insert is one
-- account's: its sums now come from the pass over the stored rows that the
-- trigger makes anyway, and its row is updated, charged and checked by a
-- plain UPDATE ... RETURNING, a ledger row inserted from values, the
-- alarm's row only when the insert crossed the account's daily_alarm.
-- An insert of several accounts takes them one after the other, by id, so
-- that two such inserts lock their rows in one order. Same SQLSTATEs
-- (SR001 credit, SR002 daily limit, SR003 max_tps), same rows written.

-- One account's share of an insert: `amount` to debit, `counted` messages
-- to count against its day and bucket (the router's own replies to STOP,
-- START and HELP are not), `n` messages, `first_id` the first of them for
-- the ledger row. Raises if the balance, the day or the bucket cannot take
-- it; true if it took the account's count to its daily_alarm, whose signed
-- POST (CONTRACT §6) it has queued as an outbox row no instance holds yet.
CREATE FUNCTION reserve_account(account text, amount numeric, counted bigint, n bigint,
                                first_id uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    a record;
BEGIN
    -- The SET expressions read the row as it was; RETURNING gives it as it
    -- is now. Accounts without a price or a rule are not written.
    UPDATE accounts SET
        credit = credit - amount,
        counted_day = CASE WHEN daily_limit > 0 OR daily_alarm > 0
                           THEN (now() AT TIME ZONE timezone)::date
                           ELSE counted_day END,
        day_count = CASE WHEN daily_limit = 0 AND daily_alarm = 0 THEN day_count
                         WHEN counted_day = (now() AT TIME ZONE timezone)::date
                         THEN day_count + counted
                         ELSE counted END,
        rate_due = CASE WHEN max_tps > 0
                        THEN greatest(rate_due, now()) + (counted / max_tps) * interval '1 second'
                        ELSE rate_due END
    WHERE id = account AND (amount > 0 OR daily_limit > 0 OR daily_alarm > 0 OR max_tps > 0)
    RETURNING credit, credit_limit, daily_limit, daily_alarm, alert_url, counted_day, day_count,
              max_tps, rate_due
    INTO a;
    IF NOT FOUND THEN
        IF amount > 0 THEN
            RAISE EXCEPTION 'the balance of account % cannot pay for this insert',
                '(no balance row)'
                USING ERRCODE = 'SR001';
        END IF;
        RETURN false;
    END IF;
    IF amount > 0 THEN
        IF a.credit < -a.credit_limit THEN
            RAISE EXCEPTION 'the balance of account % cannot pay for this insert', account
                USING ERRCODE = 'SR001';
        END IF;
        INSERT INTO ledger (account_id, at, kind, amount, balance, message_id, messages)
            VALUES (account, now(), 'reserve', -amount, a.credit, first_id, n);
    END IF;
    IF a.daily_limit > 0 AND a.day_count > a.daily_limit THEN
        RAISE EXCEPTION 'this insert would take account % past its daily limit', account
            USING ERRCODE = 'SR002';
    END IF;
    IF a.max_tps > 0 AND a.rate_due > now()
            + (greatest(1.0, 1.0 / a.max_tps) + 0.25) * interval '1 second' THEN
        RAISE EXCEPTION 'this insert would take account % over its max_tps', account
            USING ERRCODE = 'SR003';
    END IF;
    IF NOT (a.daily_alarm > 0 AND a.day_count >= a.daily_alarm
            AND a.day_count - counted < a.daily_alarm) THEN
        RETURN false;
    END IF;
    IF a.alert_url <> '' THEN
        -- The POST of CONTRACT §6, signed and retried like a receipt's.
        INSERT INTO outbox (kind, account_id, target, payload, next_attempt_at, expires_at, owner)
        VALUES ('webhook', account, a.alert_url,
                convert_to(format('{"account":%s,"kind":"daily_alarm","count":%s,"day":"%s"}',
                                  to_json(account), a.day_count, a.counted_day), 'UTF8'),
                now(),
                now() + coalesce(nullif(current_setting('smsrouter.webhook_retry_hours', true), '')
                                 ::float8, 72) * interval '1 hour',
                NULL);
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    whole    record;
    grouped  record;
    alarmed  boolean := false;
BEGIN
    SELECT min(account_id) AS first_account, max(account_id) AS last_account,
           bool_or(idempotency_key IS NOT NULL) AS keyed, sum(price) AS amount,
           count(*) FILTER (WHERE ingress <> 'keyword') AS counted, count(*) AS n,
           (SELECT s.id FROM stored s LIMIT 1) AS first_id
        INTO whole FROM stored;
    IF whole.keyed THEN
        INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, message_id)
            SELECT account_id, idempotency_key, (now() AT TIME ZONE 'UTC')::date + n,
                   request_hash, answer_status, id
            FROM stored, (VALUES (0), (1)) AS carried(n)
            WHERE idempotency_key IS NOT NULL;
    END IF;
    IF whole.first_account IS NULL THEN
        RETURN NULL;
    ELSIF whole.first_account = whole.last_account THEN
        alarmed := reserve_account(whole.first_account, whole.amount, whole.counted, whole.n,
                                   whole.first_id);
    ELSE
        FOR grouped IN
            SELECT account_id, sum(price) AS amount,
                   count(*) FILTER (WHERE ingress <> 'keyword') AS counted, count(*) AS n,
                   (array_agg(id))[1] AS first_id
            FROM stored GROUP BY account_id ORDER BY account_id
        LOOP
            alarmed := reserve_account(grouped.account_id, grouped.amount, grouped.counted,
                                       grouped.n, grouped.first_id) OR alarmed;
        END LOOP;
    END IF;
    IF alarmed THEN
        -- Sent at commit: every instance sets its gauge, and one claims the
        -- alert's outbox row at once.
        PERFORM pg_notify('smsrouter_alarm', ''), pg_notify('smsrouter_shards', 'alarm');
    END IF;
    RETURN NULL;
END
$$;
