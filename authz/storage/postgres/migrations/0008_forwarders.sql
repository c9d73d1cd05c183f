-- Audit fan-out (authz.forward): one active forwarder per sink across replicas (the lease), a durable
-- cursor per (tenant, sink) advanced only after the sink acknowledged, and dead letters an operator can
-- list and replay.
CREATE TABLE forwarder_leases (
    sink TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE forwarder_cursors (
    tenant TEXT NOT NULL,
    sink TEXT NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    last_success_at DOUBLE PRECISION,
    last_error TEXT,
    last_error_at DOUBLE PRECISION,
    PRIMARY KEY (tenant, sink)
);
CREATE TABLE forwarder_dead_letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    sink TEXT NOT NULL,
    from_seq BIGINT NOT NULL,
    to_seq BIGINT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    replayed_at DOUBLE PRECISION
);
CREATE INDEX forwarder_dead_letters_sink ON forwarder_dead_letters (sink, tenant, id);
