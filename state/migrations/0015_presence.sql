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
