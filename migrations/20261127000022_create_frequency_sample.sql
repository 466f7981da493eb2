-- Frequency: per campaign and UTC day, the counted impressions of each
-- listener of a fixed 1-in-64 sample (by the listener id's sketch hash,
-- earshot_platform::sketch::in_frequency_sample), from which the API's
-- frequency distribution is scaled up (docs/COUNTING.md, "Reach and
-- frequency"). Written by the loader in the same transaction as the
-- rollups, from the same counted impressions; sorted upserts, as
-- daily_uniques. Kept with the rollups after the raw events are dropped.
CREATE TABLE frequency_sample (
    campaign    text NOT NULL,
    day         date NOT NULL,
    listener    text NOT NULL,
    impressions bigint NOT NULL,
    PRIMARY KEY (campaign, day, listener)
);
