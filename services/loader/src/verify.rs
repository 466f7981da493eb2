//! Recounts from the raw `events` table, independently of the loader's
//! incremental bookkeeping, and compares with the rollups and uniques. Used
//! by the tests and by `earshot verify` (an operator's audit).
//!
//! The rollups attribute a counted event to the hour of its first
//! occurrence, so the comparison is per UTC day, where the counting rule
//! makes the number exact: distinct (campaign, creative, episode, event,
//! listener) among valid events of that day.
//!
//! Reach sketches and the frequency sample are rebuilt, a kept day at a
//! time, from the day's listeners with a valid impression, and compared
//! whole.
//!
//! Only the days whose raw events PostgreSQL still keeps are recounted
//! here: from the first day of `events`' partitions on (older ones were
//! dropped whole after `EARSHOT_RETENTION_DAYS`). Older days are recounted
//! from S3 with Athena and compared by [`crate::recount`].

use std::sync::LazyLock;

use earshot_domain::metric::{counters, Hits, Registry, METRICS};
use earshot_platform::rollup::{
    block_spans_sql, daily_columns, hourly_column, hourly_sum, HOURLY_HITS,
};
use sqlx::{AssertSqlSafe, PgPool};

use crate::counting::keys::KeyTable;
use crate::partitions::partition_days;

/// One (campaign, creative, episode, event, day) whose numbers disagree.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Mismatch {
    pub what: String,
    pub key: String,
    pub from_events: i64,
    pub from_rollups: i64,
}

/// The hourly rollups against a recount of the events, per (campaign,
/// creative, episode, event, UTC day), one count per `HOURLY_HITS`.
static RECOUNT: LazyLock<String> = LazyLock::new(|| {
    let (mut from_events, mut rolled, mut pairs, mut checks) = (vec![], vec![], vec![], vec![]);
    for hits in HOURLY_HITS {
        let c = hourly_column(hits);
        from_events.push(format!("{} AS {c}", events_count(hits)));
        rolled.push(format!("sum({c})::bigint AS {c}"));
        pairs.push(format!(
            "coalesce(r.{c}, 0) AS e_{c}, coalesce(o.{c}, 0) AS o_{c}"
        ));
        checks.push(format!(
            "SELECT '{c}' AS what, key, e_{c} AS from_events, o_{c} AS from_rollups FROM joined WHERE e_{c} <> o_{c}"
        ));
    }
    format!(
        "
WITH raw AS (
    SELECT coalesce(campaign, '') AS campaign,
           {creative} AS creative, {episode} AS episode, coalesce(event, '') AS event,
           (ts AT TIME ZONE 'UTC')::date AS day,
           {from_events}
    FROM events
    WHERE $1::text IS NULL OR campaign = $1
    GROUP BY 1, 2, 3, 4, 5
), rolled AS (
    SELECT campaign, creative, episode, event, (hour AT TIME ZONE 'UTC')::date AS day,
           {rolled}
    FROM rollup_hourly
    WHERE ($1::text IS NULL OR campaign = $1) AND ($2::timestamptz IS NULL OR hour >= $2)
    GROUP BY 1, 2, 3, 4, 5
), joined AS (
    SELECT concat_ws('/', coalesce(r.campaign, o.campaign), coalesce(r.creative, o.creative),
                     coalesce(r.episode, o.episode), coalesce(r.event, o.event),
                     coalesce(r.day, o.day)::text) AS key,
           {pairs}
    FROM raw r FULL JOIN rolled o
      ON (r.campaign, r.creative, r.episode, r.event, r.day) = (o.campaign, o.creative, o.episode, o.event, o.day)
)
{checks}
ORDER BY 1, 2",
        from_events = from_events.join(",\n           "),
        rolled = rolled.join(", "),
        pairs = pairs.join(",\n           "),
        checks = checks.join("\nUNION ALL "),
        creative = rolled_up_id("creative"),
        episode = rolled_up_id("episode"),
    )
});

/// The id in `column` (creative, episode or show) of a raw event as the
/// rollups hold it: '' when missing, and for an invalid hit, which rolls
/// up under its campaign alone (`counting::rollups::hourly_dims`). SQL
/// that PostgreSQL and Athena both run.
pub(crate) fn rolled_up_id(column: &str) -> String {
    format!("CASE WHEN verdict = 'invalid' THEN '' ELSE coalesce({column}, '') END")
}

/// The counting rule over the raw events of one (campaign, creative,
/// episode, event, UTC day): `hits` as `rollup_hourly` holds them. Standard
/// SQL that PostgreSQL and Athena both run.
pub(crate) const fn events_count(hits: Hits) -> &'static str {
    match hits {
        Hits::All => "count(*)",
        Hits::Counted => "count(DISTINCT listener) FILTER (WHERE verdict = 'valid')",
        Hits::Bot => "count(*) FILTER (WHERE verdict = 'bot')",
        Hits::Invalid => "count(*) FILTER (WHERE verdict = 'invalid')",
    }
}

const RECOUNT_UNIQUES: &str = "
WITH raw AS (
    SELECT campaign, creative, (ts AT TIME ZONE 'UTC')::date AS day, count(DISTINCT listener) AS n
    FROM events WHERE verdict = 'valid' AND event = 'impression' AND ($1::text IS NULL OR campaign = $1)
    GROUP BY GROUPING SETS ((campaign, day), (campaign, creative, day))
), raw2 AS (
    SELECT campaign, coalesce(creative, '') AS creative, day, n FROM raw
), stored AS (
    SELECT campaign, creative, day, listeners AS n FROM daily_uniques
    WHERE ($1::text IS NULL OR campaign = $1) AND ($2::date IS NULL OR day >= $2)
)
SELECT 'unique_listeners' AS what,
       concat_ws('/', coalesce(r.campaign, s.campaign), coalesce(r.creative, s.creative), coalesce(r.day, s.day)::text) AS key,
       coalesce(r.n, 0) AS from_events, coalesce(s.n, 0) AS from_rollups
FROM raw2 r FULL JOIN stored s ON (r.campaign, r.creative, r.day) = (s.campaign, s.creative, s.day)
WHERE coalesce(r.n, 0) <> coalesce(s.n, 0)
ORDER BY 2";

/// A day's counted impressions, one per counting key (campaign, creative,
/// episode, listener): a valid impression counts when it is the first of
/// its key, and every key's first is valid, so each key's earliest valid
/// impression by (ts, id), as the loader picks it within an object. Its
/// show, episode, country, app and device ('' when missing, as the rollups
/// hold them) are the sketches its listener goes in. `$1` and `$2` bound
/// the day.
///
/// When a key's impressions arrive in several objects out of time order
/// and disagree on a dimension (the same listener id, creative and episode
/// heard from two countries in a day), the loader counted the first loaded
/// and this the earliest: verify then reports the two sketches. Listener
/// ids are made from the address and user agent, which give the country,
/// app and device, so this takes an address that moves between databases.
const DAY_LISTENERS: &str =
    "SELECT DISTINCT ON (campaign, creative, coalesce(episode, ''), listener)
       campaign, creative, coalesce(show, ''), coalesce(episode, ''), coalesce(country, ''),
       coalesce(app, ''), coalesce(device, ''), listener, listener_period
FROM events
WHERE ts >= $1 AND ts < $2 AND verdict = 'valid' AND event = 'impression'
  AND campaign IS NOT NULL AND creative IS NOT NULL AND ($3::text IS NULL OR campaign = $3)
ORDER BY campaign, creative, coalesce(episode, ''), listener, ts, id";

/// One of [`DAY_LISTENERS`]' rows: campaign, creative, show, episode,
/// country, app, device, listener, listener period.
type DayListener = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// A day's frequency sample.
const DAY_SAMPLE: &str = "SELECT campaign, listener, impressions FROM frequency_sample
WHERE day = $1 AND ($2::text IS NULL OR campaign = $2)";

/// A day's stored sketches.
const DAY_SKETCHES: &str =
    "SELECT campaign, dim, value, sketch, day_ids, month_ids FROM reach_sketches
WHERE day = $1 AND ($2::text IS NULL OR campaign = $2)";

/// Every kept day's reach sketches against the sketches its raw events
/// give (sketches are a function of their set, so equal sets are equal
/// bytes): `from_events` the listeners the events give, `from_rollups`
/// the stored sketch's count; a sketch of the right size but other
/// listeners, or other listener periods, is reported too.
async fn sketches_against_events(
    pool: &PgPool,
    campaign: Option<&str>,
    days: &[time::Date],
) -> Result<Vec<Mismatch>, sqlx::Error> {
    use earshot_platform::sketch::{
        in_frequency_sample, listener_hash, Sketch, DIM_APP, DIM_CAMPAIGN, DIM_COUNTRY,
        DIM_CREATIVE, DIM_DEVICE, DIM_EPISODE, DIM_SHOW,
    };
    use std::collections::BTreeMap;
    type Scope = (String, String, String);
    let mut out = Vec::new();
    for &day in days {
        let from = day.midnight().assume_utc();
        let rows: Vec<DayListener> = sqlx::query_as(DAY_LISTENERS)
            .bind(from)
            .bind(from + time::Duration::DAY)
            .bind(campaign)
            .fetch_all(pool)
            .await?;
        let mut want: BTreeMap<Scope, (Vec<u64>, bool, bool)> = BTreeMap::new();
        let mut sampled: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (c, cr, show, episode, country, app, device, listener, period) in rows {
            let h = listener_hash(&listener);
            if in_frequency_sample(h) {
                *sampled.entry((c.clone(), listener.clone())).or_default() += 1;
            }
            for (dim, value) in [
                (DIM_CAMPAIGN, String::new()),
                (DIM_CREATIVE, cr),
                (DIM_SHOW, show),
                (DIM_EPISODE, episode),
                (DIM_COUNTRY, country),
                (DIM_APP, app),
                (DIM_DEVICE, device),
            ] {
                let e = want.entry((c.clone(), dim.to_owned(), value)).or_default();
                e.0.push(h);
                e.1 |= period == "day";
                e.2 |= period == "month";
            }
        }
        let stored_sample: Vec<(String, String, i64)> = sqlx::query_as(DAY_SAMPLE)
            .bind(day)
            .bind(campaign)
            .fetch_all(pool)
            .await?;
        let stored_sample: BTreeMap<(String, String), i64> = stored_sample
            .into_iter()
            .map(|(c, l, n)| ((c, l), n))
            .collect();
        let sampled_keys: std::collections::BTreeSet<&(String, String)> =
            sampled.keys().chain(stored_sample.keys()).collect();
        for k in sampled_keys {
            let (w, h) = (sampled.get(k), stored_sample.get(k));
            if w != h {
                out.push(Mismatch {
                    what: "frequency_sample".to_owned(),
                    key: format!("{}/{}/{day}", k.0, k.1),
                    from_events: w.copied().unwrap_or(0),
                    from_rollups: h.copied().unwrap_or(0),
                });
            }
        }
        let stored: Vec<(String, String, String, Vec<u8>, bool, bool)> =
            sqlx::query_as(DAY_SKETCHES)
                .bind(day)
                .bind(campaign)
                .fetch_all(pool)
                .await?;
        let mut have: BTreeMap<Scope, (Option<Sketch>, bool, bool)> = BTreeMap::new();
        for (c, dim, value, bytes, d, m) in stored {
            have.insert((c, dim, value), (Sketch::from_bytes(&bytes).ok(), d, m));
        }
        let scopes: std::collections::BTreeSet<&Scope> = want.keys().chain(have.keys()).collect();
        for scope in scopes {
            let w = want
                .get(scope)
                .map(|(h, d, m)| (Sketch::from_hashes(h.iter().copied()), *d, *m));
            let h = have.get(scope);
            let agree = match (&w, h) {
                (Some((ws, wd, wm)), Some((Some(hs), hd, hm))) => ws == hs && wd == hd && wm == hm,
                _ => false,
            };
            if !agree {
                out.push(Mismatch {
                    what: "reach_sketch".to_owned(),
                    key: format!(
                        "{}/{}{}/{day}",
                        scope.0,
                        scope.1,
                        if scope.1.is_empty() {
                            String::new()
                        } else {
                            format!("={}", scope.2)
                        }
                    ),
                    from_events: w.map_or(0, |(s, _, _)| s.count()),
                    // A stored sketch that does not decode counts as -1.
                    from_rollups: h.map_or(0, |(s, _, _)| s.as_ref().map_or(-1, Sketch::count)),
                });
            }
        }
    }
    Ok(out)
}

/// `verify`'s recounts of the daily tables, for one registry.
#[derive(Debug)]
pub struct RecountSql {
    /// `rollup_daily` (creative × country per day) against the hourly
    /// rollups, every counter.
    pub daily: String,
    /// Each multi-day block against the sum of its days in `rollup_daily`,
    /// up to the last day the blocks hold.
    pub blocks: String,
}

impl RecountSql {
    pub fn new(registry: Registry) -> Self {
        let row = |t: &str| daily_columns(registry, |c| format!("{t}.{c}"));
        let daily = format!(
            "
WITH h AS (
    SELECT campaign, (hour AT TIME ZONE 'UTC')::date AS day, creative, country,
           {sums}
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
WHERE ROW({h}) IS DISTINCT FROM ROW({d})
ORDER BY 2",
            sums = counters(registry)
                .filter_map(|(_, m)| Some(format!("coalesce({}, 0)::bigint AS {}", hourly_sum(m)?, m.name)))
                .collect::<Vec<_>>()
                .join(",\n           "),
            h = row("h"),
            d = row("d"),
        );
        let blocks = format!(
            "
WITH d AS (
    SELECT campaign, s.span AS span_days, day - ((day - DATE '1970-01-01') % s.span) AS first_day, creative, country,
           {sums}
    FROM rollup_daily CROSS JOIN {spans} AS s (span)
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
WHERE ROW({d}) IS DISTINCT FROM ROW({b})
ORDER BY 2",
            sums = daily_columns(registry, |c| format!("sum({c})::bigint AS {c}")),
            spans = block_spans_sql(),
            d = row("d"),
            b = row("b"),
        );
        Self { daily, blocks }
    }

    /// The recounts of earshot's registry ([`METRICS`]).
    pub fn standard() -> &'static RecountSql {
        static STANDARD: LazyLock<RecountSql> = LazyLock::new(|| RecountSql::new(METRICS));
        &STANDARD
    }
}

/// A day's stored keys against the keys its raw events give (the loader's
/// hash in SQL, `counting::keys`): the two sets must be equal. `$3` is the
/// day, `$1` and `$2` its bounds.
fn keys_against_events_sql(table: KeyTable) -> String {
    format!(
        "WITH s AS (SELECT listener, key FROM {} WHERE day = $3),
              e AS (SELECT DISTINCT listener, key FROM ({}) AS k)
         SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM s),
                (SELECT count(*) FROM s FULL JOIN e USING (listener, key)
                 WHERE s.key IS NULL OR e.key IS NULL)",
        table.name(),
        table.from_events_sql()
    )
}

/// Every day whose stored keys are not exactly the keys of its raw
/// events (keys are hashes, so this runs over the whole database only, a
/// day with key partitions at a time): `from_events` the keys the events
/// give, `from_rollups` the keys stored (equal counts with different keys
/// are reported too).
async fn keys_against_events(pool: &PgPool) -> Result<Vec<Mismatch>, sqlx::Error> {
    let mut out = Vec::new();
    for table in KeyTable::ALL {
        // Made of the table's name and constant SQL only.
        let check = keys_against_events_sql(table);
        for day in partition_days(pool, table.name()).await? {
            let from = day.midnight().assume_utc();
            let (from_events, stored, differ): (i64, i64, i64) =
                sqlx::query_as(AssertSqlSafe(check.as_str()))
                    .bind(from)
                    .bind(from + time::Duration::DAY)
                    .bind(day)
                    .fetch_one(pool)
                    .await?;
            if differ > 0 {
                out.push(Mismatch {
                    what: table.name().to_owned(),
                    key: day.to_string(),
                    from_events,
                    from_rollups: stored,
                });
            }
        }
    }
    Ok(out)
}

/// Every disagreement between raw events and the rollups/uniques (empty
/// when the books balance) over the days raw events are kept for,
/// optionally for one campaign; for the whole
/// database, also every day whose counting or listener keys are not the
/// keys of its raw events.
pub async fn verify(pool: &PgPool, campaign: Option<&str>) -> Result<Vec<Mismatch>, sqlx::Error> {
    let kept = partition_days(pool, "events").await?;
    // The first day raw events are kept for; None when no day is.
    let first_kept = kept.first().copied();
    let mut out: Vec<Mismatch> = sqlx::query_as(AssertSqlSafe(RECOUNT.as_str()))
        .bind(campaign)
        .bind(first_kept.map(|d| d.midnight().assume_utc()))
        .fetch_all(pool)
        .await?;
    out.extend(
        sqlx::query_as::<_, Mismatch>(RECOUNT_UNIQUES)
            .bind(campaign)
            .bind(first_kept)
            .fetch_all(pool)
            .await?,
    );
    let recount = RecountSql::standard();
    for check in [&recount.daily, &recount.blocks] {
        out.extend(
            sqlx::query_as::<_, Mismatch>(AssertSqlSafe(check.as_str()))
                .bind(campaign)
                .fetch_all(pool)
                .await?,
        );
    }
    out.extend(sketches_against_events(pool, campaign, &kept).await?);
    out.extend(
        crate::sketch_blocks::check(pool, campaign)
            .await?
            .into_iter()
            .map(|(key, from_events, from_rollups)| Mismatch {
                what: "reach_blocks".into(),
                key,
                from_events,
                from_rollups,
            }),
    );
    if campaign.is_none() {
        out.extend(keys_against_events(pool).await?);
    }
    Ok(out)
}
