-- When each user's photo metadata was last checked: checks are spread over
-- the day instead of asking for every user's photo on every run.
CREATE TABLE photo_checks (
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    checked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
