-- An object whose load failed is loaded again in parts (docs/COUNTING.md,
-- "Loads that keep failing"). One transaction per object costs more as the
-- day grows (its keys land all over the day's key indexes): at 5 million
-- events loaded that day, one 20,000-event object took 2.4 s, and a loader
-- killed every 1–2 s (an OOM loop, a node that keeps dying) never
-- committed one (docs/BENCHMARKS.md, "Scale envelope"). A load that was
-- tried before and did not commit goes in parts of a few thousand events,
-- one transaction each, so every life of the loader commits some.
--
-- `load_attempts`: each object's tries, counted in a statement of their
-- own before its transaction begins, so a try that never commits is still
-- counted. The row goes when the object is in `loaded_objects`.
CREATE TABLE load_attempts (
    source     text NOT NULL,
    object_key text NOT NULL,
    etag       text NOT NULL,
    attempts   integer NOT NULL DEFAULT 1,
    first_at   timestamptz NOT NULL DEFAULT now(),
    last_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, object_key, etag)
);

-- `loaded_object_parts`: the parts of an object committed so far. A part
-- is the object's events whose listener hashes to it, so every key the
-- counting rule decides (each holds a listener) is decided within one
-- part, as the whole object would have decided it. The object enters
-- `loaded_objects` with its last part, under the id its parts' events,
-- quarantined lines and sequence ranges already carry (`object_id`, taken
-- from `loaded_objects`' own sequence by the first part), with the sums of
-- the parts' counts; the parts' rows go then.
--
-- Until then an object is not in `loaded_objects`, so a loader of an
-- earlier version (a rollout's overlap) that meets it loads it whole:
-- its events already stored are found by id and left out, and nothing is
-- counted twice.
CREATE TABLE loaded_object_parts (
    source       text NOT NULL,
    object_key   text NOT NULL,
    etag         text NOT NULL,
    part         smallint NOT NULL,
    parts        smallint NOT NULL,
    object_id    bigint NOT NULL,
    lines        integer NOT NULL DEFAULT 0,
    events       integer NOT NULL DEFAULT 0,
    new_events   integer NOT NULL DEFAULT 0,
    duplicates   integer NOT NULL DEFAULT 0,
    quarantined  integer NOT NULL DEFAULT 0,
    max_event_ts timestamptz,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, object_key, etag, part),
    CHECK (part >= 0 AND part < parts)
);
