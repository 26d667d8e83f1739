-- What a pushed user's payload was made from (its Graph copy's text, the
-- settings, its number, state and photo, the mapping's code): a run whose
-- inputs are the same skips building and comparing the payload.
ALTER TABLE synced_objects ADD COLUMN input_hash TEXT;
