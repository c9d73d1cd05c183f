-- Token exchange (POST /v1/oauth/token): how many capability tokens each subject token (by tenant and
-- jti) has been exchanged for, when the issuer's allowance sets max_exchanges_per_jti. A row is kept
-- until its subject token expires (no later exchange of that token can verify); expired rows are
-- deleted by the next exchange that counts.
CREATE TABLE oauth_exchanges (
    tenant TEXT NOT NULL,
    jti TEXT NOT NULL,
    uses INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant, jti)
);
CREATE INDEX oauth_exchanges_expiry ON oauth_exchanges (expires_at);
