-- Tessera core schema (PostgreSQL). The same tables as authz/storage/sqlite_migrations/0001_core.sql;
-- JSON columns are JSONB, timestamps DOUBLE PRECISION (epoch seconds, as the models carry them).
-- Applied once, in its own transaction, tracked in schema_migrations (see authz/storage/postgres/_migrate.py).

CREATE TABLE tenants (
    tenant      TEXT PRIMARY KEY,
    settings    JSONB NOT NULL,               -- TenantSettings.to_json()
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE policies (
    tenant        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    source        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    created_by    TEXT NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, version)
);
-- At most one live version per tenant, whatever a buggy writer does.
CREATE UNIQUE INDEX policies_one_active ON policies (tenant) WHERE active;

CREATE TABLE revocations (
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('jti', 'token_id')),
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  DOUBLE PRECISION NOT NULL,
    revoked_by  TEXT NOT NULL,
    PRIMARY KEY (tenant, kind, value)
);

-- Updated on every allowed call: leave room on each page so updates stay HOT (no index churn).
CREATE TABLE budget_counters (
    counter_key   TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    used          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (counter_key, window_start)
) WITH (fillfactor = 70);

CREATE TABLE approvals (
    approval_id       TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    agent             TEXT,
    tool              TEXT NOT NULL,
    arguments_sha256  TEXT NOT NULL,
    reason            TEXT NOT NULL,
    status            TEXT NOT NULL,
    quorum            INTEGER NOT NULL,
    created_at        DOUBLE PRECISION NOT NULL,
    expires_at        DOUBLE PRECISION NOT NULL,
    decision_id       TEXT NOT NULL,
    decisions         JSONB NOT NULL DEFAULT '[]'
);
CREATE INDEX approvals_tenant_status ON approvals (tenant, status);

-- Change counters, bumped in the same transaction as the change (which also NOTIFYs tessera_changes).
CREATE TABLE store_versions (
    id           SMALLINT PRIMARY KEY CHECK (id = 1),
    policies     BIGINT NOT NULL,
    revocations  BIGINT NOT NULL,
    settings     BIGINT NOT NULL
);
INSERT INTO store_versions (id, policies, revocations, settings) VALUES (1, 0, 0, 0);
