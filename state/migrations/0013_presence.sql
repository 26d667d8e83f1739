-- Per user: the Teams presence last pushed to the PBX's pbx:presence, so a poll
-- writes only the users whose presence changed, and turning presence off knows
-- whom to clear.
CREATE TABLE presence_state (
    tenant       TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    availability TEXT NOT NULL,
    activity     TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

-- The delegated scopes the integration owner was asked for at the last sign-in
-- (space-separated; NULL: signed in before this was kept, or application mode),
-- so status can say when the configuration now needs more (presence.enabled
-- adds Presence.Read.All) and the owner must sign in again.
ALTER TABLE tenants ADD COLUMN auth_scopes TEXT;
