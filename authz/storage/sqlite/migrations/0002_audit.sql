-- Audit hash chains (ARCHITECTURE §9): one chain per tenant, "_gateway" for tenant-less decisions.
-- hash = SHA-256(prev_hash || event), event being the RFC 8785 text exactly as hashed; hashes are hex.
CREATE TABLE audit_events (
    tenant     TEXT NOT NULL,
    seq        INTEGER NOT NULL,          -- 1-based, contiguous per tenant
    time_ms    INTEGER NOT NULL,          -- epoch milliseconds, copied from the event
    decision   TEXT NOT NULL,             -- allow | deny | escalate | admin, copied from the event
    agent      TEXT,                      -- copied from the event
    event      TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX audit_events_time ON audit_events (tenant, time_ms);
CREATE INDEX audit_events_agent ON audit_events (tenant, agent, seq);

-- The last event of each chain, written in the same transaction as the events: a chain that ends
-- before its head was truncated.
CREATE TABLE audit_heads (
    tenant  TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    hash    TEXT NOT NULL
);

-- Signed checkpoints (Ed25519 over tenant, seq, hash, created_at); kept here and exported off-box.
CREATE TABLE audit_checkpoints (
    tenant      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);
