-- A run plans what changed plus what is due, found by index, not by reading
-- every stored copy: `dirty` marks a user copy merged since the last plan
-- (cleared once that plan was applied), retry_at and out_of_scope_since are
-- searched for failed objects due a retry and deprovisions whose grace period
-- is over, and each photo check records when the next one is due.
ALTER TABLE graph_objects ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0;
CREATE INDEX graph_objects_dirty ON graph_objects (tenant, kind, id) WHERE dirty = 1;
CREATE INDEX synced_objects_retry ON synced_objects (tenant, kind, retry_at);
CREATE INDEX synced_objects_out_of_scope ON synced_objects (tenant, kind, out_of_scope_since);
ALTER TABLE photo_checks ADD COLUMN due_at DOUBLE PRECISION;
CREATE INDEX photo_checks_due ON photo_checks (tenant, due_at);
-- Checks made before this version: due from half a day after them (the
-- earliest a check falls due at the default photo_check_hours of 24).
UPDATE photo_checks SET due_at = checked_at + 43200;
