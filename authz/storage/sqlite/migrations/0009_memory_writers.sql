-- Memory writers (ARCHITECTURE §8): each tenant's registered writers and their Ed25519 public keys
-- (base64). The check service keeps them all in memory; a change bumps the settings version, so every
-- replica reloads them (PostgreSQL: NOTIFY; SQLite: the version poll).
CREATE TABLE memory_writers (
    tenant              TEXT NOT NULL,
    writer_id           TEXT NOT NULL,
    public_key          TEXT NOT NULL,
    sources             TEXT NOT NULL,          -- JSON array of allowed source values
    expires_at          REAL,
    created_at          REAL NOT NULL,
    created_by          TEXT NOT NULL,
    updated_at          REAL NOT NULL,
    disabled_at         REAL,
    disabled_by         TEXT,
    previous_public_key TEXT,                   -- the key before the last rotation
    previous_until      REAL,                   -- ... accepted until then
    PRIMARY KEY (tenant, writer_id)
);
