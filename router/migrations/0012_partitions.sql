-- CONTRACT §10: ended messages, their parts and events, delivered
-- notifications and Idempotency-Keys leave in bulk, a whole day's partition
-- dropped at once, not row by row. Each of these tables becomes partitioned
-- by RANGE, one partition per UTC day named <table>_pYYYYMMDD, and a DEFAULT
-- partition <table>_default that catches any row outside them, so that no
-- insert ever fails for want of a partition (it should stay empty; the
-- daemon logs a warning when it is not). router/retention.py decides which
-- days to make and drop; router/store/partitions.py does it.
--
-- Partition keys, chosen so that the look-ups the router makes prune to
-- one partition:
--   messages          id (UUIDv7: its top 48 bits are the time in ms, a day
--                     is [day start ms << 80, next day ms << 80)); the
--                     primary key on id stays as it was.
--   carrier_submits,  message_id, with the same day ranges: a message's
--   message_events    parts and events live and go with it, and every read
--                     of them by message prunes to that day.
--   outbox            id, now the row's UTC day number << 47 plus the
--                     sequence: look-ups and updates by id prune, and the
--                     writer's "ids come in insertion order" still holds
--                     within a statement (one now(), one day). Rows from
--                     before keep their ids, the day 1970-01-01.
--   idempotency_keys  a new column `day`. A key is written into its day and
--                     carried into the next (two rows, one insert), so the
--                     unique index of any one day holds every key taken in
--                     the 24 h before any moment of that day: partitions
--                     cannot share a unique index, and a key taken at
--                     23:59 must still refuse its repeat at 00:01. Look-ups
--                     read today's partition; the 24 h sweep and the index
--                     on created_at are gone, a dropped partition replaces
--                     the deletes.
--
-- The foreign key carrier_submits.message_id → messages goes: dropping a
-- day of messages would have to check (and lock) every part referring to
-- it, and a part's day is its message's day anyway.
--
-- Existing rows move into the new tables here, in this migration's one
-- transaction. Indexes other than the primary keys are made again from
-- their definitions, after the rows are in (one build per partition).

ALTER TABLE carrier_submits DROP CONSTRAINT IF EXISTS carrier_submits_message_id_fkey;

-- Helpers for this migration only (dropped at its end).

CREATE FUNCTION pg_temp.uuid_floor_of_day(d date) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM d::timestamp) * 1000)::bigint), 12, '0')
            || repeat('0', 20))::uuid
$$;

CREATE FUNCTION pg_temp.day_of_uuid(id uuid) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT (date '1970-01-01'
            + (('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
               / 86400000)::integer)
$$;

-- Turn `tbl` into a table of the same columns partitioned by RANGE on
-- `key_column`, with a partition for each of `days` (whose bounds `bound`
-- spells: 'uuid7', 'outbox_id' or 'day') and a DEFAULT one, and its rows
-- moved in (but for idempotency_keys, whose rows the caller moves).
CREATE FUNCTION pg_temp.partition_table(tbl text, key_column text, bound text, days date[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    d     date;
    low   text;
    high  text;
BEGIN
    EXECUTE format(
        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE'
        ' INCLUDING COMMENTS) PARTITION BY RANGE (%I)',
        tbl || '_partitioned', tbl, key_column);
    FOREACH d IN ARRAY days LOOP
        IF bound = 'uuid7' THEN
            low := quote_literal(pg_temp.uuid_floor_of_day(d));
            high := quote_literal(pg_temp.uuid_floor_of_day(d + 1));
        ELSIF bound = 'outbox_id' THEN
            low := ((d - date '1970-01-01')::bigint << 47)::text;
            high := ((d + 1 - date '1970-01-01')::bigint << 47)::text;
        ELSE
            low := quote_literal(d);
            high := quote_literal(d + 1);
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                       tbl || '_p' || to_char(d, 'YYYYMMDD'), tbl || '_partitioned', low, high);
    END LOOP;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default',
                   tbl || '_partitioned');
    IF tbl <> 'idempotency_keys' THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', tbl || '_partitioned', tbl);
    END IF;
END
$$;

-- Drop `tbl` and put its partitioned copy in its place, with the indexes
-- `tbl` had (their definitions, read before); primary keys are the
-- caller's to add.
CREATE FUNCTION pg_temp.finish_table(tbl text, index_defs text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    index_def text;
BEGIN
    EXECUTE format('DROP TABLE %I', tbl);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl || '_partitioned', tbl);
    FOREACH index_def IN ARRAY index_defs LOOP
        EXECUTE index_def;
    END LOOP;
END
$$;

-- The days to make: today and the next three (as router/retention.py
-- AHEAD_DAYS), and every day that holds rows now. A row whose id is not a
-- UUIDv7 of the last ten years lands in the DEFAULT partition.
CREATE TEMP TABLE wanted_days ON COMMIT DROP AS
    SELECT (now() AT TIME ZONE 'UTC')::date + n AS day FROM generate_series(0, 3) AS n;

CREATE TEMP TABLE message_days ON COMMIT DROP AS
    SELECT DISTINCT pg_temp.day_of_uuid(id) AS day FROM messages
    UNION SELECT DISTINCT pg_temp.day_of_uuid(message_id) FROM carrier_submits
    UNION SELECT DISTINCT pg_temp.day_of_uuid(message_id) FROM message_events
    UNION SELECT day FROM wanted_days;
DELETE FROM message_days
    WHERE day NOT BETWEEN (now() AT TIME ZONE 'UTC')::date - 3650
                      AND (now() AT TIME ZONE 'UTC')::date + 3;

-- Each table's index definitions, read before it is dropped.
CREATE TEMP TABLE saved_indexes ON COMMIT DROP AS
    SELECT c.relname::text AS tbl,
           coalesce(array_agg(pg_get_indexdef(i.indexrelid))
                    FILTER (WHERE i.indexrelid IS NOT NULL), '{}') AS defs
    FROM pg_class c
    LEFT JOIN pg_index i ON i.indrelid = c.oid
        AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        AND i.indexrelid::regclass::text <> 'idempotency_keys_created_at'
    WHERE c.relname IN ('messages', 'carrier_submits', 'message_events', 'outbox',
                        'idempotency_keys')
      AND c.relnamespace = 'public'::regnamespace
    GROUP BY c.relname;

-- messages: the reserve trigger (migration 0005) is made again once the
-- rows are in, so that moving them charges nobody.
SELECT pg_temp.partition_table('messages', 'id', 'uuid7',
                               (SELECT array_agg(day ORDER BY day) FROM message_days));
SELECT pg_temp.finish_table('messages', (SELECT defs FROM saved_indexes WHERE tbl = 'messages'));
ALTER TABLE messages ADD PRIMARY KEY (id);
CREATE TRIGGER messages_reserve_credit
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION reserve_credit();

-- carrier_submits: a primary key must hold the partition key. A carrier id
-- sent again for the same part of the same message is still one row; a
-- carrier that reuses an id for another message makes another row.
SELECT pg_temp.partition_table('carrier_submits', 'message_id', 'uuid7',
                               (SELECT array_agg(day ORDER BY day) FROM message_days));
SELECT pg_temp.finish_table('carrier_submits',
                            (SELECT defs FROM saved_indexes WHERE tbl = 'carrier_submits'));
ALTER TABLE carrier_submits ADD PRIMARY KEY (carrier, carrier_message_id, part, message_id);

SELECT pg_temp.partition_table('message_events', 'message_id', 'uuid7',
                               (SELECT array_agg(day ORDER BY day) FROM message_days));
SELECT pg_temp.finish_table('message_events',
                            (SELECT defs FROM saved_indexes WHERE tbl = 'message_events'));

-- outbox: the sequence outlives the table it belonged to; new ids carry
-- their day (router/retention.py OUTBOX_DAY_SHIFT).
ALTER SEQUENCE outbox_id_seq OWNED BY NONE;
SELECT pg_temp.partition_table(
    'outbox', 'id', 'outbox_id',
    (SELECT array_agg(day ORDER BY day) FROM (
        SELECT DISTINCT date '1970-01-01' + (id >> 47)::integer AS day FROM outbox
        UNION SELECT day FROM wanted_days) AS d));
SELECT pg_temp.finish_table('outbox', (SELECT defs FROM saved_indexes WHERE tbl = 'outbox'));
ALTER TABLE outbox ADD PRIMARY KEY (id);
ALTER TABLE outbox ALTER COLUMN id SET DEFAULT
    (((now() AT TIME ZONE 'UTC')::date - date '1970-01-01')::bigint << 47)
    | (nextval('outbox_id_seq') & ((1::bigint << 47) - 1));
ALTER SEQUENCE outbox_id_seq OWNED BY outbox.id;

-- idempotency_keys: only keys still within their 24 h move, each into its
-- day and the next.
ALTER TABLE idempotency_keys ADD COLUMN day date;
SELECT pg_temp.partition_table(
    'idempotency_keys', 'day', 'day',
    (SELECT array_agg(day ORDER BY day) FROM (
        SELECT (now() AT TIME ZONE 'UTC')::date - 1 AS day UNION SELECT day FROM wanted_days) AS d));
INSERT INTO idempotency_keys_partitioned
        (account_id, key, day, request_hash, status, body, created_at, message_id)
    SELECT account_id, key, (created_at AT TIME ZONE 'UTC')::date + n, request_hash, status,
           body, created_at, message_id
    FROM idempotency_keys, generate_series(0, 1) AS n
    WHERE created_at >= now() - interval '24 hours';
SELECT pg_temp.finish_table('idempotency_keys',
                            (SELECT defs FROM saved_indexes WHERE tbl = 'idempotency_keys'));
ALTER TABLE idempotency_keys ALTER COLUMN day SET NOT NULL;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (account_id, key, day);

-- The reserve trigger takes a request's key into its day and the next
-- (see above); otherwise as in migration 0005.
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
        INSERT INTO idempotency_keys (account_id, key, day, request_hash, status, message_id)
            SELECT account_id, idempotency_key, (now() AT TIME ZONE 'UTC')::date + n,
                   request_hash, answer_status, id
            FROM stored, (VALUES (0), (1)) AS carried(n)
            WHERE idempotency_key IS NOT NULL;
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

DROP FUNCTION pg_temp.partition_table(text, text, text, date[]);
DROP FUNCTION pg_temp.finish_table(text, text[]);
DROP FUNCTION pg_temp.day_of_uuid(uuid);
DROP FUNCTION pg_temp.uuid_floor_of_day(date);
