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
use time::Date;

use super::metrics::Reach;
use super::spec::ReportSpec;
use crate::error::ApiError;

/// The sketches of the days the range touches.
const RANGE_SKETCHES: &str =
    "SELECT day, dim, value, sketch, day_ids, month_ids FROM reach_sketches
WHERE campaign = $1 AND dim = ANY($2)
  AND day >= ($3 AT TIME ZONE 'UTC')::date
  AND day < ($4 AT TIME ZONE 'UTC')::date + (($4 AT TIME ZONE 'UTC')::time > '00:00')::int";

/// One stored sketch of the range.
struct DaySketch {
    day: Date,
    sketch: Sketch,
    day_ids: bool,
    month_ids: bool,
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
    by_scope: HashMap<(String, String), Vec<DaySketch>>,
}

impl RangeSketches {
    /// Reads the campaign's sketches for `spec`'s days: the whole
    /// campaign's, and each value's of the dimension its rows are grouped
    /// by, when they show reach ([`ReportSpec::reach_dim`]).
    pub async fn read(pool: &PgPool, campaign: &str, spec: &ReportSpec) -> Result<Self, ApiError> {
        let mut dims = vec![DIM_CAMPAIGN];
        dims.extend(spec.reach_dim().and_then(|d| d.sketch_dim()));
        let rows: Vec<(Date, String, String, Vec<u8>, bool, bool)> = sqlx::query_as(RANGE_SKETCHES)
            .bind(campaign)
            .bind(&dims)
            .bind(spec.from)
            .bind(spec.to)
            .fetch_all(pool)
            .await?;
        let mut by_scope: HashMap<(String, String), Vec<DaySketch>> = HashMap::new();
        for (day, dim, value, bytes, day_ids, month_ids) in rows {
            let sketch = Sketch::from_bytes(&bytes).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "reach sketch of campaign {campaign:?}, {day}, {dim:?} {value:?}: {e}"
                ))
            })?;
            by_scope.entry((dim, value)).or_default().push(DaySketch {
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
        let Some(days) = self.by_scope.get(&scope) else {
            return Reach::default();
        };
        let mut union = Sketch::new();
        let mut periods = BTreeSet::new();
        for d in days.iter().filter(|d| day.is_none_or(|x| x == d.day)) {
            union.merge(&d.sketch);
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
