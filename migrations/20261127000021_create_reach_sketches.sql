-- Reach: per campaign and UTC day, the listeners with a counted impression
-- as a HyperLogLog sketch (earshot_platform::sketch; docs/COUNTING.md,
-- "Reach and frequency"), which reports merge over any range of days.
--
-- `dim` and `value` say which listeners: ('', '') the whole campaign's,
-- ('creative', id) one creative's; other dimensions can join without a
-- migration. Written by the loader in the same transaction as the
-- rollups, from the same counted impressions, merged row by row under
-- the row lock (services/loader/src/store.rs). Like the rollups, kept when
-- the day's raw events pass the retention period.
--
-- `day_ids` and `month_ids` say under which listener period (daily or
-- monthly listener ids) the day's listeners were identified: a union over
-- more than one period is an upper bound of reach.
CREATE TABLE reach_sketches (
    campaign  text NOT NULL,
    day       date NOT NULL,
    dim       text NOT NULL,
    value     text NOT NULL,
    sketch    bytea NOT NULL,
    day_ids   boolean NOT NULL DEFAULT false,
    month_ids boolean NOT NULL DEFAULT false,
    PRIMARY KEY (campaign, day, dim, value)
);
