//! Campaign reports over the hourly rollups: parameters parsed into a
//! normalized spec (every error names its parameter), SQL built from
//! whitelisted column names and bound values only, and keyset pagination.

use std::fmt::Write as _;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgPool};
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, Time, UtcOffset};
use utoipa::{IntoParams, ToSchema};

use crate::error::{bad, ApiError};

/// Longest range a report may span: a 13-month lookback covers a year on
/// year, and it bounds the rollup rows a single request can scan.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Longest range at hourly granularity (31 days = 744 rows per group).
pub const MAX_HOURLY_RANGE_DAYS: i64 = 31;
/// Range when `from` is omitted.
pub const DEFAULT_RANGE_DAYS: i64 = 30;
/// Rows per page, by default and at most.
pub const DEFAULT_PAGE_ROWS: u32 = 1000;
pub const MAX_PAGE_ROWS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
    Total,
}

/// A dimension rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Creative,
    Episode,
    Show,
    Placement,
    Country,
    App,
    Device,
}

impl Dim {
    pub const ALL: [Dim; 7] = [
        Dim::Creative,
        Dim::Episode,
        Dim::Show,
        Dim::Placement,
        Dim::Country,
        Dim::App,
        Dim::Device,
    ];

    /// The rollup column (also the name in responses).
    pub fn column(self) -> &'static str {
        match self {
            Dim::Creative => "creative",
            Dim::Episode => "episode",
            Dim::Show => "show",
            Dim::Placement => "placement",
            Dim::Country => "country",
            Dim::App => "app",
            Dim::Device => "device",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// The report's query string, as received. Everything is optional and
/// parsed by hand so each error names its parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Start, included: `YYYY-MM-DD` (midnight UTC) or RFC 3339 on an hour boundary. Default: 30 days before `to`.
    pub from: Option<String>,
    /// End, excluded: `YYYY-MM-DD` or RFC 3339 on an hour boundary. Default: the end of the current hour.
    pub to: Option<String>,
    /// `hour`, `day` (default) or `total`.
    pub granularity: Option<String>,
    /// Comma-separated: creative, episode, show, placement, country, app, device.
    pub group_by: Option<String>,
    /// `true` adds bot hits per event kind to each row (`bots`). Bots are never in the counted numbers.
    pub include_bots: Option<String>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    pub format: Option<String>,
    /// Rows per page (1-10000, default 1000).
    pub limit: Option<String>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// A report request, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSpec {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub granularity: Granularity,
    /// Sorted, deduplicated.
    pub group_by: Vec<Dim>,
    pub include_bots: bool,
    pub limit: u32,
    pub format: Format,
    /// Keyset position: the sort key of the last row of the previous page.
    pub after: Option<Vec<String>>,
}

fn parse_instant(param: &str, v: &str) -> Result<OffsetDateTime, ApiError> {
    let v = v.trim();
    let t = if v.len() == 10 {
        let d = Date::parse(
            v,
            &time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| {
            bad(
                param,
                format!("{param} {v:?} is not a date (YYYY-MM-DD) or RFC 3339 time"),
            )
        })?;
        d.with_time(Time::MIDNIGHT).assume_utc()
    } else {
        OffsetDateTime::parse(v, &Rfc3339)
            .map_err(|_| {
                bad(
                    param,
                    format!("{param} {v:?} is not a date (YYYY-MM-DD) or RFC 3339 time"),
                )
            })?
            .to_offset(UtcOffset::UTC)
    };
    if t.minute() != 0 || t.second() != 0 || t.nanosecond() != 0 {
        return Err(bad(
            param,
            format!("{param} {v:?} is not on an hour boundary; reports are hourly at the finest"),
        ));
    }
    Ok(t)
}

fn parse_bool(param: &str, v: &str) -> Result<bool, ApiError> {
    match v.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(bad(
            param,
            format!("{param} {other:?} is not true or false"),
        )),
    }
}

/// The end of the current hour.
fn next_hour(now: OffsetDateTime) -> OffsetDateTime {
    let floor = now.to_offset(UtcOffset::UTC).replace_time(
        Time::from_hms(now.to_offset(UtcOffset::UTC).hour(), 0, 0).expect("valid hour"),
    );
    floor + Duration::hours(1)
}

pub fn format_instant(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl ReportSpec {
    /// Parses and checks the parameters. `accept_csv`: the request's Accept
    /// header asked for CSV.
    pub fn parse(
        p: &ReportParams,
        accept_csv: bool,
        now: OffsetDateTime,
    ) -> Result<Self, ApiError> {
        let to = match &p.to {
            Some(v) => parse_instant("to", v)?,
            None => next_hour(now),
        };
        let from = match &p.from {
            Some(v) => parse_instant("from", v)?,
            None => to - Duration::days(DEFAULT_RANGE_DAYS),
        };
        if from >= to {
            return Err(bad(
                "from",
                format!(
                    "from ({}) must be before to ({})",
                    format_instant(from),
                    format_instant(to)
                ),
            ));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(bad(
                "to",
                format!(
                    "the range from..to spans {} days; at most {MAX_RANGE_DAYS} are allowed",
                    (to - from).whole_days()
                ),
            ));
        }
        let granularity = match p.granularity.as_deref().map(str::trim) {
            None | Some("") | Some("day") => Granularity::Day,
            Some("hour") => Granularity::Hour,
            Some("total") => Granularity::Total,
            Some(other) => {
                return Err(bad(
                    "granularity",
                    format!("granularity {other:?} is not hour, day or total"),
                ))
            }
        };
        if granularity == Granularity::Hour && to - from > Duration::days(MAX_HOURLY_RANGE_DAYS) {
            return Err(bad(
                "granularity",
                format!("hour granularity allows at most {MAX_HOURLY_RANGE_DAYS} days; use day or a shorter range"),
            ));
        }
        let mut group_by = Vec::new();
        if let Some(g) = &p.group_by {
            for name in g.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let dim = Dim::ALL
                    .into_iter()
                    .find(|d| d.column() == name)
                    .ok_or_else(|| {
                        bad(
                            "group_by",
                            format!("cannot group by {name:?}; use creative, episode, show, placement, country, app or device"),
                        )
                    })?;
                group_by.push(dim);
            }
        }
        group_by.sort();
        group_by.dedup();
        let include_bots = match &p.include_bots {
            Some(v) => parse_bool("include_bots", v)?,
            None => false,
        };
        let format = match p.format.as_deref().map(str::trim) {
            Some("csv") => Format::Csv,
            Some("json") => Format::Json,
            None | Some("") => {
                if accept_csv {
                    Format::Csv
                } else {
                    Format::Json
                }
            }
            Some(other) => {
                return Err(bad(
                    "format",
                    format!("format {other:?} is not json or csv"),
                ))
            }
        };
        let limit = match &p.limit {
            None => DEFAULT_PAGE_ROWS,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_ROWS).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "limit",
                        format!("limit {v:?} is not a number from 1 to {MAX_PAGE_ROWS}"),
                    ))
                }
            },
        };
        let mut spec = ReportSpec {
            from,
            to,
            granularity,
            group_by,
            include_bots,
            limit,
            format,
            after: None,
        };
        if let Some(token) = p.page_token.as_deref().filter(|t| !t.is_empty()) {
            spec.after = Some(spec.decode_token(token)?);
        }
        Ok(spec)
    }

    /// Identifies the query (not the page): a token only continues the query
    /// it came from.
    pub fn fingerprint(&self) -> String {
        let mut s = format!(
            "{}|{}|{:?}|{}|{}",
            format_instant(self.from),
            format_instant(self.to),
            self.granularity,
            self.group_by
                .iter()
                .map(|d| d.column())
                .collect::<Vec<_>>()
                .join(","),
            self.include_bots
        );
        let _ = write!(s, "|{}", self.limit);
        hex::encode(&Sha256::digest(s.as_bytes())[..8])
    }

    /// A stable string for cache keys: the whole normalized request.
    pub fn cache_key(&self, namespace: &str, campaign: &str, version: i64) -> String {
        let after = self
            .after
            .as_ref()
            .map(|a| a.join("\u{1f}"))
            .unwrap_or_default();
        let raw = format!(
            "{namespace}|{campaign}|{version}|{}|{:?}|{after}",
            self.fingerprint(),
            self.format
        );
        format!(
            "earshot:report:v1:{}",
            hex::encode(Sha256::digest(raw.as_bytes()))
        )
    }

    fn encode_token(&self, key: &[String]) -> String {
        let doc = serde_json::json!({"q": self.fingerprint(), "k": key});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    fn decode_token(&self, token: &str) -> Result<Vec<String>, ApiError> {
        let bad_token = || {
            bad(
                "page_token",
                "page_token is not a token this query returned",
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| bad_token())?;
        #[derive(Deserialize)]
        struct Tok {
            q: String,
            k: Vec<String>,
        }
        let t: Tok = serde_json::from_slice(&raw).map_err(|_| bad_token())?;
        // A NUL could only come from a hand-made token, and PostgreSQL text
        // cannot hold it: refused here rather than as a 500 from the query.
        if t.q != self.fingerprint()
            || t.k.len() != 1 + self.group_by.len()
            || t.k.iter().any(|k| k.contains('\0'))
        {
            return Err(bad_token());
        }
        OffsetDateTime::parse(&t.k[0], &Rfc3339).map_err(|_| bad_token())?;
        Ok(t.k)
    }

    /// Day and total reports over whole UTC days, grouped by nothing but
    /// creative and country, read the daily table (same numbers, a fraction
    /// of the rows).
    pub fn uses_daily_rollup(&self) -> bool {
        let midnight = |t: OffsetDateTime| t.hour() == 0;
        self.granularity != Granularity::Hour
            && midnight(self.from)
            && midnight(self.to)
            && self
                .group_by
                .iter()
                .all(|d| matches!(d, Dim::Creative | Dim::Country))
    }

    /// Totals over whole days read aligned multi-day blocks
    /// (`rollup_blocks`) plus the odd single days (`rollup_daily`).
    pub fn uses_day_blocks(&self) -> bool {
        self.granularity == Granularity::Total && self.uses_daily_rollup()
    }

    pub fn uniques_available(&self) -> bool {
        self.granularity != Granularity::Hour && self.group_by.iter().all(|d| *d == Dim::Creative)
    }
}

/// Spans of `rollup_blocks`, in days (migration 20261127000005); single
/// days are `rollup_daily` rows.
pub const BLOCK_SPANS: [i64; 7] = [2, 4, 8, 16, 32, 64, 128];

/// Splits the whole UTC days [from, to) into the fewest blocks aligned as
/// `rollup_blocks` aligns them (a block of n days starts on a day whose
/// distance from 1970-01-01 is a multiple of n), greedily taking the longest
/// block that starts where the last ended and does not pass `to`: at most
/// about 2·log2(days) blocks, each (span in days, first day); spans of 1 are
/// single days.
pub fn day_blocks(from: Date, to: Date) -> Vec<(i64, Date)> {
    let mut out = Vec::new();
    let mut day = from;
    while day < to {
        let n = (day - UNIX_EPOCH_DATE).whole_days();
        let left = (to - day).whole_days();
        let span = BLOCK_SPANS
            .iter()
            .rev()
            .copied()
            .find(|&s| n.rem_euclid(s) == 0 && s <= left)
            .unwrap_or(1);
        out.push((span, day));
        day += Duration::days(span);
    }
    out
}

/// The last day `rollup_blocks` holds (migration 10): later days are only in
/// `rollup_daily` until the loader folds them in.
const BLOCKS_THROUGH: &str = "SELECT blocks_through FROM counting_state";

/// How long the API trusts the blocks' mark it read. Reading it with every
/// report was one more round trip per uncached report (1,652 against 1,947
/// req/s in `scripts/bench-api`); the mark moves once a day.
pub const BLOCKS_MARK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The blocks' mark as last read, per database. An old mark is still right:
/// the mark only moves forward, and the blocks of the days up to any mark
/// it held stay whole (loads of those days add to them), so a report that
/// uses an old one reads a few more single days, never a partial block.
#[derive(Debug, Default)]
pub struct BlocksMark(std::sync::Mutex<Option<(Date, std::time::Instant)>>);

impl BlocksMark {
    /// The mark, read again when older than [`BLOCKS_MARK_TTL`].
    pub async fn get(&self, pool: &PgPool) -> Result<Date, sqlx::Error> {
        let held = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((mark, at)) = held {
            if at.elapsed() < BLOCKS_MARK_TTL {
                return Ok(mark);
            }
        }
        let mark: Date = sqlx::query_scalar(BLOCKS_THROUGH).fetch_one(pool).await?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((mark, std::time::Instant::now()));
        Ok(mark)
    }
}

/// The whole UTC days [from, to) as [`day_blocks`] splits them, for the days
/// up to `blocks_through`, then single days: a block is read only where
/// `rollup_blocks` holds every one of its days.
pub fn day_parts(from: Date, to: Date, blocks_through: Date) -> Vec<(i64, Date)> {
    let folded_end = to.min(blocks_through + Duration::days(1));
    let mut out = if from < folded_end {
        day_blocks(from, folded_end)
    } else {
        Vec::new()
    };
    let mut day = from.max(folded_end);
    while day < to {
        out.push((1, day));
        day += Duration::days(1);
    }
    out
}

/// What `rollup_daily` and `rollup_blocks` share, for reading both at once.
const ROLLUP_DAILY_COLUMNS: &str = "creative, country, raw_hits, bot_hits, invalid_hits, impressions, starts, \
    first_quartiles, midpoints, third_quartiles, completes, clicks, skips, errors, bot_impressions, bot_starts, \
    bot_completes, bot_clicks";

const UNIX_EPOCH_DATE: Date = time::macros::date!(1970 - 01 - 01);

/// Counted events per VAST kind, and the hit counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Metrics {
    /// Counted impressions: valid, deduplicated per listener, creative, episode and UTC day.
    pub impressions: i64,
    /// Every pixel hit of every kind, counted or not.
    pub raw_hits: i64,
    /// Hits from bots (recorded, never counted).
    pub bot_hits: i64,
    /// Malformed, unsigned or forged hits (recorded, never counted).
    pub invalid_hits: i64,
    /// Daily unique listeners with a counted impression, summed over the row's days.
    /// Null at hour granularity and when grouping by anything but creative.
    pub unique_listeners: Option<i64>,
    pub starts: i64,
    pub first_quartiles: i64,
    pub midpoints: i64,
    pub third_quartiles: i64,
    pub completes: i64,
    /// completes / starts; null when there are no starts.
    pub completion_rate: Option<f64>,
    pub clicks: i64,
    pub skips: i64,
    pub errors: i64,
    /// With `include_bots=true`: bot hits per event kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bots: Option<BotHits>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct BotHits {
    pub impressions: i64,
    pub starts: i64,
    pub completes: i64,
    pub clicks: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportRow {
    /// Start of the row's hour or day (UTC); for `total`, the range start.
    pub bucket: String,
    /// One field per `group_by` dimension (creative, country, ...); null where the pixel did not say.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub dims: std::collections::BTreeMap<String, Option<String>>,
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

/// The metric expressions and the column names `read_metrics` reads.
const METRICS: [(&str, &str); 16] = [
    (
        "sum(counted_hits) FILTER (WHERE event = 'impression')",
        "m_impressions",
    ),
    ("sum(raw_hits)", "m_raw"),
    ("sum(bot_hits)", "m_bot"),
    ("sum(invalid_hits)", "m_invalid"),
    (
        "sum(counted_hits) FILTER (WHERE event = 'start')",
        "m_starts",
    ),
    (
        "sum(counted_hits) FILTER (WHERE event = 'firstQuartile')",
        "m_q1",
    ),
    (
        "sum(counted_hits) FILTER (WHERE event = 'midpoint')",
        "m_mid",
    ),
    (
        "sum(counted_hits) FILTER (WHERE event = 'thirdQuartile')",
        "m_q3",
    ),
    (
        "sum(counted_hits) FILTER (WHERE event = 'complete')",
        "m_complete",
    ),
    (
        "sum(counted_hits) FILTER (WHERE event = 'click')",
        "m_click",
    ),
    ("sum(counted_hits) FILTER (WHERE event = 'skip')", "m_skip"),
    (
        "sum(counted_hits) FILTER (WHERE event = 'error')",
        "m_error",
    ),
    (
        "sum(bot_hits) FILTER (WHERE event = 'impression')",
        "b_impressions",
    ),
    ("sum(bot_hits) FILTER (WHERE event = 'start')", "b_starts"),
    (
        "sum(bot_hits) FILTER (WHERE event = 'complete')",
        "b_completes",
    ),
    ("sum(bot_hits) FILTER (WHERE event = 'click')", "b_clicks"),
];

/// The same metrics over the wide daily table.
const DAILY_METRICS: [(&str, &str); 16] = [
    ("sum(impressions)", "m_impressions"),
    ("sum(raw_hits)", "m_raw"),
    ("sum(bot_hits)", "m_bot"),
    ("sum(invalid_hits)", "m_invalid"),
    ("sum(starts)", "m_starts"),
    ("sum(first_quartiles)", "m_q1"),
    ("sum(midpoints)", "m_mid"),
    ("sum(third_quartiles)", "m_q3"),
    ("sum(completes)", "m_complete"),
    ("sum(clicks)", "m_click"),
    ("sum(skips)", "m_skip"),
    ("sum(errors)", "m_error"),
    ("sum(bot_impressions)", "b_impressions"),
    ("sum(bot_starts)", "b_starts"),
    ("sum(bot_completes)", "b_completes"),
    ("sum(bot_clicks)", "b_clicks"),
];

fn metrics_select(daily: bool) -> String {
    (if daily { &DAILY_METRICS } else { &METRICS })
        .iter()
        .map(|(expr, name)| format!("coalesce({expr}, 0)::bigint AS {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_metrics(
    row: &sqlx::postgres::PgRow,
    include_bots: bool,
    uniques: Option<i64>,
) -> Result<Metrics, sqlx::Error> {
    use sqlx::Row;
    let g = |c: &str| row.try_get::<i64, _>(c);
    let starts = g("m_starts")?;
    let completes = g("m_complete")?;
    Ok(Metrics {
        impressions: g("m_impressions")?,
        raw_hits: g("m_raw")?,
        bot_hits: g("m_bot")?,
        invalid_hits: g("m_invalid")?,
        unique_listeners: uniques,
        starts,
        first_quartiles: g("m_q1")?,
        midpoints: g("m_mid")?,
        third_quartiles: g("m_q3")?,
        completes,
        completion_rate: (starts > 0).then(|| completes as f64 / starts as f64),
        clicks: g("m_click")?,
        skips: g("m_skip")?,
        errors: g("m_error")?,
        bots: if include_bots {
            Some(BotHits {
                impressions: g("b_impressions")?,
                starts: g("b_starts")?,
                completes: g("b_completes")?,
                clicks: g("b_clicks")?,
            })
        } else {
            None
        },
    })
}

/// Sums rows' counts (unique listeners excepted: they are not additive
/// across creatives); the completion rate is recomputed from the sums.
fn sum_metrics<'a>(rows: impl Iterator<Item = &'a Metrics>, include_bots: bool) -> Metrics {
    let mut t = Metrics::default();
    let mut bots = BotHits::default();
    for m in rows {
        t.impressions += m.impressions;
        t.raw_hits += m.raw_hits;
        t.bot_hits += m.bot_hits;
        t.invalid_hits += m.invalid_hits;
        t.starts += m.starts;
        t.first_quartiles += m.first_quartiles;
        t.midpoints += m.midpoints;
        t.third_quartiles += m.third_quartiles;
        t.completes += m.completes;
        t.clicks += m.clicks;
        t.skips += m.skips;
        t.errors += m.errors;
        if let Some(b) = &m.bots {
            bots.impressions += b.impressions;
            bots.starts += b.starts;
            bots.completes += b.completes;
            bots.clicks += b.clicks;
        }
    }
    t.completion_rate = (t.starts > 0).then(|| t.completes as f64 / t.starts as f64);
    t.bots = include_bots.then_some(bots);
    t
}

/// Runs the report for one campaign (already authorized).
pub async fn run(
    pool: &PgPool,
    blocks_mark: &BlocksMark,
    campaign: &str,
    spec: &ReportSpec,
) -> Result<Report, ApiError> {
    use sqlx::Row;
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
    let uniq_creative = if spec.group_by.contains(&Dim::Creative) {
        "b.creative"
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
    let mut args: Vec<String> = Vec::new();
    let keyset = match &spec.after {
        None => String::new(),
        Some(k) => {
            let mut lhs = vec!["b.bucket".to_owned()];
            let mut rhs = vec!["$4::timestamptz".to_owned()];
            for (i, d) in dims.iter().enumerate() {
                lhs.push(format!("b.{d}"));
                rhs.push(format!("${}::text", 5 + i));
            }
            args.extend(k.iter().cloned());
            format!("WHERE ({}) > ({})", lhs.join(", "), rhs.join(", "))
        }
    };
    let order: String = std::iter::once("b.bucket".to_owned())
        .chain(dims.iter().map(|d| format!("b.{d}")))
        .collect::<Vec<_>>()
        .join(", ");
    // The campaign's unique listeners over the range, for the totals.
    let uniq_sql = "SELECT sum(listeners)::bigint FROM daily_uniques WHERE campaign = $1 AND creative = ''
                AND day >= ($2 AT TIME ZONE 'UTC')::date
                AND day < ($3 AT TIME ZONE 'UTC')::date + (($3 AT TIME ZONE 'UTC')::time > '00:00')::int";
    // Parameters after the keyset's: the day blocks, when read.
    let next_param = 4 + if spec.after.is_some() {
        1 + dims.len()
    } else {
        0
    };
    let blocks = if spec.uses_day_blocks() {
        let through = blocks_mark.get(pool).await?;
        let (days, spans): (Vec<_>, Vec<_>) = day_parts(spec.from.date(), spec.to.date(), through)
            .into_iter()
            .partition(|(span, _)| *span == 1);
        Some((
            days.into_iter().map(|(_, d)| d).collect::<Vec<Date>>(),
            spans.iter().map(|(s, _)| *s as i32).collect::<Vec<i32>>(),
            spans.into_iter().map(|(_, d)| d).collect::<Vec<Date>>(),
        ))
    } else {
        None
    };
    let source = if blocks.is_some() {
        let (d, s, f) = (next_param, next_param + 1, next_param + 2);
        format!(
            "(SELECT {ROLLUP_DAILY_COLUMNS} FROM rollup_daily WHERE campaign = $1 AND day = ANY(${d}::date[])
              UNION ALL
              SELECT {ROLLUP_DAILY_COLUMNS} FROM rollup_blocks r JOIN unnest(${s}::int4[], ${f}::date[]) AS q (span_days, first_day)
                ON r.span_days = q.span_days AND r.first_day = q.first_day
              WHERE r.campaign = $1) src"
        )
    } else {
        format!("{table} WHERE campaign = $1 AND {range}")
    };
    let sql = format!(
        "WITH b AS (
            SELECT {bucket} AS bucket{dim_select}, {metrics}
            FROM {source}
            GROUP BY {group_cols}
        )
        SELECT b.*, u.listeners AS uniq, ({uniq_sql}) AS total_uniq FROM b {uniq_join} {keyset}
        ORDER BY {order} LIMIT {limit}",
        metrics = metrics_select(daily),
        limit = spec.limit as i64 + 1,
    );
    // Only constants, column names the parsed spec's enums choose and
    // numbered parameters go into the text; every value is bound.
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(campaign)
        .bind(spec.from)
        .bind(spec.to);
    if let Some(k) = &spec.after {
        q = q.bind(
            OffsetDateTime::parse(&k[0], &Rfc3339).map_err(|_| bad("page_token", "bad token"))?,
        );
        for v in &args[1..] {
            q = q.bind(v);
        }
    }
    if let Some((days, spans, firsts)) = &blocks {
        q = q.bind(days).bind(spans).bind(firsts);
    }
    let rows = q.fetch_all(pool).await?;
    let more = rows.len() > spec.limit as usize;
    let mut out = Vec::with_capacity(rows.len().min(spec.limit as usize));
    let mut last_key = None;
    for r in rows.iter().take(spec.limit as usize) {
        let bucket: OffsetDateTime = r.try_get("bucket")?;
        let mut dmap = std::collections::BTreeMap::new();
        let mut key = vec![format_instant(bucket)];
        for d in &dims {
            let v: String = r.try_get(*d)?;
            key.push(v.clone());
            dmap.insert((*d).to_owned(), (!v.is_empty()).then_some(v));
        }
        let uniq: Option<i64> = r.try_get("uniq")?;
        let uniq = if spec.uniques_available() {
            Some(uniq.unwrap_or(0))
        } else {
            None
        };
        out.push(ReportRow {
            bucket: format_instant(bucket),
            dims: dmap,
            metrics: read_metrics(r, spec.include_bots, uniq)?,
        });
        last_key = Some(key);
    }
    let totals = if spec.after.is_none() && !more {
        // The only page holds every group: its rows sum to the totals, which
        // saves scanning the rollups a second time.
        // The uniques total came with every row (an uncorrelated subquery,
        // run once); with no rows, there were none.
        let mut t = sum_metrics(out.iter().map(|r| &r.metrics), spec.include_bots);
        if spec.granularity != Granularity::Hour {
            let u: Option<i64> = match rows.first() {
                Some(r) => r.try_get("total_uniq")?,
                None => None,
            };
            t.unique_listeners = Some(u.unwrap_or(0));
        }
        t
    } else {
        let totals_sql = format!(
            "SELECT {metrics}, ({uniq_sql}) AS uniq FROM {table} WHERE campaign = $1 AND {range}",
            metrics = metrics_select(daily)
        );
        let t = sqlx::query(AssertSqlSafe(totals_sql))
            .bind(campaign)
            .bind(spec.from)
            .bind(spec.to)
            .fetch_one(pool)
            .await?;
        let total_uniq: Option<i64> = t.try_get("uniq")?;
        read_metrics(
            &t,
            spec.include_bots,
            (spec.granularity != Granularity::Hour).then(|| total_uniq.unwrap_or(0)),
        )?
    };
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

/// The same rows as CSV: a header, then one line per row.
pub fn to_csv(report: &Report, spec: &ReportSpec) -> String {
    let mut out = String::new();
    let mut header: Vec<&str> = vec!["bucket"];
    header.extend(spec.group_by.iter().map(|d| d.column()));
    header.extend([
        "impressions",
        "raw_hits",
        "bot_hits",
        "invalid_hits",
        "unique_listeners",
        "starts",
        "first_quartiles",
        "midpoints",
        "third_quartiles",
        "completes",
        "completion_rate",
        "clicks",
        "skips",
        "errors",
    ]);
    if spec.include_bots {
        header.extend([
            "bot_impressions",
            "bot_starts",
            "bot_completes",
            "bot_clicks",
        ]);
    }
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for r in &report.rows {
        let mut cells: Vec<String> = vec![r.bucket.clone()];
        for d in &spec.group_by {
            cells.push(csv_cell(
                r.dims
                    .get(d.column())
                    .cloned()
                    .flatten()
                    .as_deref()
                    .unwrap_or(""),
            ));
        }
        let m = &r.metrics;
        cells.extend([
            m.impressions.to_string(),
            m.raw_hits.to_string(),
            m.bot_hits.to_string(),
            m.invalid_hits.to_string(),
            m.unique_listeners
                .map(|u| u.to_string())
                .unwrap_or_default(),
            m.starts.to_string(),
            m.first_quartiles.to_string(),
            m.midpoints.to_string(),
            m.third_quartiles.to_string(),
            m.completes.to_string(),
            m.completion_rate
                .map(|c| serde_json::to_string(&c).unwrap_or_default())
                .unwrap_or_default(),
            m.clicks.to_string(),
            m.skips.to_string(),
            m.errors.to_string(),
        ]);
        if let Some(b) = &m.bots {
            cells.extend([b.impressions, b.starts, b.completes, b.clicks].map(|v| v.to_string()));
        }
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// RFC 4180 quoting, and a leading quote mark against spreadsheet formula
/// injection (`=`, `+`, `-`, `@` at the start of a cell).
fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn day_blocks_cover_the_range_once_with_aligned_blocks() {
        // 2026-08-24 .. 2026-11-22 (90 days): day 20,689 since 1970 is odd.
        let b = day_blocks(date!(2026 - 08 - 24), date!(2026 - 11 - 22));
        assert_eq!(
            b.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 32, 32, 8, 2, 1],
        );
        assert_eq!(b[0].1, date!(2026 - 08 - 24));
        // Every range up to 400 days from every start in a year.
        let epoch = UNIX_EPOCH_DATE;
        for start in 0..366 {
            let from = date!(2026 - 01 - 01) + Duration::days(start);
            for len in 0..=400 {
                let to = from + Duration::days(len);
                let blocks = day_blocks(from, to);
                let mut day = from;
                for (span, first) in &blocks {
                    assert_eq!(*first, day, "contiguous");
                    assert!(*span == 1 || BLOCK_SPANS.contains(span));
                    assert_eq!(
                        (*first - epoch).whole_days().rem_euclid(*span),
                        0,
                        "aligned"
                    );
                    day += Duration::days(*span);
                }
                assert_eq!(day, to, "covers [from, to) exactly");
                assert!(blocks.len() <= 15, "{len} days: {} blocks", blocks.len());
            }
        }
    }

    #[test]
    fn day_parts_use_blocks_only_up_to_the_last_folded_day() {
        let (from, to) = (date!(2026 - 08 - 24), date!(2026 - 11 - 22));
        assert_eq!(
            day_parts(from, to, date!(2026 - 12 - 31)),
            day_blocks(from, to),
            "every day folded"
        );
        let singles: Vec<(i64, Date)> = (0..(to - from).whole_days())
            .map(|i| (1, from + Duration::days(i)))
            .collect();
        assert_eq!(
            day_parts(from, to, date!(2026 - 08 - 23)),
            singles,
            "none folded"
        );
        let through = date!(2026 - 11 - 19);
        let parts = day_parts(from, to, through);
        let mut covered = Vec::new();
        for &(span, first) in &parts {
            let last = first + Duration::days(span - 1);
            assert!(span == 1 || last <= through, "{span} days from {first}");
            covered.extend((0..span).map(|i| first + Duration::days(i)));
        }
        assert_eq!(covered, singles.iter().map(|&(_, d)| d).collect::<Vec<_>>());
        assert_eq!(
            &parts[parts.len() - 3..],
            &[
                (1, date!(2026 - 11 - 19)),
                (1, date!(2026 - 11 - 20)),
                (1, date!(2026 - 11 - 21))
            ][..],
            "the block of the 20th and 21st is not read: the 20th is not folded"
        );
    }

    #[test]
    fn only_totals_over_whole_days_by_creative_and_country_read_day_blocks() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let spec = |pairs: &[(&str, &str)]| ReportSpec::parse(&p(pairs), false, now).unwrap();
        let base = [("from", "2026-08-24"), ("to", "2026-11-22")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            spec(&v).uses_day_blocks()
        };
        assert!(with(&[
            ("granularity", "total"),
            ("group_by", "creative,country")
        ]));
        assert!(with(&[("granularity", "total")]));
        assert!(!with(&[("granularity", "day")]));
        assert!(!with(&[("granularity", "total"), ("group_by", "app")]));
        assert!(!spec(&[
            ("from", "2026-08-24T06:00:00Z"),
            ("to", "2026-11-22"),
            ("granularity", "total")
        ])
        .uses_day_blocks());
    }

    fn p(pairs: &[(&str, &str)]) -> ReportParams {
        let mut r = ReportParams::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "from" => r.from = v,
                "to" => r.to = v,
                "granularity" => r.granularity = v,
                "group_by" => r.group_by = v,
                "include_bots" => r.include_bots = v,
                "format" => r.format = v,
                "limit" => r.limit = v,
                "page_token" => r.page_token = v,
                _ => panic!("{k}"),
            }
        }
        r
    }

    const NOW: OffsetDateTime = datetime!(2026-11-27 10:30 UTC);

    fn err_param(pairs: &[(&str, &str)]) -> String {
        match ReportSpec::parse(&p(pairs), false, NOW).unwrap_err() {
            ApiError::BadParam { param, .. } => param,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn defaults_are_the_last_30_days_by_day() {
        let s = ReportSpec::parse(&p(&[]), false, NOW).unwrap();
        assert_eq!(s.to, datetime!(2026-11-27 11:00 UTC));
        assert_eq!(s.from, datetime!(2026-10-28 11:00 UTC));
        assert_eq!(
            (s.granularity, s.format, s.limit),
            (Granularity::Day, Format::Json, 1000)
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(
            err_param(&[("from", "2026-11-10"), ("to", "2026-11-01")]),
            "from"
        );
        assert_eq!(
            err_param(&[("from", "2026-11-01"), ("to", "2026-11-01")]),
            "from"
        );
        assert_eq!(
            err_param(&[("from", "2025-01-01"), ("to", "2026-11-01")]),
            "to"
        );
        assert_eq!(err_param(&[("from", "yesterday")]), "from");
        assert_eq!(err_param(&[("to", "2026-11-01T10:30:00Z")]), "to");
        assert_eq!(err_param(&[("granularity", "week")]), "granularity");
        assert_eq!(
            err_param(&[
                ("from", "2026-09-01"),
                ("to", "2026-11-01"),
                ("granularity", "hour")
            ]),
            "granularity"
        );
        assert_eq!(err_param(&[("group_by", "creative,planet")]), "group_by");
        assert_eq!(err_param(&[("include_bots", "maybe")]), "include_bots");
        assert_eq!(err_param(&[("format", "xml")]), "format");
        assert_eq!(err_param(&[("limit", "0")]), "limit");
        assert_eq!(err_param(&[("limit", "10001")]), "limit");
        assert_eq!(err_param(&[("page_token", "garbage")]), "page_token");
    }

    #[test]
    fn group_by_is_normalized_and_tokens_bind_to_their_query() {
        let s = ReportSpec::parse(&p(&[("group_by", "country, creative,country")]), false, NOW)
            .unwrap();
        assert_eq!(s.group_by, vec![Dim::Creative, Dim::Country]);
        let tok = s.encode_token(&["2026-11-01T00:00:00Z".into(), "cr1".into(), "DE".into()]);
        let again = ReportSpec::parse(
            &p(&[("group_by", "creative,country"), ("page_token", &tok)]),
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(again.after.unwrap()[1], "cr1");
        assert_eq!(
            err_param(&[("group_by", "creative"), ("page_token", &tok)]),
            "page_token"
        );
    }

    #[test]
    fn accept_header_selects_csv_unless_format_says_otherwise() {
        assert_eq!(
            ReportSpec::parse(&p(&[]), true, NOW).unwrap().format,
            Format::Csv
        );
        assert_eq!(
            ReportSpec::parse(&p(&[("format", "json")]), true, NOW)
                .unwrap()
                .format,
            Format::Json
        );
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
    }
}
