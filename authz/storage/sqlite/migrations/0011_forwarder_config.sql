-- Audit fan-out configured per tenant through the admin API (IntegrationService sinks and notification
-- routes). The spec is the validated JSON of one sink (kind options, secret names, driver settings,
-- notification match and rate); it never holds a secret's value. ``version`` grows with each update so a
-- running forwarder sees the change and restarts that sink.
CREATE TABLE forwarder_sinks (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);
-- An operator asked for a dead letter to be resent (ReplayDeadLetter, `tessera forward replay`): the
-- forwarder holding the sink's lease resends it and sets replayed_at.
ALTER TABLE forwarder_dead_letters ADD COLUMN replay_requested_at REAL;
