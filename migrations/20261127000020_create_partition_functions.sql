-- The loader's day partitions, made and dropped through these functions
-- instead of DDL of its own, so that the loader's role needs no DDL right
-- at all: it owns no table and cannot create one (docs/OPERATIONS.md,
-- "Database roles"). They run as their owner, the role that ran the
-- migrations (SECURITY DEFINER), with a fixed search_path, and do one thing
-- each, on a table of a fixed list, for a day given as a date: nothing in
-- their arguments reaches the SQL but a checked name and a date.
--
-- Only their owner and the roles `earshot migrate` grants EXECUTE to may
-- call them (not PUBLIC). With one role for everything (local development),
-- that role is their owner and calls them as before.
--
-- Expand/contract: a loader of an earlier version still makes its
-- partitions with DDL of its own; with one role for everything that keeps
-- working, so both run side by side during the rollout.

-- The partition of `parent` for `day`, `<parent>_pYYYYMMDD`, as the loader
-- names them; `parent` must be one of `allowed`.
CREATE FUNCTION earshot_day_partition(parent text, day date, allowed text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
BEGIN
    IF day IS NULL OR NOT parent = ANY (allowed) THEN
        RAISE EXCEPTION 'no day partitions of % here (one of %)', parent, allowed
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN parent || '_p' || to_char(day, 'YYYYMMDD');
END $$;

-- The events partition of `day` (UTC), unless it exists.
CREATE FUNCTION earshot_create_events_partition(day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                   earshot_day_partition('events', day, ARRAY['events']),
                   to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
                   to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
END $$;

-- Drops the partition of `day` of a day-partitioned table (retention, or a
-- closed day's keys), if it exists.
CREATE FUNCTION earshot_drop_day_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I',
                   earshot_day_partition(parent, day,
                       ARRAY['events', 'counting_keys', 'listener_keys', 'counted_keys', 'daily_listeners']));
END $$;

-- A key table's partition of `day` as a table of its own, empty (dropped
-- first if a stale one is there), for the caller to fill before
-- earshot_attach_key_partition; the caller may read and insert into it.
CREATE FUNCTION earshot_new_key_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := earshot_day_partition(parent, day, ARRAY['counting_keys', 'listener_keys']);
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS %I', part);
    EXECUTE format('CREATE TABLE %I (LIKE %I)', part, parent);
    IF session_user <> current_user THEN
        EXECUTE format('GRANT SELECT, INSERT ON %I TO %I', part, session_user);
    END IF;
    RETURN part;
END $$;

-- Gives the filled partition its primary key and attaches it. The bound,
-- as a constraint while attaching, lets ATTACH skip its scan; ATTACH takes
-- a lock that lets loads go on (counting::keys, "build_day").
CREATE FUNCTION earshot_attach_key_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := earshot_day_partition(parent, day, ARRAY['counting_keys', 'listener_keys']);
    lo text := to_char(day, 'YYYY-MM-DD');
    hi text := to_char(day + 1, 'YYYY-MM-DD');
BEGIN
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (day, key), ADD CONSTRAINT %I CHECK (day >= %L AND day < %L)',
                   part, part || '_bound', lo, hi);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
END $$;

REVOKE EXECUTE ON FUNCTION earshot_create_events_partition(date),
    earshot_drop_day_partition(text, date),
    earshot_new_key_partition(text, date),
    earshot_attach_key_partition(text, date) FROM PUBLIC;
