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

use std::collections::{BTreeSet, HashMap};

use earshot_platform::sketch::{Sketch, DIM_CAMPAIGN};
use sqlx::PgPool;
use std::sync::Arc;
use time::{Date, Duration};

use super::blocks::{day_parts, BlocksMark};
use super::metrics::Reach;
use super::sketch_cache::{SketchCache, SketchKey, Source};
use super::spec::{Granularity, ReportSpec};
use crate::error::ApiError;

/// The range's stored sketches, without their bytes: for each, its first
/// day, span (1 for a day of `reach_sketches`, 2–128 for a block of
/// `reach_sketch_blocks`), dim, value and row version, whether the report
/// merges it, and a day's listener-id periods. Every day of the range comes
/// back, for its periods; its sketch is merged only when it is in `$5` (the
/// days no block covers); the blocks are the parts given as (span, first
/// day) in `$6`, `$7`.
const RANGE_VERSIONS: &str =
    "SELECT day, 1, dim, value, xmin::text::bigint, day = ANY($5), day_ids, month_ids
FROM reach_sketches
WHERE campaign = $1 AND dim = ANY($2) AND day >= $3 AND day < $4
UNION ALL
SELECT b.first_day, b.span_days, b.dim, b.value, b.xmin::text::bigint, true, false, false
FROM reach_sketch_blocks b JOIN UNNEST($6::int4[], $7::date[]) AS p (span_days, first_day)
    USING (span_days, first_day)
WHERE b.campaign = $1 AND b.dim = ANY($2)";

/// A row of [`RANGE_VERSIONS`].
type VersionRow = (Date, i32, String, String, i64, bool, bool, bool);

/// A stored sketch of the range, as [`RANGE_VERSIONS`] gives it.
struct Stored {
    key: SketchKey,
    version: i64,
    /// Whether the report merges its sketch.
    merged: bool,
    day_ids: bool,
    month_ids: bool,
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

/// One stored day of the range: its listener-id periods, and its sketch
/// unless a block of the range holds the day.
struct DaySketch {
    day: Date,
    sketch: Option<Arc<Sketch>>,
    day_ids: bool,
    month_ids: bool,
}

/// A scope's sketches over the range: its days, and the blocks that hold
/// the days whose sketches were not read.
#[derive(Default)]
struct ScopeSketches {
    days: Vec<DaySketch>,
    blocks: Vec<Arc<Sketch>>,
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

/// A listener-id period: a UTC day (daily ids) or the month starting on
/// that day (monthly ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Period {
    Day(Date),
    Month(Date),
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
        // The range's whole UTC days: a range that starts or ends inside a
        // day takes that whole day.
        let first = spec.from.to_offset(time::UtcOffset::UTC).date();
        let to = spec.to.to_offset(time::UtcOffset::UTC);
        let end = to.date() + Duration::days(i64::from(to.time() > time::Time::MIDNIGHT));
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
            .bind(first)
            .bind(end)
            .bind(&singles)
            .bind(&spans)
            .bind(&firsts)
            .fetch_all(pool)
            .await?;
        let rows: Vec<Stored> = rows
            .into_iter()
            .map(
                |(day, span, dim, value, version, merged, day_ids, month_ids)| Stored {
                    key: sketch_key(campaign, day, span, dim, value),
                    version,
                    merged,
                    day_ids,
                    month_ids,
                },
            )
            .collect();
        let wanted: Vec<(SketchKey, i64)> = rows
            .iter()
            .filter(|r| r.merged)
            .map(|r| (r.key.clone(), r.version))
            .collect();
        let mut got = sketches(pool, cache, campaign, &wanted).await?;
        let mut by_scope: HashMap<(String, String), ScopeSketches> = HashMap::new();
        for r in rows {
            let sketch = if r.merged { got.remove(&r.key) } else { None };
            let scope = by_scope.entry((r.key.dim, r.key.value)).or_default();
            match r.key.source {
                Source::Block(_) => scope.blocks.extend(sketch),
                Source::Day => scope.days.push(DaySketch {
                    day: r.key.first_day,
                    sketch,
                    day_ids: r.day_ids,
                    month_ids: r.month_ids,
                }),
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
        let mut union = Sketch::new();
        if day.is_none() {
            for b in &sketches.blocks {
                union.merge(b);
            }
        }
        let mut periods = BTreeSet::new();
        for d in sketches
            .days
            .iter()
            .filter(|d| day.is_none_or(|x| x == d.day))
        {
            if let Some(s) = &d.sketch {
                union.merge(s);
            }
            if d.day_ids {
                periods.insert(Period::Day(d.day));
            }
            if d.month_ids {
                let first =
                    Date::from_calendar_date(d.day.year(), d.day.month(), 1).unwrap_or(d.day);
                periods.insert(Period::Month(first));
            }
        }
        Reach {
            listeners: union.count(),
            upper_bound: periods.len() > 1,
        }
    }
}
