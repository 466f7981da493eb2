//! Reach over a report's range: the reach sketches of its days
//! (`reach_sketches`, written by the loader), merged per row and for the
//! totals (docs/COUNTING.md, "Reach and frequency").
//!
//! Sketches are kept per campaign and UTC day, whole and per value of each
//! sketched dimension (creative, show, episode, country, app, device), so
//! reach is offered in rows by day or in total, grouped by nothing or by
//! one of those ([`ReportSpec::reach_available`]), other rows showing it as
//! null; in the totals (the whole campaign's) at day and total
//! granularity, whatever the grouping. Like the uniques, a range that
//! starts or ends inside a day takes that whole day's listeners.

use std::collections::HashMap;

use earshot_platform::id_periods::IdPeriods;
use earshot_platform::sketch::{Sketch, DIM_CAMPAIGN};
use sqlx::PgPool;
use std::sync::Arc;
use time::{Date, Duration};

use super::blocks::{day_parts, BlocksMark};
use super::metrics::Reach;
use super::sketch_cache::{SketchCache, SketchKey, Source};
use super::spec::{whole_days, Granularity, ReportSpec};
use crate::error::ApiError;

/// The sketches a report merges, without their bytes: for each, its first
/// day, span (1 for a day of `reach_sketches`, 2–128 for a block of
/// `reach_sketch_blocks`), dim, value, row version and listener-id periods
/// (a day's as the kinds of ids it had, a block's as the periods
/// themselves). The days are those no block covers (`$3`); the blocks are
/// the parts given as (span, first day) in `$4`, `$5`. A day inside a
/// block is not read at all: the block holds its listeners and periods.
const RANGE_VERSIONS: &str =
    "SELECT day, 1, dim, value, xmin::text::bigint, day_ids, month_ids, '{}'::date[], '{}'::date[]
FROM reach_sketches
WHERE campaign = $1 AND dim = ANY($2) AND day = ANY($3)
UNION ALL
SELECT b.first_day, b.span_days, b.dim, b.value, b.xmin::text::bigint, false, false,
       b.daily_id_days, b.monthly_id_months
FROM reach_sketch_blocks b JOIN UNNEST($4::int4[], $5::date[]) AS p (span_days, first_day)
    USING (span_days, first_day)
WHERE b.campaign = $1 AND b.dim = ANY($2)";

/// A row of [`RANGE_VERSIONS`].
type VersionRow = (
    Date,
    i32,
    String,
    String,
    i64,
    bool,
    bool,
    Vec<Date>,
    Vec<Date>,
);

/// A stored sketch of the range, as [`RANGE_VERSIONS`] gives it.
struct Stored {
    key: SketchKey,
    version: i64,
    periods: IdPeriods,
}

/// The bytes and row versions of the sketches given as (day, dim, value)
/// of `reach_sketches` and (span, first day, dim, value) of
/// `reach_sketch_blocks`, with [`RANGE_VERSIONS`]' first five columns.
const SKETCH_BYTES: &str = "SELECT d.day, 1, d.dim, d.value, d.xmin::text::bigint, d.sketch
FROM reach_sketches d JOIN UNNEST($2::date[], $3::text[], $4::text[]) AS k (day, dim, value)
    USING (day, dim, value)
WHERE d.campaign = $1
UNION ALL
SELECT b.first_day, b.span_days, b.dim, b.value, b.xmin::text::bigint, b.sketch
FROM reach_sketch_blocks b
    JOIN UNNEST($5::int4[], $6::date[], $7::text[], $8::text[]) AS k (span_days, first_day, dim, value)
    USING (span_days, first_day, dim, value)
WHERE b.campaign = $1";

/// A row of [`SKETCH_BYTES`].
type BytesRow = (Date, i32, String, String, i64, Vec<u8>);

/// A stored sketch the report merges, and the listener-id periods of its
/// listeners.
struct Part {
    sketch: Arc<Sketch>,
    periods: IdPeriods,
}

/// A scope's sketches over the range: the days no block covers, by day,
/// and the blocks that hold the others.
#[derive(Default)]
struct ScopeSketches {
    days: Vec<(Date, Part)>,
    blocks: Vec<Part>,
}

fn decode(campaign: &str, key: &SketchKey, bytes: &[u8]) -> Result<Sketch, ApiError> {
    Sketch::from_bytes(bytes).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "reach sketch of campaign {campaign:?}, {key:?}: {e}"
        ))
    })
}

fn sketch_key(campaign: &str, first_day: Date, span: i32, dim: String, value: String) -> SketchKey {
    SketchKey {
        source: Source::of_span(span),
        campaign: campaign.to_owned(),
        first_day,
        dim,
        value,
    }
}

/// The sketches of `wanted` (key, row version): those `cache` holds at
/// that version from it, the others read from PostgreSQL and held.
async fn sketches(
    pool: &PgPool,
    cache: &SketchCache,
    campaign: &str,
    wanted: &[(SketchKey, i64)],
) -> Result<HashMap<SketchKey, Arc<Sketch>>, ApiError> {
    let mut out = HashMap::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for (key, version) in wanted {
        match cache.get(key, *version) {
            Some(s) => {
                out.insert(key.clone(), s);
            }
            None => missing.push(key),
        }
    }
    metrics::counter!("earshot_reach_sketches_read_total", "from" => "memory")
        .increment(out.len() as u64);
    metrics::counter!("earshot_reach_sketches_read_total", "from" => "database")
        .increment(missing.len() as u64);
    if missing.is_empty() {
        return Ok(out);
    }
    let (days, blocks): (Vec<&SketchKey>, Vec<&SketchKey>) =
        missing.iter().partition(|k| k.source == Source::Day);
    let field = |ks: &[&SketchKey], f: fn(&SketchKey) -> String| -> Vec<String> {
        ks.iter().map(|k| f(k)).collect()
    };
    let rows: Vec<BytesRow> = sqlx::query_as(SKETCH_BYTES)
        .bind(campaign)
        .bind(days.iter().map(|k| k.first_day).collect::<Vec<_>>())
        .bind(field(&days, |k| k.dim.clone()))
        .bind(field(&days, |k| k.value.clone()))
        .bind(blocks.iter().map(|k| k.source.span()).collect::<Vec<_>>())
        .bind(blocks.iter().map(|k| k.first_day).collect::<Vec<_>>())
        .bind(field(&blocks, |k| k.dim.clone()))
        .bind(field(&blocks, |k| k.value.clone()))
        .fetch_all(pool)
        .await?;
    for (first_day, span, dim, value, version, bytes) in rows {
        let key = sketch_key(campaign, first_day, span, dim, value);
        let sketch = Arc::new(decode(campaign, &key, &bytes)?);
        cache.put(key.clone(), version, sketch.clone());
        out.insert(key, sketch);
    }
    if let Some((gone, _)) = wanted.iter().find(|(k, _)| !out.contains_key(k)) {
        // Only an operator's rebuild or retention deletes sketch rows.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "reach sketch {gone:?} was deleted while the report read it; ask again"
        )));
    }
    Ok(out)
}

/// The range's sketches, by (dim, value).
pub struct RangeSketches {
    by_scope: HashMap<(String, String), ScopeSketches>,
}

impl RangeSketches {
    /// Reads the campaign's sketches for `spec`'s days: the whole
    /// campaign's, and each value's of the dimension its rows are grouped
    /// by, when they show reach ([`ReportSpec::reach_dim`]). In total (one
    /// reach over the range), the days up to the reach blocks' mark come
    /// as the fewest aligned blocks (`reach_sketch_blocks`), the same
    /// union in a tenth of the sketches over 90 days; by day, every day's.
    pub async fn read(
        pool: &PgPool,
        marks: &BlocksMark,
        cache: &SketchCache,
        campaign: &str,
        spec: &ReportSpec,
    ) -> Result<Self, ApiError> {
        let mut dims = vec![DIM_CAMPAIGN];
        dims.extend(spec.reach_dim().and_then(|d| d.sketch_dim()));
        let (first, end) = whole_days(spec.from, spec.to);
        let mark = if spec.granularity == Granularity::Total {
            marks.reach(pool).await?
        } else {
            None
        };
        // Without a mark, every day is a part of one day.
        let parts = day_parts(first, end, mark.unwrap_or(first - Duration::days(1)));
        let (blocks, singles): (Vec<_>, Vec<_>) =
            parts.into_iter().partition(|(span, _)| *span > 1);
        let singles: Vec<Date> = singles.into_iter().map(|(_, d)| d).collect();
        let spans: Vec<i32> = blocks.iter().map(|(s, _)| *s as i32).collect();
        let firsts: Vec<Date> = blocks.iter().map(|(_, d)| *d).collect();
        let rows: Vec<VersionRow> = sqlx::query_as(RANGE_VERSIONS)
            .bind(campaign)
            .bind(&dims)
            .bind(&singles)
            .bind(&spans)
            .bind(&firsts)
            .fetch_all(pool)
            .await?;
        let rows: Vec<Stored> = rows
            .into_iter()
            .map(
                |(day, span, dim, value, version, day_ids, month_ids, days, months)| {
                    let mut periods = IdPeriods::stored(days, months);
                    periods.union(&IdPeriods::of_day(day, day_ids, month_ids));
                    Stored {
                        key: sketch_key(campaign, day, span, dim, value),
                        version,
                        periods,
                    }
                },
            )
            .collect();
        let wanted: Vec<(SketchKey, i64)> =
            rows.iter().map(|r| (r.key.clone(), r.version)).collect();
        let mut got = sketches(pool, cache, campaign, &wanted).await?;
        let mut by_scope: HashMap<(String, String), ScopeSketches> = HashMap::new();
        for r in rows {
            let Some(sketch) = got.remove(&r.key) else {
                continue;
            };
            let part = Part {
                sketch,
                periods: r.periods,
            };
            let scope = by_scope.entry((r.key.dim, r.key.value)).or_default();
            match r.key.source {
                Source::Block(_) => scope.blocks.push(part),
                Source::Day => scope.days.push((r.key.first_day, part)),
            }
        }
        Ok(Self { by_scope })
    }

    /// The reach of one day (`Some`) or of the whole range (`None`), of
    /// one value of a sketched dimension (`Some((dim, value))`, the value
    /// as the rollup row holds it: '' where hits did not say, and for the
    /// row of no creative, which has no listeners) or of the whole
    /// campaign.
    pub fn reach(&self, day: Option<Date>, scope: Option<(&str, &str)>) -> Reach {
        let scope = match scope {
            Some((dim, value)) => (dim.to_owned(), value.to_owned()),
            None => (DIM_CAMPAIGN.to_owned(), String::new()),
        };
        let Some(sketches) = self.by_scope.get(&scope) else {
            return Reach::default();
        };
        let blocks = sketches.blocks.iter().filter(|_| day.is_none());
        let days = sketches
            .days
            .iter()
            .filter(|(d, _)| day.is_none_or(|x| x == *d))
            .map(|(_, part)| part);
        let mut union = Sketch::new();
        let mut periods = IdPeriods::default();
        for part in blocks.chain(days) {
            union.merge(&part.sketch);
            periods.union(&part.periods);
        }
        Reach {
            listeners: union.count(),
            upper_bound: periods.is_upper_bound(),
        }
    }
}
