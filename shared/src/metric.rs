//! The report's metrics, each defined once: its name, what feeds it, and its
//! place in a report row.
//!
//! Everything that counts, stores or shows a metric reads [`METRICS`]: the
//! loader's tally and its SQL over `rollup_daily` and `rollup_blocks`,
//! `earshot verify`'s recounts, the report's columns, sums, JSON and CSV,
//! and the traffic generator's expected report. Adding a counter is one
//! entry here plus the migration that gives both daily tables its column
//! (a test compares the registry with the migrated schema).

use crate::{EventKind, Verdict};

/// Which hits a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hits {
    /// Every hit, whatever its verdict.
    All,
    /// Valid hits that count: the first of their counting key that UTC day
    /// (docs/COUNTING.md).
    Counted,
    /// Hits from bots (recorded, never counted).
    Bot,
    /// Malformed, unsigned or forged hits (recorded, never counted).
    Invalid,
}

impl Hits {
    /// Does a hit with `verdict`, counted or not, belong here?
    pub const fn takes(self, verdict: Verdict, counted: bool) -> bool {
        match self {
            Hits::All => true,
            Hits::Counted => counted,
            Hits::Bot => matches!(verdict, Verdict::Bot),
            Hits::Invalid => matches!(verdict, Verdict::Invalid),
        }
    }
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A counter the rollups sum: the hits of `hits` whose event is `kind`
    /// (of any kind, or none, when `None`).
    Counter { hits: Hits, kind: Option<EventKind> },
    /// Listeners with a counted impression per UTC day (`daily_uniques`),
    /// summed over the days of a row. Not additive across creatives, so a
    /// report shows it only by day or in total, grouped by creative at most.
    DailyUniqueListeners,
    /// Distinct listeners with a counted impression over the row's days,
    /// from the merged reach sketches (HyperLogLog: exact up to 2,048
    /// listeners, about 0.8% standard error beyond). Offered where the
    /// sketches are kept: by day or in total, grouped by nothing or by one
    /// of creative, show, episode, country, app and device.
    Reach,
    /// Whether [`Source::Reach`] unites listeners identified under more
    /// than one listener-id period (the listener id changes each period),
    /// which makes it an upper bound.
    ReachUpperBound,
    /// A counter over the row's reach; null where reach is null or 0.
    PerReach { numerator: &'static str },
    /// One counter over another, from the row's sums; null when the
    /// denominator is 0.
    Ratio {
        numerator: &'static str,
        denominator: &'static str,
    },
}

/// One metric of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name in reports (JSON and CSV) and, for a counter, its column in
    /// `rollup_daily` and `rollup_blocks`.
    pub name: &'static str,
    pub source: Source,
    /// What it means, as the API's description says it.
    pub doc: &'static str,
}

/// A list of metrics in report order; [`METRICS`] is earshot's.
pub type Registry = &'static [Metric];

/// Prefix of the bot counters by event kind, which reports show only with
/// `include_bots=true`, and in JSON under `bots` without the prefix.
pub const BOT_BREAKDOWN_PREFIX: &str = "bot_";

const fn counter(
    name: &'static str,
    hits: Hits,
    kind: Option<EventKind>,
    doc: &'static str,
) -> Metric {
    Metric {
        name,
        source: Source::Counter { hits, kind },
        doc,
    }
}

const fn counted(name: &'static str, kind: EventKind, doc: &'static str) -> Metric {
    counter(name, Hits::Counted, Some(kind), doc)
}

const fn bots(name: &'static str, kind: EventKind) -> Metric {
    counter(name, Hits::Bot, Some(kind), "Bot hits of this event kind.")
}

/// earshot's metrics, in the order a report row shows them.
pub const METRICS: Registry = &[
    counted(
        "impressions",
        EventKind::Impression,
        "Counted impressions: valid, deduplicated per listener, creative, episode and UTC day.",
    ),
    counter(
        "raw_hits",
        Hits::All,
        None,
        "Every pixel hit of every kind, counted or not.",
    ),
    counter(
        "bot_hits",
        Hits::Bot,
        None,
        "Hits from bots (recorded, never counted).",
    ),
    counter(
        "invalid_hits",
        Hits::Invalid,
        None,
        "Malformed, unsigned or forged hits (recorded, never counted).",
    ),
    Metric {
        name: "unique_listeners",
        source: Source::DailyUniqueListeners,
        doc: "Daily unique listeners with a counted impression, summed over the row's days. Null at hour granularity and when grouping by anything but creative.",
    },
    Metric {
        name: "reach",
        source: Source::Reach,
        doc: "Distinct listeners with a counted impression over the row's days (the range's whole UTC days), from merged HyperLogLog sketches: exact up to 2,048 listeners, about 0.8% standard error beyond. Null at hour granularity, and when grouping by placement, by region or by more than one dimension (sketches are kept for the whole campaign and per creative, show, episode, country, app and device).",
    },
    Metric {
        name: "frequency",
        source: Source::PerReach {
            numerator: "impressions",
        },
        doc: "impressions / reach: counted impressions per listener reached. Null where reach is null or 0.",
    },
    Metric {
        name: "reach_upper_bound",
        source: Source::ReachUpperBound,
        doc: "True when the row's reach unites more than one listener-id period (listener ids change every UTC month, or every day with daily ids): a listener heard in two periods counts twice, so reach is an upper bound. Null where reach is null.",
    },
    counted("starts", EventKind::Start, "Counted starts."),
    counted(
        "first_quartiles",
        EventKind::FirstQuartile,
        "Counted first quartiles.",
    ),
    counted("midpoints", EventKind::Midpoint, "Counted midpoints."),
    counted(
        "third_quartiles",
        EventKind::ThirdQuartile,
        "Counted third quartiles.",
    ),
    counted("completes", EventKind::Complete, "Counted completes."),
    Metric {
        name: "completion_rate",
        source: Source::Ratio {
            numerator: "completes",
            denominator: "starts",
        },
        doc: "completes / starts; null when there are no starts.",
    },
    counted("clicks", EventKind::Click, "Counted clicks."),
    counted("skips", EventKind::Skip, "Counted skips."),
    counted("errors", EventKind::Error, "Counted VAST errors."),
    bots("bot_impressions", EventKind::Impression),
    bots("bot_starts", EventKind::Start),
    bots("bot_completes", EventKind::Complete),
    bots("bot_clicks", EventKind::Click),
];

impl Metric {
    /// The counter's hits and event kind; `None` for a metric that is not
    /// summed in the rollups.
    pub const fn counter(&self) -> Option<(Hits, Option<EventKind>)> {
        match self.source {
            Source::Counter { hits, kind } => Some((hits, kind)),
            _ => None,
        }
    }

    /// Does a hit of `kind` with `verdict`, counted or not, add one to this
    /// counter? Never, for a metric that is not a counter.
    pub fn takes(&self, verdict: Verdict, kind: Option<EventKind>, counted: bool) -> bool {
        match self.source {
            Source::Counter { hits, kind: k } => {
                hits.takes(verdict, counted) && (k.is_none() || k == kind)
            }
            _ => false,
        }
    }

    /// Its name under `bots` when it is a bot counter of one event kind,
    /// which reports show only with `include_bots=true`.
    pub fn bot_breakdown(&self) -> Option<&'static str> {
        match self.source {
            Source::Counter {
                hits: Hits::Bot,
                kind: Some(_),
            } => Some(
                self.name
                    .strip_prefix(BOT_BREAKDOWN_PREFIX)
                    .unwrap_or(self.name),
            ),
            _ => None,
        }
    }
}

/// The counters of `registry` in order, each with its index among them (its
/// column in a row of counter values).
pub fn counters(registry: Registry) -> impl Iterator<Item = (usize, &'static Metric)> {
    registry
        .iter()
        .filter(|m| m.counter().is_some())
        .enumerate()
}

/// Number of counters in `registry`.
pub fn counter_count(registry: Registry) -> usize {
    counters(registry).count()
}

/// The index among the counters of the counter named `name`.
pub fn counter_index(registry: Registry, name: &str) -> Option<usize> {
    counters(registry)
        .find(|(_, m)| m.name == name)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_ratios_name_counters() {
        let names: HashSet<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), METRICS.len());
        for m in METRICS {
            if let Source::Ratio {
                numerator,
                denominator,
            } = m.source
            {
                assert!(counter_index(METRICS, numerator).is_some(), "{}", m.name);
                assert!(counter_index(METRICS, denominator).is_some(), "{}", m.name);
            }
            if let Source::PerReach { numerator } = m.source {
                assert!(counter_index(METRICS, numerator).is_some(), "{}", m.name);
            }
        }
    }

    #[test]
    fn each_kind_is_counted_once_and_only_counted_hits_count() {
        for kind in EventKind::ALL {
            let fed: Vec<&str> = METRICS
                .iter()
                .filter(|m| m.takes(Verdict::Valid, Some(kind), true))
                .map(|m| m.name)
                .collect();
            assert_eq!(fed.len(), 2, "raw_hits and the kind's counter: {fed:?}");
            assert!(fed.contains(&"raw_hits"), "{fed:?}");
            let uncounted: Vec<&str> = METRICS
                .iter()
                .filter(|m| m.takes(Verdict::Valid, Some(kind), false))
                .map(|m| m.name)
                .collect();
            assert_eq!(uncounted, ["raw_hits"]);
        }
        let bot: Vec<&str> = METRICS
            .iter()
            .filter(|m| m.takes(Verdict::Bot, Some(EventKind::Click), false))
            .map(|m| m.name)
            .collect();
        assert_eq!(bot, ["raw_hits", "bot_hits", "bot_clicks"]);
    }

    #[test]
    fn counters_are_named_as_the_daily_tables_name_their_columns() {
        let named = |hits: Hits, kind: Option<EventKind>| {
            counters(METRICS)
                .find(|(_, m)| m.counter() == Some((hits, kind)))
                .map(|(_, m)| m.name)
        };
        assert_eq!(
            [
                named(Hits::All, None),
                named(Hits::Bot, None),
                named(Hits::Invalid, None)
            ],
            [Some("raw_hits"), Some("bot_hits"), Some("invalid_hits")]
        );
        let counted: Vec<Option<&str>> = EventKind::ALL
            .iter()
            .map(|k| named(Hits::Counted, Some(*k)))
            .collect();
        assert_eq!(
            counted,
            [
                "impressions",
                "starts",
                "first_quartiles",
                "midpoints",
                "third_quartiles",
                "completes",
                "skips",
                "clicks",
                "errors"
            ]
            .map(Some)
        );
        let bots: Vec<&str> = EventKind::ALL
            .iter()
            .filter_map(|k| named(Hits::Bot, Some(*k)))
            .collect();
        assert_eq!(
            bots,
            [
                "bot_impressions",
                "bot_starts",
                "bot_completes",
                "bot_clicks"
            ]
        );
    }

    #[test]
    fn only_bot_counters_by_kind_are_the_bot_breakdown() {
        let breakdown: Vec<(&str, &str)> = METRICS
            .iter()
            .filter_map(|m| Some((m.name, m.bot_breakdown()?)))
            .collect();
        assert_eq!(
            breakdown,
            [
                ("bot_impressions", "impressions"),
                ("bot_starts", "starts"),
                ("bot_completes", "completes"),
                ("bot_clicks", "clicks")
            ]
        );
        assert_eq!(counter_count(METRICS), 16);
    }
}
