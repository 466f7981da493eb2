-- rollup_daily summed over aligned blocks of 2, 4, 8 … 128 UTC days, so a
-- total over a long range reads a handful of blocks instead of every day:
-- [from, to) splits into at most ~2·log2(days) aligned blocks (single days
-- come from rollup_daily). A 90-day total grouped by creative and country
-- reads ~12 blocks × creatives × countries rows instead of 90 × …
--
-- A block of `span_days` days starts on a day whose distance from
-- 1970-01-01 is a multiple of span_days. The loader keeps it in the same
-- statement as rollup_daily, from the same new rows; `earshot verify`
-- checks each block equals the sum of its days in rollup_daily.
CREATE TABLE rollup_blocks (
    campaign         text NOT NULL,
    span_days        integer NOT NULL CHECK (span_days IN (2, 4, 8, 16, 32, 64, 128)),
    first_day        date NOT NULL CHECK ((first_day - DATE '1970-01-01') % span_days = 0),
    creative         text NOT NULL,
    country          text NOT NULL,
    raw_hits         bigint NOT NULL DEFAULT 0,
    bot_hits         bigint NOT NULL DEFAULT 0,
    invalid_hits     bigint NOT NULL DEFAULT 0,
    impressions      bigint NOT NULL DEFAULT 0,
    starts           bigint NOT NULL DEFAULT 0,
    first_quartiles  bigint NOT NULL DEFAULT 0,
    midpoints        bigint NOT NULL DEFAULT 0,
    third_quartiles  bigint NOT NULL DEFAULT 0,
    completes        bigint NOT NULL DEFAULT 0,
    clicks           bigint NOT NULL DEFAULT 0,
    skips            bigint NOT NULL DEFAULT 0,
    errors           bigint NOT NULL DEFAULT 0,
    bot_impressions  bigint NOT NULL DEFAULT 0,
    bot_starts       bigint NOT NULL DEFAULT 0,
    bot_completes    bigint NOT NULL DEFAULT 0,
    bot_clicks       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign, span_days, first_day, creative, country)
);

-- Databases that already hold daily rows get their blocks now.
INSERT INTO rollup_blocks
SELECT campaign, s.span, day - ((day - DATE '1970-01-01') % s.span), creative, country,
       sum(raw_hits), sum(bot_hits), sum(invalid_hits), sum(impressions), sum(starts),
       sum(first_quartiles), sum(midpoints), sum(third_quartiles), sum(completes), sum(clicks),
       sum(skips), sum(errors), sum(bot_impressions), sum(bot_starts), sum(bot_completes), sum(bot_clicks)
FROM rollup_daily CROSS JOIN (VALUES (2), (4), (8), (16), (32), (64), (128)) AS s (span)
GROUP BY 1, 2, 3, 4, 5;
