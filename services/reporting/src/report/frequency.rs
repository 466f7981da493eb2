//! A campaign's frequency distribution: how many listeners were reached
//! once, twice, 3–5, 6–10 and 11 or more times over a range, from the
//! loader's frequency sample (`frequency_sample`: every counted impression
//! of one listener in [`FREQUENCY_SAMPLE_RATE`], chosen by the hash of the
//! listener id), scaled by the sample rate (docs/COUNTING.md, "Reach and
//! frequency").

use earshot_platform::id_periods::IdPeriods;
use earshot_platform::sketch::{DIM_CAMPAIGN, FREQUENCY_SAMPLE_RATE};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use super::spec::{format_instant, whole_days, ReportParams, ReportSpec};
use crate::error::ApiError;

/// The buckets of the distribution: (fewest, most) impressions, `None`
/// for no upper limit. The breaks advertisers buy frequency caps by.
pub const BUCKETS: [(i64, Option<i64>); 5] = [
    (1, Some(1)),
    (2, Some(2)),
    (3, Some(5)),
    (6, Some(10)),
    (11, None),
];

/// The distribution's query string.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FrequencyParams {
    /// Start, included: `YYYY-MM-DD` (midnight UTC) or RFC 3339 on an hour boundary. Default: 30 days before `to`. A range that starts or ends inside a UTC day takes that whole day.
    pub from: Option<String>,
    /// End, excluded: `YYYY-MM-DD` or RFC 3339 on an hour boundary. Default: the end of the current hour.
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FrequencyBucket {
    /// `1`, `2`, `3-5`, `6-10` or `11+`.
    pub times: String,
    /// Fewest counted impressions of a listener in the bucket.
    pub min: i64,
    /// Most; null for the last bucket.
    pub max: Option<i64>,
    /// Listeners reached this often: the sampled ones times `sample_rate`.
    pub listeners: i64,
}

/// Listeners by how often the campaign reached them over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Frequency {
    pub campaign: String,
    pub from: String,
    pub to: String,
    /// One listener in this many is sampled; each bucket is scaled by it.
    pub sample_rate: i64,
    /// Listeners of the sample reached over the range.
    pub sampled_listeners: i64,
    pub buckets: Vec<FrequencyBucket>,
    /// True when the range holds listeners identified under more than one
    /// listener-id period (a UTC month, or day with daily ids): a listener
    /// heard in two periods is two listeners here, each reached fewer times.
    pub upper_bound: bool,
}

/// Per total of counted impressions over the range, its sampled listeners.
/// Grouped by a 64-bit hash of the listener id rather than the id: the
/// hash table of the API benchmark's 155,829 sampled listeners takes 31 MB
/// instead of 39 MB, and two of them share a hash with odds of about 1 in
/// a billion.
const SAMPLE_BY_TIMES: &str = "SELECT n, count(*)::bigint FROM (
    SELECT sum(impressions)::bigint AS n FROM frequency_sample
    WHERE campaign = $1 AND day >= $2 AND day < $3
    GROUP BY hashtextextended(listener, 0)
) t GROUP BY n";

/// The distribution's transaction settings:
/// - `work_mem`: with PostgreSQL's default 4 MB, the per-listener sums of a
///   10-million-listener campaign over 90 days (~400,000 sample rows) were
///   sorted on disk by three parallel processes; in memory they are hashed
///   by one, in a third of the CPU (`scripts/bench api`). 64 MB bounds the
///   hash table of any campaign's sample that PostgreSQL would still hash
///   rather than sort.
/// - a plan for the range at hand: the API's connections use generic plans
///   (one plan per statement, planned once), which for this statement
///   expect a few rows and read the whole sample through its index, 7×
///   slower than a sequential scan; planning anew costs ~1 ms of a
///   distribution's hundreds.
const FREQUENCY_SETTINGS: &str = "SELECT set_config('work_mem', '64MB', true),
    set_config('max_parallel_workers_per_gather', '0', true),
    set_config('plan_cache_mode', 'force_custom_plan', true)";

/// The range's days with the kinds of listener ids each had, from the
/// campaign's reach sketches (which record them), for the period rule
/// ([`IdPeriods`]).
const DAY_PERIODS: &str = "SELECT day, day_ids, month_ids FROM reach_sketches
WHERE campaign = $1 AND dim = $2 AND day >= $3 AND day < $4";

/// The range of `p`, checked as a report's `from` and `to` are.
pub fn range(
    p: &FrequencyParams,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let spec = ReportSpec::parse(
        &ReportParams {
            from: p.from.clone(),
            to: p.to.clone(),
            granularity: Some("total".into()),
            ..ReportParams::default()
        },
        false,
        now,
    )?;
    Ok((spec.from, spec.to))
}

/// Places listeners reached `n` times, `count` of them, in `buckets`.
fn bucketed(by_times: &[(i64, i64)]) -> Vec<FrequencyBucket> {
    BUCKETS
        .iter()
        .map(|&(min, max)| {
            let sampled: i64 = by_times
                .iter()
                .filter(|(n, _)| *n >= min && max.is_none_or(|m| *n <= m))
                .map(|(_, c)| c)
                .sum();
            FrequencyBucket {
                times: match max {
                    Some(m) if m == min => min.to_string(),
                    Some(m) => format!("{min}-{m}"),
                    None => format!("{min}+"),
                },
                min,
                max,
                listeners: sampled * FREQUENCY_SAMPLE_RATE as i64,
            }
        })
        .collect()
}

/// The distribution of one campaign (already authorized) over a range.
pub async fn run(
    pool: &PgPool,
    campaign: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Frequency, ApiError> {
    let (first, end) = whole_days(from, to);
    let mut tx = pool.begin().await?;
    sqlx::query(FREQUENCY_SETTINGS).execute(&mut *tx).await?;
    let by_times: Vec<(i64, i64)> = sqlx::query_as(SAMPLE_BY_TIMES)
        .bind(campaign)
        .bind(first)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
    let days: Vec<(Date, bool, bool)> = sqlx::query_as(DAY_PERIODS)
        .bind(campaign)
        .bind(DIM_CAMPAIGN)
        .bind(first)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut periods = IdPeriods::default();
    for (day, day_ids, month_ids) in days {
        periods.union(&IdPeriods::of_day(day, day_ids, month_ids));
    }
    Ok(Frequency {
        campaign: campaign.to_owned(),
        from: format_instant(from),
        to: format_instant(to),
        sample_rate: FREQUENCY_SAMPLE_RATE as i64,
        sampled_listeners: by_times.iter().map(|(_, c)| c).sum(),
        buckets: bucketed(&by_times),
        upper_bound: periods.is_upper_bound(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_fall_in_their_bucket_scaled_by_the_sample_rate() {
        let b = bucketed(&[
            (1, 10),
            (2, 3),
            (3, 1),
            (5, 2),
            (6, 1),
            (10, 1),
            (11, 4),
            (40, 1),
        ]);
        let got: Vec<(&str, i64)> = b.iter().map(|b| (b.times.as_str(), b.listeners)).collect();
        let r = FREQUENCY_SAMPLE_RATE as i64;
        assert_eq!(
            got,
            vec![
                ("1", 10 * r),
                ("2", 3 * r),
                ("3-5", 3 * r),
                ("6-10", 2 * r),
                ("11+", 5 * r)
            ]
        );
        assert_eq!((b[4].min, b[4].max), (11, None));
    }
}
