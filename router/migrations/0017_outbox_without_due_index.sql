-- The outbox's index by (kind, next_attempt_at) of rows not done (migration
-- 0001) served a dispatcher that polled the table for due rows. The
-- dispatcher keeps its rows in memory since (router/notifications.py); the
-- table is read only at a start, a takeover and by retention, by owner and
-- id, which the primary key and outbox_unowned serve. No statement reads
-- the index, and every outbox row (one or two a message) paid an entry in
-- it and its cleanup after the delete: 76 bytes of WAL and 3 % of
-- PostgreSQL's CPU per message (bench/RESULTS.md, issue 17).

DROP INDEX IF EXISTS outbox_due;
