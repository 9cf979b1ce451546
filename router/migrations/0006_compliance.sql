-- CONTRACT §6 "Content": a message's kind ("transactional" |
-- "promotional", as POST /v1/messages said; NULL over SMPP, which has no
-- such field) is kept with it, so that what a rule decided can be read
-- back and a promotional message told from a transactional one later.
ALTER TABLE messages ADD COLUMN kind text;
