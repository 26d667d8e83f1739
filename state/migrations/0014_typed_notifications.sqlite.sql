-- The notify: rows of tenant_sync_state carried over, then removed
-- (subscriptions: JSON; due marks: notify:due:<kind>:<mailbox> -> time).
INSERT INTO notify_subscriptions (tenant, id, kind, resource, mailbox, expires_at, client_state, state)
    SELECT tenant, substr(name, 12), json_extract(value, '$.kind'), json_extract(value, '$.resource'),
           json_extract(value, '$.mailbox'), json_extract(value, '$.expires_at'), json_extract(value, '$.secret'),
           coalesce(json_extract(value, '$.state'), 'active')
    FROM tenant_sync_state WHERE name LIKE 'notify:sub:%';
INSERT INTO notify_due (tenant, kind, mailbox, since)
    SELECT tenant, substr(rest, 1, instr(rest, ':') - 1), substr(rest, instr(rest, ':') + 1), CAST(value AS REAL)
    FROM (SELECT tenant, substr(name, 12) AS rest, value FROM tenant_sync_state WHERE name LIKE 'notify:due:%');
INSERT INTO notify_tenants (tenant, handshake_ok, handshake_at, handshake_reason)
    SELECT tenant, json_extract(value, '$.ok'), json_extract(value, '$.at'), json_extract(value, '$.reason')
    FROM tenant_sync_state WHERE name = 'notify:handshake';
INSERT INTO notify_tenants (tenant, last_notified_at)
    SELECT tenant, CAST(value AS REAL) FROM tenant_sync_state WHERE name = 'notify:last'
    ON CONFLICT (tenant) DO UPDATE SET last_notified_at = excluded.last_notified_at;
DELETE FROM tenant_sync_state WHERE name LIKE 'notify:%';
