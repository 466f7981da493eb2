-- The breakdown advertisers ask for most (by creative and by country), per
-- UTC day. A 90-day report grouped by creative and country reads
-- 90 x creatives x countries x kinds rows here instead of every hourly row
-- of every dimension. Kept by the loader in the same transaction as
-- rollup_hourly, from the same new rows; `earshot verify` checks they agree.
CREATE TABLE rollup_daily (
    campaign      text NOT NULL,
    day           date NOT NULL,
    creative      text NOT NULL,
    country       text NOT NULL,
    event         text NOT NULL,
    raw_hits      bigint NOT NULL,
    counted_hits  bigint NOT NULL,
    bot_hits      bigint NOT NULL,
    invalid_hits  bigint NOT NULL,
    PRIMARY KEY (campaign, day, creative, country, event)
);
