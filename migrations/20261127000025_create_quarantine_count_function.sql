-- The count of quarantined lines that carry no sequence number, per UTC
-- hour, for the sequence audit (docs/COUNTING.md, "How we know nothing was
-- lost"): `earshot audit`, the loader's gauges and the API's
-- `GET /v1/admin/audit` read it through this function, never the table.
--
-- Why a function and not a grant on `quarantine`: the table keeps each
-- refused line as it arrived (`raw_line`), which is whatever was written to
-- the bucket: a user agent, a trace id, a listener id, or anything a broken
-- or foreign writer put there. The API's role is the one exposed to the
-- internet; it reads the rollups and needs no raw hit. This returns counts
-- only. It runs as its owner (SECURITY DEFINER) with a fixed search_path,
-- and only the roles `earshot migrate` grants EXECUTE to may call it (not
-- PUBLIC). A line carries a number when it holds `"edge":"` (the wire
-- format's edge field); the ledger (`edge_seq_ranges`) has those.
--
-- Expand/contract: an API of an earlier version does not call it.
CREATE FUNCTION earshot_quarantined_unnumbered(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (hour timestamptz, lines bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT date_trunc('hour', quarantined_at, 'UTC'), count(*)
    FROM quarantine
    WHERE quarantined_at >= from_ts AND quarantined_at < to_ts
      AND position('"edge":"'::bytea IN raw_line) = 0
    GROUP BY 1
$$;

REVOKE EXECUTE ON FUNCTION earshot_quarantined_unnumbered(timestamptz, timestamptz) FROM PUBLIC;

-- The loader's gauges ask it for the last hours every merge interval: an
-- index keeps that a range read however much a broken writer quarantined.
CREATE INDEX quarantine_quarantined_at_idx ON quarantine (quarantined_at);
