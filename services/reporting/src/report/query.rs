//! A report's SQL over the rollups, built from the spec and the metric
//! registry (whitelisted column names and numbered parameters only; every
//! value is bound), and its rows read back with keyset pagination.

use std::collections::BTreeMap;

use earshot_domain::metric::{counters, Registry, METRICS};
use earshot_platform::rollup::{daily_columns, hourly_sum};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool, Row};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;

use super::blocks::{day_parts, BlocksMark};
use super::metrics::{read_counts, Metrics};
use super::reach::RangeSketches;
use super::sketch_cache::SketchCache;
use super::spec::{format_instant, Dim, Granularity, ReportSpec};
use crate::error::{bad, ApiError};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportRow {
    /// Start of the row's hour or day (UTC); for `total`, the range start.
    pub bucket: String,
    /// One field per `group_by` dimension (creative, country, ...); null where the pixel did not say.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub dims: BTreeMap<String, Option<String>>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub campaign: String,
    pub from: String,
    pub to: String,
    pub granularity: Granularity,
    pub group_by: Vec<Dim>,
    pub rows: Vec<ReportRow>,
    /// Over the whole range, all pages.
    pub totals: Metrics,
    /// Pass as `page_token` for the next page; null on the last page.
    pub next_page_token: Option<String>,
}

/// The counters of `registry` summed over rows of the daily tables (`daily`)
/// or of `rollup_hourly`, each as a column of its name.
pub fn metrics_select(registry: Registry, daily: bool) -> String {
    counters(registry)
        .map(|(_, m)| {
            let sum = if daily {
                format!("sum({})", m.name)
            } else {
                hourly_sum(m).expect("a counter")
            };
            format!("coalesce({sum}, 0)::bigint AS {}", m.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The campaign's unique listeners over the range, for the totals.
const TOTAL_UNIQUES: &str = "SELECT sum(listeners)::bigint FROM daily_uniques WHERE campaign = $1 AND creative = ''
                AND day >= ($2 AT TIME ZONE 'UTC')::date
                AND day < ($3 AT TIME ZONE 'UTC')::date + (($3 AT TIME ZONE 'UTC')::time > '00:00')::int";

/// The statements of one report. Parameters: `$1` the campaign, `$2` and
/// `$3` the range; with a page token, `$4` the last bucket and one per
/// dimension; with day blocks, then the single days, the blocks' spans and
/// their first days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSql {
    /// One page of rows (a row more than the limit says there is a next).
    pub rows: String,
    /// The totals over every page, when the rows do not hold them all.
    pub totals: String,
}

impl ReportSql {
    /// `blocks`: the rows read day blocks (`spec.uses_day_blocks()`).
    pub fn new(spec: &ReportSpec, registry: Registry, blocks: bool) -> Self {
        let daily = spec.uses_daily_rollup();
        let (table, range) = if daily {
            (
                "rollup_daily",
                "day >= ($2 AT TIME ZONE 'UTC')::date AND day < ($3 AT TIME ZONE 'UTC')::date",
            )
        } else {
            ("rollup_hourly", "hour >= $2 AND hour < $3")
        };
        let bucket = match (spec.granularity, daily) {
            (Granularity::Hour, _) => "hour",
            (Granularity::Day, true) => "(day::timestamp AT TIME ZONE 'UTC')",
            (Granularity::Day, false) => {
                "(date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
            }
            (Granularity::Total, _) => "$2::timestamptz",
        };
        let dims: Vec<&str> = spec.group_by.iter().map(|d| d.column()).collect();
        let dim_select: String = dims.iter().map(|d| format!(", {d}")).collect();
        let group_cols: String = (0..=dims.len())
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // Uniques: daily_uniques, by day (and creative when grouped by it).
        // Its creative '' is the whole campaign's; the row of no creative
        // (invalid hits, rolled up under their campaign alone) has none.
        let uniq_creative = if spec.group_by.contains(&Dim::Creative) {
            "b.creative AND b.creative <> ''"
        } else {
            "''"
        };
        let uniq_join = match (spec.uniques_available(), spec.granularity) {
            (true, Granularity::Day) => format!(
                "LEFT JOIN daily_uniques u ON u.campaign = $1 AND u.day = (b.bucket AT TIME ZONE 'UTC')::date AND u.creative = {uniq_creative}"
            ),
            (true, _) => format!(
                "LEFT JOIN (SELECT creative, sum(listeners)::bigint AS listeners FROM daily_uniques
                        WHERE campaign = $1 AND day >= ($2 AT TIME ZONE 'UTC')::date AND day < ($3 AT TIME ZONE 'UTC')::date + (($3 AT TIME ZONE 'UTC')::time > '00:00')::int
                        GROUP BY creative) u ON u.creative = {uniq_creative}"
            ),
            (false, _) => "LEFT JOIN (SELECT NULL::bigint AS listeners) u ON false".to_owned(),
        };
        let keyset = match &spec.after {
            None => String::new(),
            Some(_) => {
                let mut lhs = vec!["b.bucket".to_owned()];
                let mut rhs = vec!["$4::timestamptz".to_owned()];
                for (i, d) in dims.iter().enumerate() {
                    lhs.push(format!("b.{d}"));
                    rhs.push(format!("${}::text", 5 + i));
                }
                format!("WHERE ({}) > ({})", lhs.join(", "), rhs.join(", "))
            }
        };
        let order: String = std::iter::once("b.bucket".to_owned())
            .chain(dims.iter().map(|d| format!("b.{d}")))
            .collect::<Vec<_>>()
            .join(", ");
        // Parameters after the keyset's: the day blocks, when read.
        let next_param = 4 + if spec.after.is_some() {
            1 + dims.len()
        } else {
            0
        };
        let source = if blocks {
            let (d, s, f) = (next_param, next_param + 1, next_param + 2);
            let columns = format!(
                "creative, country, {}",
                daily_columns(registry, str::to_owned)
            );
            format!(
                "(SELECT {columns} FROM rollup_daily WHERE campaign = $1 AND day = ANY(${d}::date[])
              UNION ALL
              SELECT {columns} FROM rollup_blocks r JOIN unnest(${s}::int4[], ${f}::date[]) AS q (span_days, first_day)
                ON r.span_days = q.span_days AND r.first_day = q.first_day
              WHERE r.campaign = $1) src"
            )
        } else {
            format!("{table} WHERE campaign = $1 AND {range}")
        };
        let metrics = metrics_select(registry, daily);
        let rows = format!(
            "WITH b AS (
            SELECT {bucket} AS bucket{dim_select}, {metrics}
            FROM {source}
            GROUP BY {group_cols}
        )
        SELECT b.*, u.listeners AS uniq, ({TOTAL_UNIQUES}) AS total_uniq FROM b {uniq_join} {keyset}
        ORDER BY {order} LIMIT {limit}",
            limit = spec.limit as i64 + 1,
        );
        let totals = format!(
            "SELECT {metrics}, ({TOTAL_UNIQUES}) AS uniq FROM {table} WHERE campaign = $1 AND {range}"
        );
        Self { rows, totals }
    }
}

/// The single days, and the blocks' spans and first days, a total over
/// whole days reads.
struct DayParts {
    days: Vec<Date>,
    spans: Vec<i32>,
    firsts: Vec<Date>,
}

impl DayParts {
    async fn read(pool: &PgPool, mark: &BlocksMark, spec: &ReportSpec) -> Result<Self, ApiError> {
        let through = mark.get(pool).await?;
        let (days, spans): (Vec<_>, Vec<_>) = day_parts(spec.from.date(), spec.to.date(), through)
            .into_iter()
            .partition(|(span, _)| *span == 1);
        Ok(Self {
            days: days.into_iter().map(|(_, d)| d).collect(),
            spans: spans.iter().map(|(s, _)| *s as i32).collect(),
            firsts: spans.into_iter().map(|(_, d)| d).collect(),
        })
    }
}

/// Runs the report for one campaign (already authorized).
pub async fn run(
    pool: &PgPool,
    blocks_mark: &BlocksMark,
    sketches: &SketchCache,
    campaign: &str,
    spec: &ReportSpec,
) -> Result<Report, ApiError> {
    run_with(pool, blocks_mark, sketches, campaign, spec, METRICS).await
}

/// [`run`] over the metrics of `registry`.
pub async fn run_with(
    pool: &PgPool,
    blocks_mark: &BlocksMark,
    sketch_cache: &SketchCache,
    campaign: &str,
    spec: &ReportSpec,
    registry: Registry,
) -> Result<Report, ApiError> {
    let blocks = if spec.uses_day_blocks() {
        Some(DayParts::read(pool, blocks_mark, spec).await?)
    } else {
        None
    };
    let sql = ReportSql::new(spec, registry, blocks.is_some());
    let mut q = sqlx::query(AssertSqlSafe(sql.rows.as_str()))
        .bind(campaign)
        .bind(spec.from)
        .bind(spec.to);
    if let Some(k) = &spec.after {
        q = q.bind(
            OffsetDateTime::parse(&k[0], &Rfc3339).map_err(|_| bad("page_token", "bad token"))?,
        );
        for v in &k[1..] {
            q = q.bind(v);
        }
    }
    if let Some(b) = &blocks {
        q = q.bind(&b.days).bind(&b.spans).bind(&b.firsts);
    }
    let rows = q.fetch_all(pool).await?;
    // Reach: from the range's sketches. The totals' (the whole campaign's)
    // at day and total granularity, as the uniques; the rows' by nothing or
    // by one sketched dimension.
    let sketches = if spec.granularity != Granularity::Hour {
        Some(RangeSketches::read(pool, blocks_mark, sketch_cache, campaign, spec).await?)
    } else {
        None
    };
    let more = rows.len() > spec.limit as usize;
    let mut out = Vec::with_capacity(rows.len().min(spec.limit as usize));
    let mut last_key = None;
    for r in rows.iter().take(spec.limit as usize) {
        let bucket: OffsetDateTime = r.try_get("bucket")?;
        let mut dims = BTreeMap::new();
        let mut key = vec![format_instant(bucket)];
        for d in &spec.group_by {
            let v: String = r.try_get(d.column())?;
            key.push(v.clone());
            dims.insert(d.column().to_owned(), (!v.is_empty()).then_some(v));
        }
        let uniq: Option<i64> = r.try_get("uniq")?;
        let uniq = spec.uniques_available().then(|| uniq.unwrap_or(0));
        let mut metrics =
            Metrics::new(registry, read_counts(r, registry)?, uniq, spec.include_bots);
        if let (Some(sk), true) = (&sketches, spec.reach_available()) {
            let day = (spec.granularity == Granularity::Day).then(|| bucket.date());
            // The row's value as the rollups hold it ('' where hits did
            // not say), the key's after the bucket.
            let scope = spec
                .reach_dim()
                .and_then(|d| Some((d.sketch_dim()?, key[1].as_str())));
            metrics.set_reach(Some(sk.reach(day, scope)));
        }
        out.push(ReportRow {
            bucket: format_instant(bucket),
            dims,
            metrics,
        });
        last_key = Some(key);
    }
    let mut totals = if spec.after.is_none() && !more {
        // The only page holds every group: its rows sum to the totals, which
        // saves scanning the rollups a second time.
        // The uniques total came with every row (an uncorrelated subquery,
        // run once); with no rows, there were none.
        let mut t = Metrics::sum(registry, out.iter().map(|r| &r.metrics), spec.include_bots);
        if spec.granularity != Granularity::Hour {
            let u: Option<i64> = match rows.first() {
                Some(r) => r.try_get("total_uniq")?,
                None => None,
            };
            t.set_unique_listeners(Some(u.unwrap_or(0)));
        }
        t
    } else {
        let t = sqlx::query(AssertSqlSafe(sql.totals.as_str()))
            .bind(campaign)
            .bind(spec.from)
            .bind(spec.to)
            .fetch_one(pool)
            .await?;
        let total_uniq: Option<i64> = t.try_get("uniq")?;
        Metrics::new(
            registry,
            read_counts(&t, registry)?,
            (spec.granularity != Granularity::Hour).then(|| total_uniq.unwrap_or(0)),
            spec.include_bots,
        )
    };
    totals.set_reach(sketches.map(|sk| sk.reach(None, None)));
    Ok(Report {
        campaign: campaign.to_owned(),
        from: format_instant(spec.from),
        to: format_instant(spec.to),
        granularity: spec.granularity,
        group_by: spec.group_by.clone(),
        rows: out,
        totals,
        next_page_token: if more {
            last_key.map(|k| spec.encode_token(&k))
        } else {
            None
        },
    })
}
