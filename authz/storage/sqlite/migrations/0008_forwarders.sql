-- Audit fan-out (authz.forward): one active forwarder per sink across replicas (the lease), a durable
-- cursor per (tenant, sink) advanced only after the sink acknowledged, and dead letters an operator can
-- list and replay.
CREATE TABLE forwarder_leases (
    sink TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE forwarder_cursors (
    tenant TEXT NOT NULL,
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    last_success_at REAL,
    last_error TEXT,
    last_error_at REAL,
    PRIMARY KEY (tenant, sink)
);
CREATE TABLE forwarder_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    sink TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    replayed_at REAL
);
CREATE INDEX forwarder_dead_letters_sink ON forwarder_dead_letters (sink, tenant, id);
