-- A failed object waits before it is tried again (1 h, doubling to 24 h) unless
-- its inputs change: retry_at says until when, failed_fingerprint what it
-- failed with (a new fingerprint is a change, tried at once).
ALTER TABLE synced_objects ADD COLUMN retry_at DOUBLE PRECISION;
ALTER TABLE synced_objects ADD COLUMN failed_fingerprint TEXT;
