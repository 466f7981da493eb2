-- Loading: the ledger of objects, the raw events, quarantine, and the
-- counting tables. Everything the loader writes for one object is written in
-- one transaction.

-- Every object loaded, once. (source, object_key, etag) is unique: the same
-- object delivered twice (SQS redelivery, a replay) is skipped.
CREATE TABLE loaded_objects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,        -- s3://bucket or dir:/path
    object_key   text NOT NULL,
    etag         text NOT NULL,        -- S3 ETag, or sha256 of a local file
    bytes        bigint NOT NULL,
    lines        integer NOT NULL DEFAULT 0,
    events       integer NOT NULL DEFAULT 0,  -- parsed events
    new_events   integer NOT NULL DEFAULT 0,  -- events not seen before
    duplicates   integer NOT NULL DEFAULT 0,  -- events already loaded (by id)
    quarantined  integer NOT NULL DEFAULT 0,
    max_event_ts timestamptz,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, object_key, etag)
);

-- Every loaded event, as the edge wrote it, partitioned by UTC day of ts.
-- Partitions are created ahead of need by the loader (and on demand for
-- replays of old days) and dropped after the retention period.
-- Unique by event id: ids are UUIDv7 whose timestamp is ts (checked when
-- decoding), so (id, ts) unique means id unique.
CREATE TABLE events (
    id          uuid NOT NULL,
    ts          timestamptz NOT NULL,
    campaign    text,            -- as sent; NULL only for invalid hits whose c= was unusable
    creative    text,
    episode     text,
    show        text,
    placement   text,
    event       text,
    error_code  integer,
    listener    text NOT NULL,
    ua          text,
    app         text,
    device      text,
    os          text,
    country     text,
    verdict     text NOT NULL CHECK (verdict IN ('valid', 'bot', 'invalid')),
    reason      text,
    trace_id    text,
    object_id   bigint NOT NULL,  -- loaded_objects.id it came from (no FK: partitions are dropped by age)
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);

-- Lines that could not be decoded, with why, and where they came from.
CREATE TABLE quarantine (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object_id       bigint NOT NULL REFERENCES loaded_objects (id),
    line_no         integer NOT NULL,
    raw_line        bytea NOT NULL,
    reason          text NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_object_idx ON quarantine (object_id);

-- The counting rule: a valid event counts once per (campaign, creative,
-- episode, event, listener, UTC day). `key` is a 128-bit hash of those
-- fields (computed by the loader); a key present here has been counted.
CREATE TABLE counted_keys (
    day  date NOT NULL,
    key  uuid NOT NULL,
    PRIMARY KEY (day, key)
) PARTITION BY RANGE (day);

-- Daily unique listeners: a listener heard a campaign (creative = '') or a
-- creative on a day if it has a valid impression. Listener ids rotate every
-- UTC day by design, so uniques are per day. `key` hashes (campaign,
-- creative, listener).
CREATE TABLE daily_listeners (
    day  date NOT NULL,
    key  uuid NOT NULL,
    PRIMARY KEY (day, key)
) PARTITION BY RANGE (day);

CREATE TABLE daily_uniques (
    day        date NOT NULL,
    campaign   text NOT NULL,
    creative   text NOT NULL,   -- '' for the whole campaign
    listeners  bigint NOT NULL,
    PRIMARY KEY (campaign, day, creative)
);

-- Hourly rollups over every reporting dimension. Missing dimensions are ''
-- (not NULL) so they take part in the primary key.
CREATE TABLE rollup_hourly (
    campaign      text NOT NULL,
    hour          timestamptz NOT NULL,
    creative      text NOT NULL,
    episode       text NOT NULL,
    show          text NOT NULL,
    placement     text NOT NULL,
    event         text NOT NULL,
    country       text NOT NULL,
    app           text NOT NULL,
    device        text NOT NULL,
    raw_hits      bigint NOT NULL,   -- every hit
    counted_hits  bigint NOT NULL,   -- valid and first of its counting key
    bot_hits      bigint NOT NULL,
    invalid_hits  bigint NOT NULL,
    PRIMARY KEY (campaign, hour, creative, episode, show, placement, event, country, app, device)
);

-- Bumped in the load transaction for every campaign a load touched, so a
-- cached report keyed by (query, version) is invalidated exactly when its
-- campaign's numbers change.
CREATE TABLE campaign_data_versions (
    campaign    text PRIMARY KEY,
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
