-- Every applied write, per object: what happened, when and why (m365sync
-- history, /api/tenants/{name}/history/{object}, explain). attributes holds the
-- names of the changed attributes (JSON list); changed_values the values of
-- only displayName, userName and the extension number (JSON object). Rows
-- older than [state] history_days are deleted by time: object_history_at.
CREATE TABLE object_history (
    tenant         TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    graph_id       TEXT NOT NULL,
    at             DOUBLE PRECISION NOT NULL,
    run_id         TEXT,
    action         TEXT NOT NULL,
    attributes     TEXT NOT NULL,
    changed_values TEXT NOT NULL,
    reason         TEXT NOT NULL
);
CREATE INDEX object_history_object ON object_history (tenant, kind, graph_id, at);
CREATE INDEX object_history_at ON object_history (at);
