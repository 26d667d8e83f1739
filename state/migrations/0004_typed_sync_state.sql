-- Typed tables for what used to be string-keyed markers in tenant_sync_state,
-- indexed owner columns on the Graph copies, and the create journal of every
-- kind. On SQLite, 0004_typed_sync_state.sqlite.sql then carries the markers
-- of older databases over; no PostgreSQL database is older than this version
-- (an old SQLite database moves over with `m365sync state copy`).

-- Contacts and events belong to a mailbox (and contacts to a folder): indexed
-- columns, so per-mailbox queries never scan every copy of the tenant.
ALTER TABLE graph_objects ADD COLUMN owner TEXT;
ALTER TABLE graph_objects ADD COLUMN folder TEXT;
CREATE INDEX graph_objects_by_owner ON graph_objects (tenant, kind, owner, folder);

-- A mailbox or calendar that answered 403: asked again after a re-authorization and daily.
CREATE TABLE unreadable_mailboxes (
    tenant   TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    resource TEXT NOT NULL,  -- contacts | calendar
    since    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_id, resource)
);

-- The contact folders of each mailbox (the well-known default folder included).
CREATE TABLE contact_folders (
    tenant    TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id, folder_id)
);

-- Per user: the day the calendar window was based on, and the busy list last pushed.
CREATE TABLE calendar_state (
    tenant           TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    window_day       TEXT,
    busy_fingerprint TEXT,
    PRIMARY KEY (tenant, user_id)
);

-- Which process is syncing a tenant (one at a time), until when.
CREATE TABLE run_leases (
    tenant     TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

-- Creates about to be sent: after a crash or a lost answer, looked up by
-- externalId before anything is sent again.
CREATE TABLE pending_creates (
    tenant    TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind      TEXT NOT NULL,
    graph_id  TEXT NOT NULL,
    since     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, kind, graph_id)
);

-- Held deprovisions of every kind, not only users.
ALTER TABLE held_deprovisions ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

