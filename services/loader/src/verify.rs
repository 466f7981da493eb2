//! Recounts from the raw `events` table, independently of the loader's
//! incremental bookkeeping, and compares with the rollups and uniques. Used
//! by the tests and by `earshot verify` (an operator's audit).
//!
//! The rollups attribute a counted event to the hour of its first
//! occurrence, so the comparison is per UTC day, where the counting rule
//! makes the number exact: distinct (campaign, creative, episode, event,
//! listener) among valid events of that day.

use sqlx::PgPool;

/// One (campaign, creative, episode, event, day) whose numbers disagree.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Mismatch {
    pub what: String,
    pub key: String,
    pub from_events: i64,
    pub from_rollups: i64,
}

const RECOUNT: &str = "
WITH raw AS (
    SELECT coalesce(campaign, '') AS campaign, coalesce(creative, '') AS creative,
           coalesce(episode, '') AS episode, coalesce(event, '') AS event,
           (ts AT TIME ZONE 'UTC')::date AS day,
           count(*) AS raw_hits,
           count(DISTINCT listener) FILTER (WHERE verdict = 'valid') AS counted_hits,
           count(*) FILTER (WHERE verdict = 'bot') AS bot_hits,
           count(*) FILTER (WHERE verdict = 'invalid') AS invalid_hits
    FROM events
    WHERE $1::text IS NULL OR campaign = $1
    GROUP BY 1, 2, 3, 4, 5
), rolled AS (
    SELECT campaign, creative, episode, event, (hour AT TIME ZONE 'UTC')::date AS day,
           sum(raw_hits)::bigint AS raw_hits, sum(counted_hits)::bigint AS counted_hits,
           sum(bot_hits)::bigint AS bot_hits, sum(invalid_hits)::bigint AS invalid_hits
    FROM rollup_hourly
    WHERE $1::text IS NULL OR campaign = $1
    GROUP BY 1, 2, 3, 4, 5
), joined AS (
    SELECT concat_ws('/', coalesce(r.campaign, o.campaign), coalesce(r.creative, o.creative),
                     coalesce(r.episode, o.episode), coalesce(r.event, o.event),
                     coalesce(r.day, o.day)::text) AS key,
           coalesce(r.raw_hits, 0) AS e_raw, coalesce(o.raw_hits, 0) AS o_raw,
           coalesce(r.counted_hits, 0) AS e_counted, coalesce(o.counted_hits, 0) AS o_counted,
           coalesce(r.bot_hits, 0) AS e_bot, coalesce(o.bot_hits, 0) AS o_bot,
           coalesce(r.invalid_hits, 0) AS e_invalid, coalesce(o.invalid_hits, 0) AS o_invalid
    FROM raw r FULL JOIN rolled o
      ON (r.campaign, r.creative, r.episode, r.event, r.day) = (o.campaign, o.creative, o.episode, o.event, o.day)
)
SELECT 'raw_hits' AS what, key, e_raw AS from_events, o_raw AS from_rollups FROM joined WHERE e_raw <> o_raw
UNION ALL SELECT 'counted_hits', key, e_counted, o_counted FROM joined WHERE e_counted <> o_counted
UNION ALL SELECT 'bot_hits', key, e_bot, o_bot FROM joined WHERE e_bot <> o_bot
UNION ALL SELECT 'invalid_hits', key, e_invalid, o_invalid FROM joined WHERE e_invalid <> o_invalid
ORDER BY 1, 2";

const RECOUNT_UNIQUES: &str = "
WITH raw AS (
    SELECT campaign, creative, (ts AT TIME ZONE 'UTC')::date AS day, count(DISTINCT listener) AS n
    FROM events WHERE verdict = 'valid' AND event = 'impression' AND ($1::text IS NULL OR campaign = $1)
    GROUP BY GROUPING SETS ((campaign, day), (campaign, creative, day))
), raw2 AS (
    SELECT campaign, coalesce(creative, '') AS creative, day, n FROM raw
), stored AS (
    SELECT campaign, creative, day, listeners AS n FROM daily_uniques WHERE $1::text IS NULL OR campaign = $1
)
SELECT 'unique_listeners' AS what,
       concat_ws('/', coalesce(r.campaign, s.campaign), coalesce(r.creative, s.creative), coalesce(r.day, s.day)::text) AS key,
       coalesce(r.n, 0) AS from_events, coalesce(s.n, 0) AS from_rollups
FROM raw2 r FULL JOIN stored s ON (r.campaign, r.creative, r.day) = (s.campaign, s.creative, s.day)
WHERE coalesce(r.n, 0) <> coalesce(s.n, 0)
ORDER BY 2";

/// The daily creative x country table against the hourly rollups.
const RECOUNT_DAILY: &str = "
WITH h AS (
    SELECT campaign, (hour AT TIME ZONE 'UTC')::date AS day, creative, country,
           coalesce(sum(raw_hits), 0)::bigint AS raw_hits,
           coalesce(sum(bot_hits), 0)::bigint AS bot_hits,
           coalesce(sum(invalid_hits), 0)::bigint AS invalid_hits,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'impression'), 0)::bigint AS impressions,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'start'), 0)::bigint AS starts,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'firstQuartile'), 0)::bigint AS first_quartiles,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'midpoint'), 0)::bigint AS midpoints,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'thirdQuartile'), 0)::bigint AS third_quartiles,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'complete'), 0)::bigint AS completes,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'click'), 0)::bigint AS clicks,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'skip'), 0)::bigint AS skips,
           coalesce(sum(counted_hits) FILTER (WHERE event = 'error'), 0)::bigint AS errors,
           coalesce(sum(bot_hits) FILTER (WHERE event = 'impression'), 0)::bigint AS bot_impressions,
           coalesce(sum(bot_hits) FILTER (WHERE event = 'start'), 0)::bigint AS bot_starts,
           coalesce(sum(bot_hits) FILTER (WHERE event = 'complete'), 0)::bigint AS bot_completes,
           coalesce(sum(bot_hits) FILTER (WHERE event = 'click'), 0)::bigint AS bot_clicks
    FROM rollup_hourly WHERE $1::text IS NULL OR campaign = $1 GROUP BY 1, 2, 3, 4
), d AS (
    SELECT * FROM rollup_daily WHERE $1::text IS NULL OR campaign = $1
)
SELECT 'daily_rollup' AS what,
       concat_ws('/', coalesce(h.campaign, d.campaign), coalesce(h.creative, d.creative), coalesce(h.country, d.country),
                 coalesce(h.day, d.day)::text) AS key,
       coalesce(h.raw_hits, 0) AS from_events,
       coalesce(d.raw_hits, 0) AS from_rollups
FROM h FULL JOIN d ON (h.campaign, h.day, h.creative, h.country) = (d.campaign, d.day, d.creative, d.country)
WHERE h.raw_hits IS DISTINCT FROM d.raw_hits OR h.bot_hits IS DISTINCT FROM d.bot_hits OR h.invalid_hits IS DISTINCT FROM d.invalid_hits OR h.impressions IS DISTINCT FROM d.impressions OR h.starts IS DISTINCT FROM d.starts OR h.first_quartiles IS DISTINCT FROM d.first_quartiles OR h.midpoints IS DISTINCT FROM d.midpoints OR h.third_quartiles IS DISTINCT FROM d.third_quartiles OR h.completes IS DISTINCT FROM d.completes OR h.clicks IS DISTINCT FROM d.clicks OR h.skips IS DISTINCT FROM d.skips OR h.errors IS DISTINCT FROM d.errors OR h.bot_impressions IS DISTINCT FROM d.bot_impressions OR h.bot_starts IS DISTINCT FROM d.bot_starts OR h.bot_completes IS DISTINCT FROM d.bot_completes OR h.bot_clicks IS DISTINCT FROM d.bot_clicks
ORDER BY 2";

/// Each multi-day block against the sum of its days in the daily table, up
/// to the last day the blocks hold.
const RECOUNT_BLOCKS: &str = "
WITH d AS (
    SELECT campaign, s.span AS span_days, day - ((day - DATE '1970-01-01') % s.span) AS first_day, creative, country,
           sum(raw_hits)::bigint AS raw_hits,
           sum(bot_hits)::bigint AS bot_hits,
           sum(invalid_hits)::bigint AS invalid_hits,
           sum(impressions)::bigint AS impressions,
           sum(starts)::bigint AS starts,
           sum(first_quartiles)::bigint AS first_quartiles,
           sum(midpoints)::bigint AS midpoints,
           sum(third_quartiles)::bigint AS third_quartiles,
           sum(completes)::bigint AS completes,
           sum(clicks)::bigint AS clicks,
           sum(skips)::bigint AS skips,
           sum(errors)::bigint AS errors,
           sum(bot_impressions)::bigint AS bot_impressions,
           sum(bot_starts)::bigint AS bot_starts,
           sum(bot_completes)::bigint AS bot_completes,
           sum(bot_clicks)::bigint AS bot_clicks
    FROM rollup_daily CROSS JOIN (VALUES (2), (4), (8), (16), (32), (64), (128)) AS s (span)
    WHERE ($1::text IS NULL OR campaign = $1)
      -- Blocks hold the days up to the mark only (migration 10).
      AND day <= (SELECT blocks_through FROM counting_state)
    GROUP BY 1, 2, 3, 4, 5
), b AS (
    SELECT * FROM rollup_blocks WHERE $1::text IS NULL OR campaign = $1
)
SELECT 'day_blocks' AS what,
       concat_ws('/', coalesce(d.campaign, b.campaign), coalesce(d.creative, b.creative), coalesce(d.country, b.country),
                 coalesce(d.first_day, b.first_day)::text, coalesce(d.span_days, b.span_days)::text || 'd') AS key,
       coalesce(d.raw_hits, 0) AS from_events,
       coalesce(b.raw_hits, 0) AS from_rollups
FROM d FULL JOIN b ON (d.campaign, d.span_days, d.first_day, d.creative, d.country) = (b.campaign, b.span_days, b.first_day, b.creative, b.country)
WHERE ROW(d.raw_hits, d.bot_hits, d.invalid_hits, d.impressions, d.starts, d.first_quartiles, d.midpoints, d.third_quartiles, d.completes, d.clicks, d.skips, d.errors, d.bot_impressions, d.bot_starts, d.bot_completes, d.bot_clicks) IS DISTINCT FROM ROW(b.raw_hits, b.bot_hits, b.invalid_hits, b.impressions, b.starts, b.first_quartiles, b.midpoints, b.third_quartiles, b.completes, b.clicks, b.skips, b.errors, b.bot_impressions, b.bot_starts, b.bot_completes, b.bot_clicks)
ORDER BY 2";

/// Keys stored more than once. Nothing in the schema forbids it since
/// migration 8 (the loader decides what is new, `counting/memory.rs`), so the audit
/// checks it: `from_events` is 1, `from_rollups` the copies found. Keys are
/// hashes, so this runs only over the whole database.
const DUPLICATE_KEYS: &str = "
SELECT 'duplicate_key' AS what, concat_ws('/', t, day::text, key::text) AS key,
       1::bigint AS from_events, n AS from_rollups
FROM (SELECT 'counted_keys' AS t, day, key, count(*) AS n FROM counted_keys
      GROUP BY 1, 2, 3 HAVING count(*) > 1
      UNION ALL
      SELECT 'daily_listeners', day, key, count(*) FROM daily_listeners
      GROUP BY 1, 2, 3 HAVING count(*) > 1) d
ORDER BY 2";

/// Every disagreement between raw events and the rollups/uniques (empty
/// when the books balance), optionally for one campaign; for the whole
/// database, also every counting or listener key stored twice.
pub async fn verify(pool: &PgPool, campaign: Option<&str>) -> Result<Vec<Mismatch>, sqlx::Error> {
    let mut out: Vec<Mismatch> = sqlx::query_as(RECOUNT)
        .bind(campaign)
        .fetch_all(pool)
        .await?;
    out.extend(
        sqlx::query_as::<_, Mismatch>(RECOUNT_UNIQUES)
            .bind(campaign)
            .fetch_all(pool)
            .await?,
    );
    for check in [RECOUNT_DAILY, RECOUNT_BLOCKS] {
        out.extend(
            sqlx::query_as::<_, Mismatch>(check)
                .bind(campaign)
                .fetch_all(pool)
                .await?,
        );
    }
    if campaign.is_none() {
        out.extend(
            sqlx::query_as::<_, Mismatch>(DUPLICATE_KEYS)
                .fetch_all(pool)
                .await?,
        );
    }
    Ok(out)
}
