-- The daemons sharing this state (PostgreSQL; on SQLite the table stays empty).
-- A daemon is alive while its session holds the advisory lock lock_key;
-- backend_pid finds which daemon holds a tenant's lock (pg_locks.pid).
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    lock_key     BIGINT NOT NULL,
    backend_pid  INTEGER,
    url          TEXT,
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
