-- counting_keys and listener_keys are keyed by (day, listener, key): a
-- key's first 8 bytes are its listener id's, as a bigint, and the rest is 8
-- bytes of the hash of the key's parts (services/loader/src/counting/mod.rs,
-- `key`). Before, a key was 16 bytes of that hash.
--
-- Why: an object's keys went into the day's primary key at random places, a
-- leaf page each, so each object's inserts touched (and after a checkpoint
-- wrote whole into the WAL) as many pages as it had keys, and their cost grew
-- with the day's index. One listener's keys (an ad's impression, start,
-- quartiles and complete, and its listener keys) come within a minute, so in
-- one object; led by the listener they share a leaf page
-- (docs/BENCHMARKS.md, "Loader"; `scripts/bench loader keys`).
--
-- The keys already stored are of the old layout, so the tables are made
-- anew, empty. The loader builds each open day's keys from its raw events
-- before it loads (counting::keys::ensure_days), as it does for a day that
-- has none: at its first start after this migration, once per open day.
--
-- A loader of an earlier version still running during the rollout binds
-- uuid keys to a bigint column, so its loads fail ("column \"key\" is of
-- type bigint") and are retried until its pod is replaced; nothing is
-- acknowledged, nothing lost, and nothing counted twice by the two layouts.

DROP TABLE counting_keys, listener_keys;

CREATE TABLE counting_keys (
    day       date NOT NULL,
    listener  bigint NOT NULL,  -- the listener id's first 8 bytes
    key       bigint NOT NULL,  -- the first 8 bytes of the hash of the key's parts
    PRIMARY KEY (day, listener, key)
) PARTITION BY RANGE (day);

CREATE TABLE listener_keys (
    day       date NOT NULL,
    listener  bigint NOT NULL,
    key       bigint NOT NULL,
    PRIMARY KEY (day, listener, key)
) PARTITION BY RANGE (day);

-- As migration 20's, with the new primary key.
CREATE OR REPLACE FUNCTION earshot_attach_key_partition(parent text, day date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text := earshot_day_partition(parent, day, ARRAY['counting_keys', 'listener_keys']);
    lo text := to_char(day, 'YYYY-MM-DD');
    hi text := to_char(day + 1, 'YYYY-MM-DD');
BEGIN
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (day, listener, key), ADD CONSTRAINT %I CHECK (day >= %L AND day < %L)',
                   part, part || '_bound', lo, hi);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
END $$;
