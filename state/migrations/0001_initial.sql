-- The first schema: what the foundation and the next issues need.
-- Times are Unix seconds (UTC) in DOUBLE PRECISION columns.

CREATE TABLE tenants (
    name            TEXT PRIMARY KEY,
    directory_id    TEXT NOT NULL,
    application_id  TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    auth_state      TEXT NOT NULL DEFAULT 'authorization_required',
    auth_owner      TEXT,
    auth_changed_at DOUBLE PRECISION
);

-- One deltaLink per (tenant, resource, key): key is '' for tenant-wide
-- resources (users, groups) and the user or folder id for per-mailbox ones.
CREATE TABLE delta_links (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    resource   TEXT NOT NULL,
    key        TEXT NOT NULL DEFAULT '',
    link       TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, resource, key)
);

-- What the daemon has pushed: Graph id -> PBX id, with the hash of the last
-- pushed payload (a no-change run makes no write) and the PBX's ETag.
CREATE TABLE synced_objects (
    tenant       TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    graph_id     TEXT NOT NULL,
    pbx_id       TEXT,
    payload_hash TEXT,
    etag         TEXT,
    updated_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, kind, graph_id)
);
CREATE INDEX synced_objects_by_pbx_id ON synced_objects (tenant, kind, pbx_id);

-- Extension numbers handed out to users and groups; released_at starts the
-- reuse cool-down.
CREATE TABLE extension_allocations (
    tenant         TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    number         TEXT NOT NULL,
    owner_kind     TEXT NOT NULL,
    owner_graph_id TEXT NOT NULL,
    allocated_at   DOUBLE PRECISION NOT NULL,
    released_at    DOUBLE PRECISION,
    PRIMARY KEY (tenant, number)
);
CREATE UNIQUE INDEX extension_allocations_live_owner
    ON extension_allocations (tenant, owner_kind, owner_graph_id)
    WHERE released_at IS NULL;

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    trigger     TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    result      TEXT,
    summary     TEXT,
    error       TEXT
);
CREATE INDEX runs_by_tenant_start ON runs (tenant, started_at);

-- The MSAL token cache, one row per tenant (possibly encrypted at rest).
CREATE TABLE token_cache (
    tenant     TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
    cache      BYTEA NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
