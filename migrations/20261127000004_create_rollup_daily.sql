-- The breakdown advertisers ask for most (by creative and by country), per
-- UTC day, one wide row per (campaign, day, creative, country) with a column
-- per event kind. A 90-day report grouped by creative and country reads
-- 90 x creatives x countries rows here instead of every hourly row of every
-- dimension and kind. Kept by the loader in the same transaction as
-- rollup_hourly, from the same new rows; `earshot verify` checks they agree.
CREATE TABLE rollup_daily (
    campaign         text NOT NULL,
    day              date NOT NULL,
    creative         text NOT NULL,
    country          text NOT NULL,
    raw_hits         bigint NOT NULL DEFAULT 0,
    bot_hits         bigint NOT NULL DEFAULT 0,
    invalid_hits     bigint NOT NULL DEFAULT 0,
    -- counted (valid, deduplicated) events per kind
    impressions      bigint NOT NULL DEFAULT 0,
    starts           bigint NOT NULL DEFAULT 0,
    first_quartiles  bigint NOT NULL DEFAULT 0,
    midpoints        bigint NOT NULL DEFAULT 0,
    third_quartiles  bigint NOT NULL DEFAULT 0,
    completes        bigint NOT NULL DEFAULT 0,
    clicks           bigint NOT NULL DEFAULT 0,
    skips            bigint NOT NULL DEFAULT 0,
    errors           bigint NOT NULL DEFAULT 0,
    -- bot hits of the kinds `include_bots=true` shows
    bot_impressions  bigint NOT NULL DEFAULT 0,
    bot_starts       bigint NOT NULL DEFAULT 0,
    bot_completes    bigint NOT NULL DEFAULT 0,
    bot_clicks       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign, day, creative, country)
);
