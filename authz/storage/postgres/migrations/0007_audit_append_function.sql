-- The audit append in one statement (ARCHITECTURE §9): tessera_audit_append() makes sure each tenant of
-- the batch has a head row, locks those rows FOR UPDATE in tenant order (two appends sharing tenants never
-- wait on each other in a cycle), hashes every event on top of its head, inserts the events, moves the
-- heads and returns each event's (tenant, seq, hash). The client sends it as one autocommit statement, so
-- no client round trip happens while a head is locked: the lock is held for the server's work and the
-- commit only. The hash is the one authz.chain computes: SHA-256(prev_hash as 32 raw bytes || the event's
-- RFC 8785 text as UTF-8), lowercase hex; the chain tests compare it with Python's.
CREATE FUNCTION tessera_audit_append(
    p_tenant   TEXT[],
    p_time_ms  BIGINT[],
    p_decision TEXT[],
    p_agent    TEXT[],
    p_event    TEXT[]
) RETURNS TABLE (tenant TEXT, seq BIGINT, hash TEXT)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    n         INT := COALESCE(array_length(p_tenant, 1), 0);
    head_t    TEXT[];
    head_seq  BIGINT[];
    head_hash TEXT[];
    out_seq   BIGINT[] := '{}';
    out_prev  TEXT[] := '{}';
    out_hash  TEXT[] := '{}';
    k         INT;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(DISTINCT t ORDER BY t) INTO head_t FROM unnest(p_tenant) AS t;
    INSERT INTO audit_heads AS h (tenant, seq, hash)
        SELECT t, 0, repeat('0', 64) FROM unnest(head_t) AS t
        ON CONFLICT ON CONSTRAINT audit_heads_pkey DO NOTHING;
    -- Locked in tenant order; head_t is in the same order, so position k names the same tenant in all three.
    SELECT array_agg(l.seq ORDER BY l.tenant), array_agg(l.hash ORDER BY l.tenant)
        INTO head_seq, head_hash
        FROM (SELECT h.tenant, h.seq, h.hash FROM audit_heads AS h
              WHERE h.tenant = ANY (head_t) ORDER BY h.tenant FOR UPDATE) AS l;
    FOR i IN 1 .. n LOOP
        k := array_position(head_t, p_tenant[i]);
        out_seq[i] := head_seq[k] + 1;
        out_prev[i] := head_hash[k];
        out_hash[i] := encode(sha256(decode(head_hash[k], 'hex') || convert_to(p_event[i], 'UTF8')), 'hex');
        head_seq[k] := out_seq[i];
        head_hash[k] := out_hash[i];
    END LOOP;
    INSERT INTO audit_events (tenant, seq, time_ms, decision, agent, event, prev_hash, hash)
        SELECT * FROM unnest(p_tenant, out_seq, p_time_ms, p_decision, p_agent, p_event, out_prev, out_hash);
    UPDATE audit_heads AS h SET seq = v.seq, hash = v.hash
        FROM unnest(head_t, head_seq, head_hash) AS v (tenant, seq, hash)
        WHERE h.tenant = v.tenant;
    RETURN QUERY SELECT * FROM unnest(p_tenant, out_seq, out_hash);
END;
$$;
