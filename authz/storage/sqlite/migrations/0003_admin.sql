-- The admin service (ARCHITECTURE §11): its keys, policy drafts and the approval-webhook outbox.
-- Admin keys: only the SHA-256 of the whole key (tsk_<key_id>_<secret>) is stored.
CREATE TABLE admin_keys (
    key_id         TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    tenant         TEXT,                  -- NULL: all tenants
    secret_sha256  TEXT NOT NULL,
    created_at     REAL NOT NULL,
    created_by     TEXT NOT NULL,
    revoked_at     REAL,
    revoked_by     TEXT
);
CREATE INDEX admin_keys_tenant ON admin_keys (tenant);

CREATE TABLE policy_drafts (
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    source        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    updated_by    TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Webhook outbox state on each approval: delivered when notified_at is set; otherwise the next
-- attempt is due at notify_next_at (a claim leases the row by moving it forward, with backoff).
ALTER TABLE approvals ADD COLUMN notified_at REAL;
ALTER TABLE approvals ADD COLUMN notify_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN notify_next_at REAL NOT NULL DEFAULT 0;
CREATE INDEX approvals_outbox ON approvals (tenant, created_at) WHERE status = 'pending' AND notified_at IS NULL;
