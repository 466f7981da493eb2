-- Counting keys and listener keys move to two tables with a primary key,
-- counting_keys and listener_keys, partitioned by UTC day: a loader inserts
-- an object's candidate keys with INSERT … ON CONFLICT DO NOTHING RETURNING,
-- and the keys returned are the new ones (services/loader/src/counting/keys.rs).
--
-- Why: the loader decided new keys from the day's keys held in its memory
-- (migration 8), so its memory and its restart time grew with the day's
-- volume (about 95 MB and 2.4 s per million events), and key writers took
-- turns on counting_state's row, so a second loader added no throughput.
-- With the primary key deciding, a loader holds no keys, reads none when it
-- starts, and loaders count side by side: two inserting the same key wait
-- on each other's commit, and one of them gets it (docs/COUNTING.md).
--
-- Only the open days keep their keys: today and the two days before it
-- (counting::keys::OPEN_DAYS). An older day's partitions are dropped by the
-- loader's upkeep, and rebuilt from that day's raw events, which hold every
-- field of both keys, when an event comes back to the day (a late object, a
-- replay). The raw events are kept for EARSHOT_RETENTION_DAYS; the keys of a
-- closed day are not needed until then.
--
-- Expand/contract: counted_keys and daily_listeners stay, frozen. A loader
-- of an earlier version that is still running during the rollout can no
-- longer append to them (the trigger below), so it cannot count: its load
-- of an object with a key to append fails and is retried until the pod is
-- replaced, and the object is loaded by a new loader (nothing acknowledged,
-- nothing lost). Its loads whose every key was already counted still commit,
-- and are right. A later migration drops the two tables, the trigger and
-- counting_state.epoch (docs/OPERATIONS.md, "Upgrades and rollback").

CREATE TABLE counting_keys (
    day  date NOT NULL,
    key  uuid NOT NULL,
    PRIMARY KEY (day, key)
) PARTITION BY RANGE (day);

CREATE TABLE listener_keys (
    day  date NOT NULL,
    key  uuid NOT NULL,
    PRIMARY KEY (day, key)
) PARTITION BY RANGE (day);

CREATE FUNCTION earshot_keys_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'counting keys live in counting_keys and listener_keys since migration 11; this loader is older than that: upgrade it'
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$;

-- The trigger's lock waits for the old loaders' appends in flight, and the
-- copy below then holds every key they committed.
CREATE TRIGGER keys_moved BEFORE INSERT ON counted_keys
    FOR EACH STATEMENT EXECUTE FUNCTION earshot_keys_moved();
CREATE TRIGGER keys_moved BEFORE INSERT ON daily_listeners
    FOR EACH STATEMENT EXECUTE FUNCTION earshot_keys_moved();

-- The open days, and the ones the loader makes ahead, get their partitions
-- now with their keys; other days are rebuilt from events when needed.
DO $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
BEGIN
    FOR d IN
        SELECT generate_series(today - 2, today + 3, interval '1 day')::date
        UNION
        SELECT DISTINCT day FROM counted_keys WHERE day >= today - 2
        UNION
        SELECT DISTINCT day FROM daily_listeners WHERE day >= today - 2
    LOOP
        EXECUTE format('CREATE TABLE counting_keys_p%s PARTITION OF counting_keys FOR VALUES FROM (%L) TO (%L)',
                       to_char(d, 'YYYYMMDD'), d, d + 1);
        EXECUTE format('CREATE TABLE listener_keys_p%s PARTITION OF listener_keys FOR VALUES FROM (%L) TO (%L)',
                       to_char(d, 'YYYYMMDD'), d, d + 1);
    END LOOP;
    INSERT INTO counting_keys SELECT DISTINCT day, key FROM counted_keys WHERE day >= today - 2;
    INSERT INTO listener_keys SELECT DISTINCT day, key FROM daily_listeners WHERE day >= today - 2;
END $$;
