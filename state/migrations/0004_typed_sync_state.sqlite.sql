-- The markers of older databases, carried over from tenant_sync_state into
-- the typed tables 0004_typed_sync_state.sql has just created, then removed.

UPDATE graph_objects SET owner = json_extract(data, '$._owner'), folder = json_extract(data, '$._folder')
    WHERE kind IN ('contact', 'event');

INSERT INTO unreadable_mailboxes (tenant, user_id, resource, since)
    SELECT tenant, substr(name, 12), 'contacts', 0 FROM tenant_sync_state WHERE name LIKE 'unreadable:%';
INSERT INTO unreadable_mailboxes (tenant, user_id, resource, since)
    SELECT tenant, substr(name, 21), 'calendar', 0 FROM tenant_sync_state WHERE name LIKE 'calendar-unreadable:%';

WITH RECURSIVE split(tenant, user_id, rest, folder_id) AS (
    SELECT tenant, substr(name, 9), value || ',', NULL FROM tenant_sync_state WHERE name LIKE 'folders:%'
    UNION ALL
    SELECT tenant, user_id, substr(rest, instr(rest, ',') + 1), substr(rest, 1, instr(rest, ',') - 1)
    FROM split WHERE rest != ''
)
INSERT OR IGNORE INTO contact_folders (tenant, user_id, folder_id)
    SELECT tenant, user_id, folder_id FROM split WHERE folder_id IS NOT NULL AND folder_id != '';

INSERT INTO calendar_state (tenant, user_id, window_day)
    SELECT tenant, substr(name, 15), value FROM tenant_sync_state WHERE name LIKE 'events-window:%';
INSERT INTO calendar_state (tenant, user_id, busy_fingerprint)
    SELECT tenant, substr(name, 6), value FROM tenant_sync_state WHERE name LIKE 'busy:%'
    ON CONFLICT (tenant, user_id) DO UPDATE SET busy_fingerprint = excluded.busy_fingerprint;

INSERT INTO pending_creates (tenant, kind, graph_id, since)
    SELECT tenant, kind, graph_id, updated_at FROM synced_objects WHERE payload_hash = 'pending-create' AND pbx_id IS NULL;
DELETE FROM synced_objects WHERE payload_hash = 'pending-create' AND pbx_id IS NULL;

DELETE FROM tenant_sync_state WHERE name LIKE 'unreadable:%' OR name LIKE 'calendar-unreadable:%'
    OR name LIKE 'folders:%' OR name LIKE 'folders-checked:%' OR name LIKE 'events-window:%'
    OR name LIKE 'busy:%' OR name = 'run-lock';
