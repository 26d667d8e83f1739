-- The notify: rows of tenant_sync_state carried over, then removed
-- (subscriptions: JSON; due marks: notify:due:<kind>:<mailbox> -> time).
INSERT INTO notify_subscriptions (tenant, id, kind, resource, mailbox, expires_at, client_state, state)
    SELECT tenant, substr(name, 12), value::json->>'kind', value::json->>'resource', value::json->>'mailbox',
           (value::json->>'expires_at')::double precision, value::json->>'secret',
           coalesce(value::json->>'state', 'active')
    FROM tenant_sync_state WHERE starts_with(name, 'notify:sub:');
INSERT INTO notify_due (tenant, kind, mailbox, since)
    SELECT tenant, split_part(rest, ':', 1), substr(rest, strpos(rest, ':') + 1), value::double precision
    FROM (SELECT tenant, substr(name, 12) AS rest, value FROM tenant_sync_state
          WHERE starts_with(name, 'notify:due:')) AS due;
INSERT INTO notify_tenants (tenant, handshake_ok, handshake_at, handshake_reason)
    SELECT tenant, CASE WHEN (value::json->>'ok')::boolean THEN 1 ELSE 0 END, (value::json->>'at')::double precision,
           value::json->>'reason'
    FROM tenant_sync_state WHERE name = 'notify:handshake';
INSERT INTO notify_tenants (tenant, last_notified_at)
    SELECT tenant, value::double precision FROM tenant_sync_state WHERE name = 'notify:last'
    ON CONFLICT (tenant) DO UPDATE SET last_notified_at = excluded.last_notified_at;
DELETE FROM tenant_sync_state WHERE starts_with(name, 'notify:');
