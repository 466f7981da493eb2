//! The sequence audit (`earshot audit`, `GET /v1/admin/audit`, the
//! loader's gauges): what the edges numbered against what arrived, per UTC
//! hour, per edge and in total (docs/COUNTING.md, "How we know nothing was
//! lost"). Reads the sequence ledger the loader writes
//! (`earshot_loader::sequences`, migration 23).
//!
//! Per edge, the numbers 1 … N it gave out (N: the highest number seen in
//! an event, a quarantined line or a heartbeat) are each **stored**,
//! **quarantined** (the line arrived and was refused) or **missing**. A
//! missing run is filed under the time of the first record after it (the
//! next stored or quarantined number, or a heartbeat that counts past it):
//! that record proves the run was numbered by then. Younger than the
//! in-flight window it is **in flight** (Firehose may still be buffering
//! it, the loader may not have loaded it yet); older, **lost**.
//! Duplicates (an event stored already, by id) are counted apart and never
//! fill a missing number. Numbers after an edge's last heartbeat cannot be
//! missing: nothing says they were given out. Such an edge has an
//! **unknown tail** (it died without its shutdown heartbeat), unless its
//! last event is younger than the in-flight window (it may be serving
//! still).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The UTC hour `ts` falls in.
pub fn hour_of(ts: OffsetDateTime) -> OffsetDateTime {
    let ts = ts.to_offset(time::UtcOffset::UTC);
    ts.replace_time(time::Time::from_hms(ts.hour(), 0, 0).unwrap_or(time::Time::MIDNIGHT))
}

/// How long a missing number counts as in flight: Firehose's buffer
/// interval (the SAM template's `BufferIntervalSeconds`, 60 s by default,
/// at most 900 s) plus the loader's lag (its `LoaderBacklog` alarm fires at
/// 900 s), with the default interval and a loader keeping up well inside.
/// `earshot audit --in-flight-minutes` sets another.
pub const DEFAULT_IN_FLIGHT: Duration = Duration::from_secs(15 * 60);

/// The hours an audit reports on and how it judges missing numbers.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// First hour reported (rounded down to the hour).
    pub from: OffsetDateTime,
    /// End of the hours reported (exclusive).
    pub to: OffsetDateTime,
    /// The instant ages are measured from.
    pub now: OffsetDateTime,
    /// Missing numbers younger than this are in flight, older ones lost.
    pub in_flight: Duration,
}

/// One row of figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Figures {
    /// Numbers given out: stored + quarantined + in flight + lost.
    pub numbered: u64,
    /// Numbers whose event is stored in `events`.
    pub stored: u64,
    /// Events that arrived again after they were stored (not numbers).
    pub duplicates: u64,
    /// Numbered lines that arrived and were quarantined.
    pub quarantined: u64,
    /// Missing numbers younger than the in-flight window.
    pub in_flight: u64,
    /// Missing numbers older than the in-flight window.
    pub lost: u64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.numbered += o.numbered;
        self.stored += o.stored;
        self.duplicates += o.duplicates;
        self.quarantined += o.quarantined;
        self.in_flight += o.in_flight;
        self.lost += o.lost;
    }
}

/// A run of missing numbers of one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Missing {
    /// The edge id (32 hex digits).
    pub edge: String,
    /// The first missing number of the run.
    pub lo: u64,
    /// The last missing number of the run (inclusive).
    pub hi: u64,
    /// When the first record after the run was written: the run was
    /// numbered before then.
    #[serde(with = "time::serde::rfc3339")]
    pub proven_at: OffsetDateTime,
    /// Older than the in-flight window.
    pub lost: bool,
}

impl Missing {
    pub fn len(&self) -> u64 {
        self.hi - self.lo + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What is known about the end of an edge's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tail {
    /// A heartbeat counts up to (or past) its last number seen.
    Known,
    /// Its last number seen is younger than the in-flight window: it may be
    /// serving still, its next heartbeat is not due.
    Open,
    /// No heartbeat after its last number seen: numbers after it, if any,
    /// cannot be told from numbers never given out.
    Unknown,
}

/// One edge over its whole life (as far as the ledger knows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EdgeSummary {
    /// The edge id (32 hex digits).
    pub edge: String,
    /// The highest number seen (events, quarantined lines, heartbeats).
    pub numbered: u64,
    /// The last heartbeat's number, if any arrived.
    pub last_heartbeat: Option<u64>,
    /// Whether numbers after the last one seen could be missing unseen.
    pub tail: Tail,
}

/// One UTC hour: each edge's figures and their total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HourReport {
    /// The hour's start (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    /// The sum of the hour's edges.
    pub total: Figures,
    /// Quarantined lines that carried no number (not from a numbering
    /// edge), by when they were quarantined.
    pub quarantined_unnumbered: u64,
    /// Each edge's figures, by edge id.
    pub edges: BTreeMap<String, Figures>,
}

/// The audit of a span of hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Audit {
    /// The first hour audited (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// The end of the hours audited (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// The in-flight window: missing numbers younger than this are in
    /// flight, older ones lost.
    pub in_flight_seconds: u64,
    /// The hours with any record, in order.
    pub hours: Vec<HourReport>,
    /// The sum of the hours.
    pub total: Figures,
    /// Quarantined lines that carried no number, over the hours.
    pub quarantined_unnumbered: u64,
    /// Every missing run filed under an hour of the span.
    pub missing: Vec<Missing>,
    /// Every edge with a record in the span.
    pub edges: Vec<EdgeSummary>,
}

impl Audit {
    /// Whether anything was lost: what makes `earshot audit` exit non-zero.
    pub fn any_lost(&self) -> bool {
        self.total.lost > 0
    }

    /// The lost numbers of `edge`, each once, in order.
    pub fn lost_seqs(&self, edge: &str) -> Vec<u64> {
        self.missing
            .iter()
            .filter(|m| m.lost && m.edge == edge)
            .flat_map(|m| m.lo..=m.hi)
            .collect()
    }
}

/// One ledger row as the audit reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct RangeRow {
    edge: String,
    hour: OffsetDateTime,
    lo: i64,
    hi: i64,
    lo_ts: OffsetDateTime,
    hi_ts: OffsetDateTime,
    state: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct HeartbeatRow {
    edge: String,
    seq: i64,
    ts: OffsetDateTime,
}

/// The edges with a range or a heartbeat in [from, to), then every row of
/// theirs: a missing run is found from its neighbours, which may lie
/// outside the span.
const EDGES_IN_SPAN: &str = "SELECT edge FROM edge_seq_ranges WHERE hour >= $1 AND hour < $2
UNION SELECT edge FROM edge_heartbeats WHERE ts >= $1 AND ts < $2";
const RANGES_OF: &str = "SELECT edge, hour, lo, hi, lo_ts, hi_ts, state FROM edge_seq_ranges
WHERE edge = ANY($1) ORDER BY edge, lo";
const HEARTBEATS_OF: &str =
    "SELECT edge, seq, ts FROM edge_heartbeats WHERE edge = ANY($1) ORDER BY edge, seq, ts";
/// Quarantined lines with no `"edge":"…"` (the ledger has the others), per
/// UTC hour: counted by migration 25's function, so a role that may not
/// read the raw lines (the API's) gets the count all the same.
const UNNUMBERED_QUARANTINE: &str =
    "SELECT hour, lines FROM earshot_quarantined_unnumbered($1, $2)";

/// Audits the hours of `opts` from the ledger.
pub async fn audit(pool: &PgPool, opts: AuditOptions) -> Result<Audit, sqlx::Error> {
    let from = hour_of(opts.from);
    let to = opts.to;
    let edges: Vec<String> = sqlx::query_scalar(EDGES_IN_SPAN)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    let ranges: Vec<RangeRow> = sqlx::query_as(RANGES_OF)
        .bind(&edges)
        .fetch_all(pool)
        .await?;
    let heartbeats: Vec<HeartbeatRow> = sqlx::query_as(HEARTBEATS_OF)
        .bind(&edges)
        .fetch_all(pool)
        .await?;
    let unnumbered: Vec<(OffsetDateTime, i64)> = sqlx::query_as(UNNUMBERED_QUARANTINE)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    Ok(compute(opts, &ranges, &heartbeats, &unnumbered))
}

/// The figures of `edge` in `hour`.
fn figures<'a, 'e>(
    hours: &'a mut BTreeMap<OffsetDateTime, HashMap<&'e str, Figures>>,
    hour: OffsetDateTime,
    edge: &'e str,
) -> &'a mut Figures {
    hours.entry(hour).or_default().entry(edge).or_default()
}

fn compute(
    opts: AuditOptions,
    ranges: &[RangeRow],
    heartbeats: &[HeartbeatRow],
    unnumbered: &[(OffsetDateTime, i64)],
) -> Audit {
    let from = hour_of(opts.from);
    let to = opts.to;
    let in_span = |h: OffsetDateTime| h >= from && h < to;
    let mut by_edge: BTreeMap<&str, (Vec<&RangeRow>, Vec<&HeartbeatRow>)> = BTreeMap::new();
    for r in ranges {
        by_edge.entry(&r.edge).or_default().0.push(r);
    }
    for h in heartbeats {
        by_edge.entry(&h.edge).or_default().1.push(h);
    }
    let mut hours: BTreeMap<OffsetDateTime, HashMap<&str, Figures>> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut edges = Vec::new();
    for (edge, (rs, hbs)) in &by_edge {
        // Stored, quarantined and duplicates, by the events' hour.
        let mut covering: Vec<&RangeRow> = Vec::new();
        let mut seen_max = 0u64;
        for r in rs {
            let n = (r.hi - r.lo + 1) as u64;
            seen_max = seen_max.max(r.hi as u64);
            let f = figures(&mut hours, r.hour, edge);
            match r.state.as_str() {
                "stored" => {
                    f.stored += n;
                    f.numbered += n;
                    covering.push(r);
                }
                "quarantined" => {
                    f.quarantined += n;
                    f.numbered += n;
                    covering.push(r);
                }
                _ => f.duplicates += n,
            }
        }
        let heartbeat_max = hbs.iter().map(|h| h.seq as u64).max();
        // The earliest heartbeat that counts to `seq` or past it.
        let heartbeat_past = |seq: u64| {
            hbs.iter()
                .filter(|h| h.seq as u64 >= seq)
                .map(|h| h.ts)
                .min()
        };
        let mut runs: Vec<(u64, u64, OffsetDateTime)> = Vec::new();
        let mut next = 1u64;
        for r in &covering {
            let (lo, hi) = (r.lo as u64, r.hi as u64);
            if lo > next {
                let proven = heartbeat_past(lo - 1).map_or(r.lo_ts, |t| t.min(r.lo_ts));
                runs.push((next, lo - 1, proven));
            }
            next = next.max(hi + 1);
        }
        let covered_max = next - 1;
        if let Some(hb) = heartbeat_max.filter(|&hb| hb >= next) {
            if let Some(proven) = heartbeat_past(hb) {
                runs.push((next, hb, proven));
            }
        }
        for (lo, hi, proven_at) in runs {
            let lost = opts.now - proven_at >= opts.in_flight;
            let f = figures(&mut hours, hour_of(proven_at), edge);
            let n = hi - lo + 1;
            f.numbered += n;
            if lost {
                f.lost += n;
            } else {
                f.in_flight += n;
            }
            if in_span(hour_of(proven_at)) {
                missing.push(Missing {
                    edge: (*edge).to_owned(),
                    lo,
                    hi,
                    proven_at,
                    lost,
                });
            }
        }
        let tail = match heartbeat_max {
            Some(hb) if hb >= covered_max => Tail::Known,
            _ => {
                let last_ts = covering
                    .iter()
                    .filter(|r| r.hi as u64 == covered_max)
                    .map(|r| r.hi_ts)
                    .max();
                match last_ts {
                    Some(t) if opts.now - t < opts.in_flight => Tail::Open,
                    _ => Tail::Unknown,
                }
            }
        };
        edges.push(EdgeSummary {
            edge: (*edge).to_owned(),
            numbered: seen_max.max(heartbeat_max.unwrap_or(0)),
            last_heartbeat: heartbeat_max,
            tail,
        });
    }
    let mut unnumbered_by_hour: BTreeMap<OffsetDateTime, u64> = BTreeMap::new();
    for (h, n) in unnumbered {
        *unnumbered_by_hour.entry(hour_of(*h)).or_default() += *n as u64;
    }
    let mut total = Figures::default();
    let mut reports = Vec::new();
    let all_hours: std::collections::BTreeSet<OffsetDateTime> = hours
        .keys()
        .chain(unnumbered_by_hour.keys())
        .copied()
        .filter(|h| in_span(*h))
        .collect();
    for hour in all_hours {
        let per_edge: BTreeMap<String, Figures> = hours
            .get(&hour)
            .map(|m| m.iter().map(|(e, f)| ((*e).to_owned(), *f)).collect())
            .unwrap_or_default();
        let mut hour_total = Figures::default();
        for f in per_edge.values() {
            hour_total.add(f);
        }
        total.add(&hour_total);
        reports.push(HourReport {
            hour,
            total: hour_total,
            quarantined_unnumbered: unnumbered_by_hour.get(&hour).copied().unwrap_or(0),
            edges: per_edge,
        });
    }
    Audit {
        from,
        to,
        in_flight_seconds: opts.in_flight.as_secs(),
        quarantined_unnumbered: reports.iter().map(|r| r.quarantined_unnumbered).sum(),
        hours: reports,
        total,
        missing,
        edges,
    }
}

/// The audit as text: a row per hour (its total, then each edge), the
/// missing runs, the edges whose tail is not known, and the total.
pub fn render(a: &Audit) -> String {
    use std::fmt::Write;
    let ts = |t: OffsetDateTime| earshot_domain::wire::format_ts(t);
    let row = |out: &mut String, hour: &str, who: &str, f: &Figures| {
        let _ = writeln!(
            out,
            "{hour:<24} {who:<32} {:>10} {:>10} {:>10} {:>11} {:>9} {:>8}",
            f.numbered, f.stored, f.duplicates, f.quarantined, f.in_flight, f.lost
        );
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<32} {:>10} {:>10} {:>10} {:>11} {:>9} {:>8}",
        "hour", "edge", "numbered", "stored", "duplicates", "quarantined", "in_flight", "lost"
    );
    for h in &a.hours {
        let hour = ts(h.hour);
        row(&mut out, &hour, "total", &h.total);
        for (edge, f) in &h.edges {
            row(&mut out, &hour, edge, f);
        }
        if h.quarantined_unnumbered > 0 {
            let _ = writeln!(
                out,
                "{hour:<24} quarantined lines without a number: {}",
                h.quarantined_unnumbered
            );
        }
    }
    for m in &a.missing {
        let _ = writeln!(
            out,
            "missing {} {}-{} ({} numbers) {} (numbered before {})",
            m.edge,
            m.lo,
            m.hi,
            m.len(),
            if m.lost { "lost" } else { "in flight" },
            ts(m.proven_at)
        );
    }
    for e in a.edges.iter().filter(|e| e.tail != Tail::Known) {
        let _ = writeln!(
            out,
            "edge {} numbered up to {}, last heartbeat {}: tail {}",
            e.edge,
            e.numbered,
            e.last_heartbeat
                .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            match e.tail {
                Tail::Open => "open (it may be serving still)",
                _ => "unknown (no heartbeat after its last number seen)",
            }
        );
    }
    let t = &a.total;
    let _ = writeln!(
        out,
        "total {} .. {}: numbered {} stored {} duplicates {} quarantined {} in_flight {} lost {} (in-flight window {} s; {} quarantined lines without a number)",
        ts(a.from),
        ts(a.to),
        t.numbered,
        t.stored,
        t.duplicates,
        t.quarantined,
        t.in_flight,
        t.lost,
        a.in_flight_seconds,
        a.quarantined_unnumbered
    );
    out
}
