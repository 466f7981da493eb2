//! A report request: its query parameters parsed into a normalized spec
//! (every error names its parameter), its page tokens and cache key.

use std::fmt::Write as _;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// ISO 3166-2 subdivision (`US-CA`), where the edge's geography data has
    /// regions (a City file).
    Region,
    App,
    Device,
}

impl Dim {
    pub const ALL: [Dim; 8] = [
        Dim::Creative,
        Dim::Episode,
        Dim::Show,
        Dim::Placement,
        Dim::Country,
        Dim::Region,
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
            Dim::Region => "region",
            Dim::App => "app",
            Dim::Device => "device",
        }
    }

    /// The `reach_sketches.dim` of this dimension's audiences, where the
    /// loader sketches them (`earshot_platform::sketch::DIMS`).
    pub fn sketch_dim(self) -> Option<&'static str> {
        use earshot_platform::sketch as s;
        match self {
            Dim::Creative => Some(s::DIM_CREATIVE),
            Dim::Episode => Some(s::DIM_EPISODE),
            Dim::Show => Some(s::DIM_SHOW),
            Dim::Country => Some(s::DIM_COUNTRY),
            Dim::App => Some(s::DIM_APP),
            Dim::Device => Some(s::DIM_DEVICE),
            Dim::Placement | Dim::Region => None,
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
    /// Comma-separated: creative, episode, show, placement, country, region, app, device.
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

/// The whole UTC days [first, end) of the range [`from`, `to`): a range
/// that starts or ends inside a day takes that whole day, as the daily
/// figures it reads (reach, frequency) know no hours.
pub fn whole_days(from: OffsetDateTime, to: OffsetDateTime) -> (Date, Date) {
    let to = to.to_offset(UtcOffset::UTC);
    let end = to.date() + Duration::days(i64::from(to.time() > Time::MIDNIGHT));
    (from.to_offset(UtcOffset::UTC).date(), end)
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
                            format!("cannot group by {name:?}; use creative, episode, show, placement, country, region, app or device"),
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

    /// A stable string for cache keys: the whole normalized request. `v2`:
    /// the cached value holds the next page's token before the body
    /// (`report_cache.rs`), so replicas of a version that cached the body
    /// alone never read it.
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
            "earshot:report:v2:{}",
            hex::encode(Sha256::digest(raw.as_bytes()))
        )
    }

    pub(crate) fn encode_token(&self, key: &[String]) -> String {
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

    /// Whether rows show reach: by day or in total, grouped by nothing or
    /// by one dimension the loader sketches (not placement, and never two:
    /// no sketch is kept per pair of values).
    pub fn reach_available(&self) -> bool {
        self.granularity != Granularity::Hour
            && match self.group_by.as_slice() {
                [] => true,
                [d] => d.sketch_dim().is_some(),
                _ => false,
            }
    }

    /// The sketched dimension rows are grouped by, where rows show reach.
    pub fn reach_dim(&self) -> Option<Dim> {
        match self.group_by.as_slice() {
            [d] if self.reach_available() => Some(*d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The parameters `pairs` name, read by `ReportParams`' own
    /// `Deserialize`, so the field names live in one place.
    fn p(pairs: &[(&str, &str)]) -> ReportParams {
        let query =
            serde_json::Map::from_iter(pairs.iter().map(|(k, v)| (k.to_string(), (*v).into())));
        serde_json::from_value(query.into()).unwrap()
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
    fn rows_show_reach_by_day_or_total_grouped_by_one_sketched_dimension_at_most() {
        let reach = |pairs: &[(&str, &str)]| {
            let s = ReportSpec::parse(&p(pairs), false, NOW).unwrap();
            (s.reach_available(), s.reach_dim())
        };
        assert_eq!(reach(&[]), (true, None));
        assert_eq!(reach(&[("granularity", "hour")]), (false, None));
        for d in ["creative", "episode", "show", "country", "app", "device"] {
            let got = reach(&[("granularity", "total"), ("group_by", d)]);
            assert_eq!(got.1.map(Dim::column), Some(d));
        }
        assert_eq!(reach(&[("group_by", "placement")]), (false, None));
        assert_eq!(reach(&[("group_by", "region")]), (false, None));
        assert_eq!(reach(&[("group_by", "country,app")]), (false, None));
        assert_eq!(
            reach(&[("granularity", "hour"), ("group_by", "country")]),
            (false, None)
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
        assert!(!with(&[("granularity", "total"), ("group_by", "region")]));
        assert!(!spec(&[
            ("from", "2026-08-24T06:00:00Z"),
            ("to", "2026-11-22"),
            ("granularity", "total")
        ])
        .uses_day_blocks());
    }
}
