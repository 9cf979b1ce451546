-- An Idempotency-Key is one row in its day's partition of idempotency_keys,
-- no longer two (migration 0012 carried every key into the next day's
-- partition too, so that one day's unique index held every key of the last
-- 24 h). That second row was a tenth of what PostgreSQL wrote for a keyed
-- message and 7 % of its CPU (bench/RESULTS.md, issue 17's budget).
--
-- A key's repeat is now refused by two checks together:
--   - today's partition's unique index, for keys taken today;
--   - a probe of yesterday's partition, for keys taken there in the last
--     24 h, which raises the same unique_violation (23505, constraint
--     idempotency_keys_pYYYYMMDD_pkey) that the index would, so that the
--     writer takes the same careful path (router/store/writes.py).
-- The probe cannot see a key whose commit is still running. A key taken
-- in the last hour of its UTC day is therefore still carried into the next
-- day's partition, where tomorrow's insert of it waits on the unique index
-- for that commit. An ingest commit lasts milliseconds and its statements
-- at most the pool's command_timeout (60 s): only a server that holds a
-- commit of yesterday for more than the hour across midnight (a hang the
-- client's cancel cannot end) could let a repeat through.

-- Whether a key taken at `at` is carried into the next day's partition.
CREATE FUNCTION idempotency_key_carried(at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (at AT TIME ZONE 'UTC') >= (at AT TIME ZONE 'UTC')::date + time '23:00'
$$;

CREATE OR REPLACE FUNCTION reserve_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    whole     record;
    grouped   record;
    alarmed   boolean := false;
    yesterday date;
    taken     text;
BEGIN
    SELECT min(account_id) AS first_account, max(account_id) AS last_account,
           bool_or(idempotency_key IS NOT NULL) AS keyed,
           sum(price) AS amount,
           count(*) FILTER (WHERE ingress <> 'keyword') AS counted, count(*) AS n,
           (SELECT s.id FROM stored s LIMIT 1) AS first_id
        INTO whole FROM stored;
    IF whole.keyed THEN
        -- What yesterday's unique index would say (23505, its constraint's
        -- name), had these keys been written there: the writer then stores
        -- the flush the careful way (router/store/writes.py).
        yesterday := (now() AT TIME ZONE 'UTC')::date - 1;
        SELECT y.key INTO taken
        FROM stored s
        JOIN idempotency_keys y
          ON y.account_id = s.account_id AND y.key = s.idempotency_key AND y.day = yesterday
        WHERE y.created_at >= now() - interval '24 hours'
        LIMIT 1;
        IF FOUND THEN
            RAISE unique_violation
                USING MESSAGE = 'this Idempotency-Key was taken in the last 24 h',
                      CONSTRAINT = 'idempotency_keys_p' || to_char(yesterday, 'YYYYMMDD')
                                   || '_pkey',
                      TABLE = 'idempotency_keys';
        END IF;
        INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, message_id)
            SELECT account_id, idempotency_key, (now() AT TIME ZONE 'UTC')::date,
                   request_hash, answer_status, id
            FROM stored WHERE idempotency_key IS NOT NULL;
        IF idempotency_key_carried(now()) THEN
            INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, message_id)
                SELECT account_id, idempotency_key, (now() AT TIME ZONE 'UTC')::date + 1,
                       request_hash, answer_status, id
                FROM stored WHERE idempotency_key IS NOT NULL;
        END IF;
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
