-- instances.heartbeat_at was written on every lease round and never read: a
-- daemon is alive while its session holds its advisory lock (0006).
-- (SQLite drops a column since 3.35.)
ALTER TABLE instances DROP COLUMN heartbeat_at;
