-- Change notifications and folder listings in typed tables instead of the
-- generic key/value rows they borrowed (tenant_sync_state under notify:
-- names; delta_links under the resource contact-folders), so each lookup has
-- the index it needs and a listing can say that it did not complete.

-- A tenant's Graph subscriptions. The endpoint finds one by its id (the
-- primary key; the notification URL names the tenant); renewals by expiry.
CREATE TABLE notify_subscriptions (
    tenant       TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    resource     TEXT NOT NULL,
    mailbox      TEXT,
    expires_at   DOUBLE PRECISION NOT NULL,
    client_state TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'active',
    reason       TEXT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX notify_subscriptions_expiry ON notify_subscriptions (tenant, expires_at);

-- Reads notifications asked for and no daemon has done yet: one row per
-- kind and mailbox ('' for the whole tenant), so a burst is one row.
CREATE TABLE notify_due (
    tenant  TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    mailbox TEXT NOT NULL DEFAULT '',
    since   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, kind, mailbox)
);

-- Per tenant: whether Graph could reach the public address at the last
-- attempt to create a subscription, and when the last notification came.
CREATE TABLE notify_tenants (
    tenant           TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    handshake_ok     INTEGER,
    handshake_at     DOUBLE PRECISION,
    handshake_reason TEXT,
    last_notified_at DOUBLE PRECISION
);

-- When each mailbox's contact folders were last listed completely
-- (daemon/sync/folder_schedule.py): listed_at is when that listing started;
-- started_at marks a listing begun and not completed (interrupted, or
-- incomplete): the mailbox is listed again; relist = 1 asks for a listing
-- (a folder went, a notification) and is taken when one starts, so a request
-- made during a listing is still there after it.
CREATE TABLE folder_listings (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    listed_at  DOUBLE PRECISION,
    started_at DOUBLE PRECISION,
    relist     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, user_id)
);
INSERT INTO folder_listings (tenant, user_id, listed_at)
    SELECT tenant, key, updated_at FROM delta_links WHERE resource = 'contact-folders';
DELETE FROM delta_links WHERE resource = 'contact-folders';
