-- An account may ask for a webhook when a message is sent to a carrier
-- (status "sent"), besides the one of its final status (README "Webhooks").
-- Off by default: an outbox row per message more is the account's choice.
ALTER TABLE accounts ADD COLUMN callback_sent boolean NOT NULL DEFAULT false;
