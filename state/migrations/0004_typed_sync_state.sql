-- Typed tables for what used to be string-keyed markers in tenant_sync_state,
-- indexed owner columns on the Graph copies, and the create journal of every
-- kind. Existing markers are carried over.

-- Contacts and events belong to a mailbox (and contacts to a folder): indexed
-- columns, so per-mailbox queries never scan every copy of the tenant.
ALTER TABLE graph_objects ADD COLUMN owner TEXT;
ALTER TABLE graph_objects ADD COLUMN folder TEXT;
UPDATE graph_objects SET owner = json_extract(data, '$._owner'), folder = json_extract(data, '$._folder')
    WHERE kind IN ('contact', 'event');
CREATE INDEX graph_objects_by_owner ON graph_objects (tenant, kind, owner, folder);

-- A mailbox or calendar that answered 403: asked again after a re-authorization and daily.
CREATE TABLE unreadable_mailboxes (
    tenant   TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    resource TEXT NOT NULL,  -- contacts | calendar
    since    REAL NOT NULL,
    PRIMARY KEY (tenant, user_id, resource)
);
INSERT INTO unreadable_mailboxes (tenant, user_id, resource, since)
    SELECT tenant, substr(name, 12), 'contacts', 0 FROM tenant_sync_state WHERE name LIKE 'unreadable:%';
INSERT INTO unreadable_mailboxes (tenant, user_id, resource, since)
    SELECT tenant, substr(name, 21), 'calendar', 0 FROM tenant_sync_state WHERE name LIKE 'calendar-unreadable:%';

-- The contact folders of each mailbox (the well-known default folder included).
CREATE TABLE contact_folders (
    tenant    TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id, folder_id)
);
WITH RECURSIVE split(tenant, user_id, rest, folder_id) AS (
    SELECT tenant, substr(name, 9), value || ',', NULL FROM tenant_sync_state WHERE name LIKE 'folders:%'
    UNION ALL
    SELECT tenant, user_id, substr(rest, instr(rest, ',') + 1), substr(rest, 1, instr(rest, ',') - 1)
    FROM split WHERE rest != ''
)
INSERT OR IGNORE INTO contact_folders (tenant, user_id, folder_id)
    SELECT tenant, user_id, folder_id FROM split WHERE folder_id IS NOT NULL AND folder_id != '';

-- Per user: the day the calendar window was based on, and the busy list last pushed.
CREATE TABLE calendar_state (
    tenant           TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    window_day       TEXT,
    busy_fingerprint TEXT,
    PRIMARY KEY (tenant, user_id)
);
INSERT INTO calendar_state (tenant, user_id, window_day)
    SELECT tenant, substr(name, 15), value FROM tenant_sync_state WHERE name LIKE 'events-window:%';
INSERT INTO calendar_state (tenant, user_id, busy_fingerprint)
    SELECT tenant, substr(name, 6), value FROM tenant_sync_state WHERE name LIKE 'busy:%'
    ON CONFLICT (tenant, user_id) DO UPDATE SET busy_fingerprint = excluded.busy_fingerprint;

-- Which process is syncing a tenant (one at a time), until when.
CREATE TABLE run_leases (
    tenant     TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- Creates about to be sent: after a crash or a lost answer, looked up by
-- externalId before anything is sent again.
CREATE TABLE pending_creates (
    tenant    TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind      TEXT NOT NULL,
    graph_id  TEXT NOT NULL,
    since     REAL NOT NULL,
    PRIMARY KEY (tenant, kind, graph_id)
);
INSERT INTO pending_creates (tenant, kind, graph_id, since)
    SELECT tenant, kind, graph_id, updated_at FROM synced_objects WHERE payload_hash = 'pending-create' AND pbx_id IS NULL;
DELETE FROM synced_objects WHERE payload_hash = 'pending-create' AND pbx_id IS NULL;

-- Held deprovisions of every kind, not only users.
ALTER TABLE held_deprovisions ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

DELETE FROM tenant_sync_state WHERE name LIKE 'unreadable:%' OR name LIKE 'calendar-unreadable:%'
    OR name LIKE 'folders:%' OR name LIKE 'folders-checked:%' OR name LIKE 'events-window:%'
    OR name LIKE 'busy:%' OR name = 'run-lock';
