-- Authorization: why a tenant is (not) authorized, the one-time attempts of
-- the browser flow, and the daemon's own signing key.

ALTER TABLE tenants ADD COLUMN auth_reason TEXT;

-- One row per start link ('link') or OAuth attempt ('flow'). Single use:
-- used_at is set by the statement that consumes it. data holds the MSAL flow
-- (PKCE verifier, nonce, redirect URI), sealed when a key is configured.
CREATE TABLE auth_attempts (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at    DOUBLE PRECISION,
    data       BYTEA
);
CREATE INDEX auth_attempts_by_expiry ON auth_attempts (expires_at);

CREATE TABLE daemon_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
