-- Admin keys carry the principal (the person) they belong to: approval quorums count distinct
-- principals, not keys. Keys created before this migration belong to a principal named like the key.
ALTER TABLE admin_keys ADD COLUMN principal TEXT NOT NULL DEFAULT '';
UPDATE admin_keys SET principal = name WHERE principal = '';
