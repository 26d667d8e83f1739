-- The user sync engine: the last-known Graph copy of every user, per-object
-- outcome of the last push, and deprovisions held by the mass-deletion guard.

-- data is the merged JSON of every property Graph sent for the user;
-- removed is NULL, 'changed' (soft-deleted) or 'deleted' (permanently).
CREATE TABLE graph_objects (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       TEXT NOT NULL,
    removed    TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, kind, id)
);

-- Membership of the configured Entra groups (scope of INCLUDE mode).
CREATE TABLE group_members (
    tenant    TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    group_id  TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (tenant, group_id, member_id)
);

ALTER TABLE synced_objects ADD COLUMN payload TEXT;
ALTER TABLE synced_objects ADD COLUMN active INTEGER;
ALTER TABLE synced_objects ADD COLUMN out_of_scope_since DOUBLE PRECISION;
ALTER TABLE synced_objects ADD COLUMN photo_etag TEXT;
ALTER TABLE synced_objects ADD COLUMN last_push_at DOUBLE PRECISION;
ALTER TABLE synced_objects ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE synced_objects ADD COLUMN last_error TEXT;
ALTER TABLE synced_objects ADD COLUMN quarantine_fingerprint TEXT;

CREATE TABLE held_deprovisions (
    tenant   TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    graph_id TEXT NOT NULL,
    action   TEXT NOT NULL,
    held_at  DOUBLE PRECISION NOT NULL,
    approved INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, graph_id)
);

-- Settings fingerprint and other per-tenant sync bookkeeping.
CREATE TABLE tenant_sync_state (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
