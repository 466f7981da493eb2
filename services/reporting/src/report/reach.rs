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
use sqlx::{AssertSqlSafe, PgPool};
use time::{Date, Duration};

use super::blocks::{day_parts, BlocksMark};
use super::metrics::Reach;
use super::spec::{Granularity, ReportSpec};
use crate::error::ApiError;

/// The days of the range, with the sketches of those in `$5` (the days no
/// block covers). The periods of every day come back, whose sketch is read
/// or not: the flags are in the row, the sketch out of line (TOAST), read
/// only when selected.
const RANGE_SKETCHES: &str = "SELECT day, dim, value,
    CASE WHEN day = ANY($5) THEN sketch END, day_ids, month_ids
FROM reach_sketches
WHERE campaign = $1 AND dim = ANY($2) AND day >= $3 AND day < $4";

/// The block sketches of the parts given as (span, first day), with
/// [`RANGE_SKETCHES`]' columns: no day, no periods.
const BLOCK_SKETCHES: &str = "SELECT NULL::date, b.dim, b.value, b.sketch, false, false
FROM reach_sketch_blocks b JOIN UNNEST($6::int4[], $7::date[]) AS p (span_days, first_day)
    USING (span_days, first_day)
WHERE b.campaign = $1 AND b.dim = ANY($2)";

/// The range's day rows and its blocks, in one round trip.
static RANGE_AND_BLOCKS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{RANGE_SKETCHES}\nUNION ALL\n{BLOCK_SKETCHES}"));

/// A row of [`RANGE_SKETCHES`]: day, dim, value, sketch, day_ids,
/// month_ids; of [`BLOCK_SKETCHES`] with no day.
type DayRow = (Option<Date>, String, String, Option<Vec<u8>>, bool, bool);

/// One stored day of the range: its listener-id periods, and its sketch
/// unless a block of the range holds the day.
struct DaySketch {
    day: Date,
    sketch: Option<Sketch>,
    day_ids: bool,
    month_ids: bool,
}

/// A scope's sketches over the range: its days, and the blocks that hold
/// the days whose sketches were not read.
#[derive(Default)]
struct ScopeSketches {
    days: Vec<DaySketch>,
    blocks: Vec<Sketch>,
}

fn decode(campaign: &str, what: std::fmt::Arguments<'_>, bytes: &[u8]) -> Result<Sketch, ApiError> {
    Sketch::from_bytes(bytes).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "reach sketch of campaign {campaign:?}, {what}: {e}"
        ))
    })
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
        let rows: Vec<DayRow> = sqlx::query_as(AssertSqlSafe(RANGE_AND_BLOCKS.as_str()))
            .bind(campaign)
            .bind(&dims)
            .bind(first)
            .bind(end)
            .bind(&singles)
            .bind(&spans)
            .bind(&firsts)
            .fetch_all(pool)
            .await?;
        let mut by_scope: HashMap<(String, String), ScopeSketches> = HashMap::new();
        for (day, dim, value, bytes, day_ids, month_ids) in rows {
            let Some(day) = day else {
                let bytes = bytes.unwrap_or_default();
                let sketch = decode(campaign, format_args!("a block, {dim:?} {value:?}"), &bytes)?;
                by_scope
                    .entry((dim, value))
                    .or_default()
                    .blocks
                    .push(sketch);
                continue;
            };
            let sketch = bytes
                .map(|b| decode(campaign, format_args!("{day}, {dim:?} {value:?}"), &b))
                .transpose()?;
            by_scope
                .entry((dim, value))
                .or_default()
                .days
                .push(DaySketch {
                    day,
                    sketch,
                    day_ids,
                    month_ids,
                });
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
