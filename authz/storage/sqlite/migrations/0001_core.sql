-- Tessera core schema (SQLite). Applied once, in order, tracked in schema_migrations.
CREATE TABLE tenants (
    tenant      TEXT PRIMARY KEY,
    settings    TEXT NOT NULL,            -- JSON, TenantSettings.to_json()
    updated_at  REAL NOT NULL
);

CREATE TABLE policies (
    tenant        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    source        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    created_by    TEXT NOT NULL,
    active        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, version)
);
CREATE INDEX policies_active ON policies (tenant) WHERE active = 1;

CREATE TABLE revocations (
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('jti', 'token_id')),
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  REAL NOT NULL,
    revoked_by  TEXT NOT NULL,
    PRIMARY KEY (tenant, kind, value)
);

CREATE TABLE budget_counters (
    counter_key   TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    used          REAL NOT NULL,
    PRIMARY KEY (counter_key, window_start)
);

CREATE TABLE approvals (
    approval_id       TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    agent             TEXT,
    tool              TEXT NOT NULL,
    arguments_sha256  TEXT NOT NULL,
    reason            TEXT NOT NULL,
    status            TEXT NOT NULL,
    quorum            INTEGER NOT NULL,
    created_at        REAL NOT NULL,
    expires_at        REAL NOT NULL,
    decision_id       TEXT NOT NULL,
    decisions         TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX approvals_tenant_status ON approvals (tenant, status);

-- Change counters: a replica polls this one row to know when to reload policies, revocations, settings.
CREATE TABLE store_versions (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    policies     INTEGER NOT NULL,
    revocations  INTEGER NOT NULL,
    settings     INTEGER NOT NULL
);
INSERT INTO store_versions (id, policies, revocations, settings) VALUES (1, 0, 0, 0);
