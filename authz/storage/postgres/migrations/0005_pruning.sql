-- Bounded state: when a budget counter can never be charged again (its window ended, or every token
-- sharing it has expired), so scheduled pruning can delete it. NULL: never (a token without expiry).
ALTER TABLE budget_counters ADD COLUMN expires_at DOUBLE PRECISION;
CREATE INDEX budget_counters_expires ON budget_counters (expires_at);
CREATE INDEX approvals_expires ON approvals (expires_at);
