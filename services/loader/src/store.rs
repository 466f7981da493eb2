//! One object, one transaction: claim it in the ledger, stage its events
//! with COPY, insert the new ones, count, roll up, and commit.

use std::fmt::Write as _;

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use crate::parse::{Parsed, Staged};

/// Where an object came from, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// `s3://bucket` or `dir:/path`.
    pub source: String,
    pub key: String,
    /// S3 ETag, or the sha256 of a local file.
    pub etag: String,
    pub bytes: u64,
}

/// What loading one object did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// False when the object was already in the ledger (nothing written).
    pub loaded: bool,
    pub ledger_id: i64,
    pub lines: u32,
    pub events: u32,
    pub new_events: u32,
    /// Events already loaded before (by id), plus repeats within the object.
    pub duplicates: u32,
    pub quarantined: u32,
    /// Newly counted events (the billable delta of this load).
    pub counted: u32,
}

/// Is (source, key, etag) already loaded? A cheap check before downloading.
pub async fn already_loaded(
    pool: &PgPool,
    source: &str,
    key: &str,
    etag: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM loaded_objects WHERE source = $1 AND object_key = $2 AND etag = $3",
    )
    .bind(source)
    .bind(key)
    .bind(etag)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Writes `s` escaped for COPY's text format.
fn copy_text(out: &mut String, s: Option<&str>) {
    match s {
        None => out.push_str("\\N"),
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn copy_rows(events: &[Staged]) -> String {
    let mut out = String::with_capacity(events.len() * 420);
    for s in events {
        let e = &s.event;
        let ts = earshot_domain::event::format_ts(e.ts);
        let hour = format!("{}:00:00Z", &ts[..13]);
        let _ = write!(out, "{}\t{}\t{}\t", e.id, ts, hour);
        copy_text(&mut out, e.campaign.as_ref().map(|x| x.as_str()));
        out.push('\t');
        copy_text(&mut out, e.creative.as_ref().map(|x| x.as_str()));
        out.push('\t');
        copy_text(&mut out, e.episode.as_ref().map(|x| x.as_str()));
        out.push('\t');
        copy_text(&mut out, e.show.as_ref().map(|x| x.as_str()));
        out.push('\t');
        copy_text(&mut out, e.placement.map(|x| x.as_str()));
        out.push('\t');
        copy_text(&mut out, e.event.map(|x| x.as_str()));
        out.push('\t');
        match e.error_code {
            Some(c) => {
                let _ = write!(out, "{c}");
            }
            None => out.push_str("\\N"),
        }
        out.push('\t');
        copy_text(&mut out, Some(e.listener.as_str()));
        for f in [&e.ua, &e.app, &e.device, &e.os] {
            out.push('\t');
            copy_text(&mut out, f.as_deref());
        }
        out.push('\t');
        copy_text(&mut out, e.country.as_ref().map(|c| c.as_str()));
        out.push('\t');
        out.push_str(e.verdict.as_str());
        out.push('\t');
        copy_text(&mut out, e.reason.as_deref());
        out.push('\t');
        copy_text(&mut out, e.trace_id.as_deref());
        for k in [s.count_key, s.uniq_campaign_key, s.uniq_creative_key] {
            out.push('\t');
            match k {
                Some(k) => {
                    let _ = write!(out, "{k}");
                }
                None => out.push_str("\\N"),
            }
        }
        out.push('\n');
    }
    out
}

const CREATE_STAGE: &str = "CREATE TEMP TABLE stage (
    id uuid NOT NULL, ts timestamptz NOT NULL, hour timestamptz NOT NULL,
    campaign text, creative text, episode text, show text, placement text, event text,
    error_code integer, listener text NOT NULL, ua text, app text, device text, os text,
    country text, verdict text NOT NULL, reason text, trace_id text,
    count_key uuid, uniq_campaign_key uuid, uniq_creative_key uuid
) ON COMMIT DROP";

/// Rows of `stage` that were really new, and which of them counted.
const CREATE_FRESH: &str = "CREATE TEMP TABLE fresh (id uuid PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE counted (id uuid PRIMARY KEY) ON COMMIT DROP";

const INSERT_EVENTS: &str = "WITH ins AS (
    INSERT INTO events (id, ts, campaign, creative, episode, show, placement, event, error_code,
                        listener, ua, app, device, os, country, verdict, reason, trace_id, object_id)
    SELECT id, ts, campaign, creative, episode, show, placement, event, error_code,
           listener, ua, app, device, os, country, verdict, reason, trace_id, $1
    FROM stage ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING id
) INSERT INTO fresh SELECT id FROM ins";

/// The counting rule: among new valid events, the earliest per key counts
/// unless the key was counted before (by an earlier load or another loader
/// that committed first: the unique index makes the second one wait, then
/// skip).
const INSERT_COUNTED: &str = "WITH cand AS (
    SELECT DISTINCT ON (day, s.count_key) s.count_key, (s.ts AT TIME ZONE 'UTC')::date AS day, s.id
    FROM stage s JOIN fresh f USING (id)
    WHERE s.count_key IS NOT NULL
    ORDER BY day, s.count_key, s.ts, s.id
), ins AS (
    INSERT INTO counted_keys (day, key)
    SELECT day, count_key FROM cand ORDER BY day, count_key
    ON CONFLICT DO NOTHING
    RETURNING day, key
) INSERT INTO counted SELECT c.id FROM cand c JOIN ins i ON i.key = c.count_key AND i.day = c.day";

const UPSERT_ROLLUPS: &str = "INSERT INTO rollup_hourly AS r
    (campaign, hour, creative, episode, show, placement, event, country, app, device,
     raw_hits, counted_hits, bot_hits, invalid_hits)
SELECT coalesce(s.campaign, ''), s.hour, coalesce(s.creative, ''), coalesce(s.episode, ''),
       coalesce(s.show, ''), coalesce(s.placement, ''), coalesce(s.event, ''),
       coalesce(s.country, ''), coalesce(s.app, ''), coalesce(s.device, ''),
       count(*), count(c.id),
       count(*) FILTER (WHERE s.verdict = 'bot'), count(*) FILTER (WHERE s.verdict = 'invalid')
FROM stage s JOIN fresh f USING (id) LEFT JOIN counted c USING (id)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
ON CONFLICT (campaign, hour, creative, episode, show, placement, event, country, app, device) DO UPDATE SET
    raw_hits = r.raw_hits + EXCLUDED.raw_hits,
    counted_hits = r.counted_hits + EXCLUDED.counted_hits,
    bot_hits = r.bot_hits + EXCLUDED.bot_hits,
    invalid_hits = r.invalid_hits + EXCLUDED.invalid_hits";

/// The metric columns `rollup_daily` and `rollup_blocks` share, in order.
macro_rules! daily_metric_columns {
    () => {
        "raw_hits, bot_hits, invalid_hits, impressions, starts, first_quartiles, midpoints, third_quartiles, completes, clicks, skips, errors, bot_impressions, bot_starts, bot_completes, bot_clicks"
    };
}

/// ON CONFLICT: add the new counts to the stored ones, for every metric.
macro_rules! add_daily_metrics {
    () => {
        "    raw_hits = r.raw_hits + EXCLUDED.raw_hits,
    bot_hits = r.bot_hits + EXCLUDED.bot_hits,
    invalid_hits = r.invalid_hits + EXCLUDED.invalid_hits,
    impressions = r.impressions + EXCLUDED.impressions,
    starts = r.starts + EXCLUDED.starts,
    first_quartiles = r.first_quartiles + EXCLUDED.first_quartiles,
    midpoints = r.midpoints + EXCLUDED.midpoints,
    third_quartiles = r.third_quartiles + EXCLUDED.third_quartiles,
    completes = r.completes + EXCLUDED.completes,
    clicks = r.clicks + EXCLUDED.clicks,
    skips = r.skips + EXCLUDED.skips,
    errors = r.errors + EXCLUDED.errors,
    bot_impressions = r.bot_impressions + EXCLUDED.bot_impressions,
    bot_starts = r.bot_starts + EXCLUDED.bot_starts,
    bot_completes = r.bot_completes + EXCLUDED.bot_completes,
    bot_clicks = r.bot_clicks + EXCLUDED.bot_clicks"
    };
}

/// The new rows per (campaign, day, creative, country), added to
/// `rollup_daily` and to every aligned block of `rollup_blocks` holding that
/// day (data-modifying CTEs always run to completion, read or not).
const UPSERT_DAILY: &str = concat!(
    "WITH d AS (
    SELECT coalesce(s.campaign, '') AS campaign, (s.ts AT TIME ZONE 'UTC')::date AS day,
           coalesce(s.creative, '') AS creative, coalesce(s.country, '') AS country,
           count(*) AS raw_hits,
           count(*) FILTER (WHERE s.verdict = 'bot') AS bot_hits,
           count(*) FILTER (WHERE s.verdict = 'invalid') AS invalid_hits,
           count(c.id) FILTER (WHERE s.event = 'impression') AS impressions,
           count(c.id) FILTER (WHERE s.event = 'start') AS starts,
           count(c.id) FILTER (WHERE s.event = 'firstQuartile') AS first_quartiles,
           count(c.id) FILTER (WHERE s.event = 'midpoint') AS midpoints,
           count(c.id) FILTER (WHERE s.event = 'thirdQuartile') AS third_quartiles,
           count(c.id) FILTER (WHERE s.event = 'complete') AS completes,
           count(c.id) FILTER (WHERE s.event = 'click') AS clicks,
           count(c.id) FILTER (WHERE s.event = 'skip') AS skips,
           count(c.id) FILTER (WHERE s.event = 'error') AS errors,
           count(*) FILTER (WHERE s.verdict = 'bot' AND s.event = 'impression') AS bot_impressions,
           count(*) FILTER (WHERE s.verdict = 'bot' AND s.event = 'start') AS bot_starts,
           count(*) FILTER (WHERE s.verdict = 'bot' AND s.event = 'complete') AS bot_completes,
           count(*) FILTER (WHERE s.verdict = 'bot' AND s.event = 'click') AS bot_clicks
    FROM stage s JOIN fresh f USING (id) LEFT JOIN counted c USING (id)
    GROUP BY 1, 2, 3, 4
), daily AS (
    INSERT INTO rollup_daily AS r
        (campaign, day, creative, country, ",
    daily_metric_columns!(),
    ")
    SELECT * FROM d ORDER BY 1, 2, 3, 4
    ON CONFLICT (campaign, day, creative, country) DO UPDATE SET
",
    add_daily_metrics!(),
    "
)
INSERT INTO rollup_blocks AS r
    (campaign, span_days, first_day, creative, country, ",
    daily_metric_columns!(),
    ")
SELECT d.campaign, b.span, d.day - ((d.day - DATE '1970-01-01') % b.span), d.creative, d.country,
       sum(raw_hits), sum(bot_hits), sum(invalid_hits), sum(impressions), sum(starts), sum(first_quartiles), sum(midpoints), sum(third_quartiles), sum(completes), sum(clicks), sum(skips), sum(errors), sum(bot_impressions), sum(bot_starts), sum(bot_completes), sum(bot_clicks)
FROM d CROSS JOIN (VALUES (2), (4), (8), (16), (32), (64), (128)) AS b (span)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (campaign, span_days, first_day, creative, country) DO UPDATE SET
",
    add_daily_metrics!()
);

const UPSERT_UNIQUES: &str = "WITH cand AS (
    SELECT (s.ts AT TIME ZONE 'UTC')::date AS day, s.campaign, '' AS creative, s.uniq_campaign_key AS key
    FROM stage s JOIN fresh f USING (id) WHERE s.uniq_campaign_key IS NOT NULL
    UNION ALL
    SELECT (s.ts AT TIME ZONE 'UTC')::date, s.campaign, s.creative, s.uniq_creative_key
    FROM stage s JOIN fresh f USING (id) WHERE s.uniq_creative_key IS NOT NULL
), dedup AS (
    SELECT DISTINCT ON (day, key) day, campaign, creative, key FROM cand ORDER BY day, key
), ins AS (
    INSERT INTO daily_listeners (day, key) SELECT day, key FROM dedup ORDER BY day, key
    ON CONFLICT DO NOTHING RETURNING day, key
)
INSERT INTO daily_uniques AS u (day, campaign, creative, listeners)
SELECT d.day, d.campaign, d.creative, count(*) FROM dedup d JOIN ins i USING (day, key)
GROUP BY 1, 2, 3 ORDER BY 2, 1, 3
ON CONFLICT (campaign, day, creative) DO UPDATE SET listeners = u.listeners + EXCLUDED.listeners";

/// Bumps the data version of every campaign the load touched, and tells the
/// API replicas (delivered when the transaction commits).
const BUMP_VERSIONS: &str = "WITH bumped AS (
    INSERT INTO campaign_data_versions AS v (campaign, version)
    SELECT DISTINCT s.campaign, 1 FROM stage s JOIN fresh f USING (id) WHERE s.campaign IS NOT NULL ORDER BY 1
    ON CONFLICT (campaign) DO UPDATE SET version = v.version + 1, updated_at = now()
    RETURNING campaign, version
) SELECT count(pg_notify('earshot_changes', 'v ' || campaign || ' ' || version)) FROM bumped";

/// Loads one parsed object in one transaction. Returns `loaded: false`, and
/// writes nothing, when the ledger already has it.
pub async fn load_object(
    pool: &PgPool,
    obj: &ObjectId,
    parsed: &Parsed,
) -> Result<LoadStats, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Claim the object. A concurrent loader with the same object waits here
    // on the unique index until the first commits, then finds it present.
    let claimed: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO loaded_objects (source, object_key, etag, bytes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, object_key, etag) DO NOTHING RETURNING id",
    )
    .bind(&obj.source)
    .bind(&obj.key)
    .bind(&obj.etag)
    .bind(obj.bytes as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((ledger_id,)) = claimed else {
        tx.rollback().await?;
        return Ok(LoadStats::default());
    };

    let mut stats = LoadStats {
        loaded: true,
        ledger_id,
        lines: parsed.lines,
        events: parsed.events.len() as u32 + parsed.duplicates_in_object,
        quarantined: parsed.quarantined.len() as u32,
        ..Default::default()
    };

    if !parsed.events.is_empty() {
        stage(&mut tx, &parsed.events).await?;
        sqlx::raw_sql(CREATE_FRESH).execute(&mut *tx).await?;
        stats.new_events = sqlx::query(INSERT_EVENTS)
            .bind(ledger_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as u32;
        stats.counted = sqlx::query(INSERT_COUNTED)
            .execute(&mut *tx)
            .await?
            .rows_affected() as u32;
        if stats.new_events > 0 {
            sqlx::query(UPSERT_ROLLUPS).execute(&mut *tx).await?;
            sqlx::query(UPSERT_DAILY).execute(&mut *tx).await?;
            sqlx::query(UPSERT_UNIQUES).execute(&mut *tx).await?;
            sqlx::query(BUMP_VERSIONS).execute(&mut *tx).await?;
        }
    }
    stats.duplicates = stats.events - stats.new_events;

    if !parsed.quarantined.is_empty() {
        let line_nos: Vec<i32> = parsed
            .quarantined
            .iter()
            .map(|q| q.line_no as i32)
            .collect();
        let raws: Vec<Vec<u8>> = parsed.quarantined.iter().map(|q| q.raw.clone()).collect();
        let reasons: Vec<String> = parsed
            .quarantined
            .iter()
            .map(|q| q.reason.clone())
            .collect();
        sqlx::query(
            "INSERT INTO quarantine (object_id, line_no, raw_line, reason)
             SELECT $1, * FROM UNNEST($2::int[], $3::bytea[], $4::text[])",
        )
        .bind(ledger_id)
        .bind(&line_nos)
        .bind(&raws)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }

    let max_ts: Option<OffsetDateTime> = parsed.events.iter().map(|s| s.event.ts).max();
    sqlx::query(
        "UPDATE loaded_objects SET lines = $2, events = $3, new_events = $4, duplicates = $5,
                quarantined = $6, max_event_ts = $7 WHERE id = $1",
    )
    .bind(ledger_id)
    .bind(stats.lines as i32)
    .bind(stats.events as i32)
    .bind(stats.new_events as i32)
    .bind(stats.duplicates as i32)
    .bind(stats.quarantined as i32)
    .bind(max_ts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(stats)
}

async fn stage(tx: &mut Transaction<'_, Postgres>, events: &[Staged]) -> Result<(), sqlx::Error> {
    sqlx::query(CREATE_STAGE).execute(&mut **tx).await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY stage (id, ts, hour, campaign, creative, episode, show, placement, event, error_code, \
             listener, ua, app, device, os, country, verdict, reason, trace_id, \
             count_key, uniq_campaign_key, uniq_creative_key) FROM STDIN",
        )
        .await?;
    // Chunks keep memory flat for large objects.
    for chunk in events.chunks(10_000) {
        copy.send(copy_rows(chunk).into_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut s = String::new();
        copy_text(&mut s, Some("a\tb\\c\nd\re"));
        assert_eq!(s, "a\\tb\\\\c\\nd\\re");
        let mut n = String::new();
        copy_text(&mut n, None);
        assert_eq!(n, "\\N");
    }
}
