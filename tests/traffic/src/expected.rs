//! The report the reporting API must return for a set of hits, computed
//! from what the generator drew, by the counting rules (docs/COUNTING.md),
//! independently of the edge, the loader and the database:
//!
//! - every hit is a raw hit of the campaign and creative its URL names;
//!   bots' hits are bot hits, forged ones invalid hits, neither ever counted;
//! - a valid hit counts once per (listener, creative, episode, event, UTC
//!   day) — the listener id is IP + user agent per UTC day, and each
//!   audience member is exactly one IP (or /64) and one user agent;
//! - unique listeners are, per UTC day, the listeners with a valid
//!   impression (of the creative, or of any creative of the campaign), summed
//!   over the days of a row.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use earshot_domain::EventKind;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::generate::{Hit, HitKind};

/// One report row's numbers, named as the API names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub impressions: u64,
    pub raw_hits: u64,
    pub bot_hits: u64,
    pub invalid_hits: u64,
    pub unique_listeners: u64,
    pub starts: u64,
    pub first_quartiles: u64,
    pub midpoints: u64,
    pub third_quartiles: u64,
    pub completes: u64,
    pub clicks: u64,
    pub skips: u64,
    pub errors: u64,
}

impl Counts {
    /// The field names, in the order [`Counts::values`] gives them.
    pub const FIELDS: [&'static str; 13] = [
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
        "clicks",
        "skips",
        "errors",
    ];

    pub fn values(&self) -> [u64; 13] {
        [
            self.impressions,
            self.raw_hits,
            self.bot_hits,
            self.invalid_hits,
            self.unique_listeners,
            self.starts,
            self.first_quartiles,
            self.midpoints,
            self.third_quartiles,
            self.completes,
            self.clicks,
            self.skips,
            self.errors,
        ]
    }

    fn counted(&mut self, e: EventKind) {
        let slot = match e {
            EventKind::Impression => &mut self.impressions,
            EventKind::Start => &mut self.starts,
            EventKind::FirstQuartile => &mut self.first_quartiles,
            EventKind::Midpoint => &mut self.midpoints,
            EventKind::ThirdQuartile => &mut self.third_quartiles,
            EventKind::Complete => &mut self.completes,
            EventKind::Click => &mut self.clicks,
            EventKind::Skip => &mut self.skips,
            EventKind::Error => &mut self.errors,
        };
        *slot += 1;
    }

    fn add(&mut self, o: &Counts) {
        self.impressions += o.impressions;
        self.raw_hits += o.raw_hits;
        self.bot_hits += o.bot_hits;
        self.invalid_hits += o.invalid_hits;
        self.unique_listeners += o.unique_listeners;
        self.starts += o.starts;
        self.first_quartiles += o.first_quartiles;
        self.midpoints += o.midpoints;
        self.third_quartiles += o.third_quartiles;
        self.completes += o.completes;
        self.clicks += o.clicks;
        self.skips += o.skips;
        self.errors += o.errors;
    }
}

/// One campaign's expected report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignReport {
    /// `granularity=day&group_by=creative`: day (`YYYY-MM-DD`) → creative → numbers.
    pub by_day: BTreeMap<String, BTreeMap<String, Counts>>,
    /// `granularity=total&group_by=creative`: creative → numbers (uniques
    /// summed over days).
    pub by_creative: BTreeMap<String, Counts>,
    /// The report's `totals` (uniques: campaign-wide daily uniques, summed over days).
    pub totals: Counts,
}

/// What the API must report, per campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    /// Every hit sent.
    pub hits: u64,
    pub valid_hits: u64,
    pub bot_hits: u64,
    pub invalid_hits: u64,
    /// First and last UTC day with hits (`YYYY-MM-DD`).
    pub first_day: Option<String>,
    pub last_day: Option<String>,
    pub campaigns: BTreeMap<String, CampaignReport>,
}

pub fn day_string(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl Expected {
    /// The report for `hits`, each paired with the UTC day the edge
    /// stamped it with (the day of its receipt).
    pub fn compute<'a>(hits: impl IntoIterator<Item = (&'a Hit, Date)>) -> Self {
        let mut out = Expected::default();
        let mut counted: HashSet<(Date, &str, &str, &str, EventKind, u32)> = HashSet::new();
        let mut uniq_creative: HashSet<(Date, &str, &str, u32)> = HashSet::new();
        let mut uniq_campaign: HashSet<(Date, &str, u32)> = HashSet::new();
        let mut days: Vec<Date> = Vec::new();
        for (h, day) in hits {
            days.push(day);
            out.hits += 1;
            let c = out.campaigns.entry(h.campaign.clone()).or_default();
            let row = c
                .by_day
                .entry(day_string(day))
                .or_default()
                .entry(h.creative.clone())
                .or_default();
            row.raw_hits += 1;
            match h.kind {
                HitKind::Bot => {
                    out.bot_hits += 1;
                    row.bot_hits += 1;
                }
                HitKind::Forged(_) => {
                    out.invalid_hits += 1;
                    row.invalid_hits += 1;
                }
                HitKind::Valid => {
                    out.valid_hits += 1;
                    if counted.insert((
                        day,
                        &h.campaign,
                        &h.creative,
                        &h.episode,
                        h.event,
                        h.listener,
                    )) {
                        row.counted(h.event);
                    }
                    if h.event == EventKind::Impression {
                        if uniq_creative.insert((day, &h.campaign, &h.creative, h.listener)) {
                            row.unique_listeners += 1;
                        }
                        if uniq_campaign.insert((day, &h.campaign, h.listener)) {
                            c.totals.unique_listeners += 1;
                        }
                    }
                }
            }
        }
        for c in out.campaigns.values_mut() {
            let campaign_uniques = c.totals.unique_listeners;
            let mut totals = Counts::default();
            for creatives in c.by_day.values() {
                for (cr, n) in creatives {
                    c.by_creative.entry(cr.clone()).or_default().add(n);
                    totals.add(n);
                }
            }
            totals.unique_listeners = campaign_uniques;
            c.totals = totals;
        }
        out.first_day = days.iter().min().map(|d| day_string(*d));
        out.last_day = days.iter().max().map(|d| day_string(*d));
        out
    }

    /// The numbers as a text table, one line per campaign, day and creative,
    /// then per-campaign totals.
    pub fn table(&self) -> String {
        let short = [
            "impr", "raw", "bot", "invalid", "uniq", "start", "q1", "mid", "q3", "complete",
            "click", "skip", "error",
        ];
        let mut s = String::new();
        let _ = write!(s, "{:<20} {:<10} {:<12}", "campaign", "day", "creative");
        for h in short {
            let _ = write!(s, " {h:>8}");
        }
        s.push('\n');
        let line = |s: &mut String, c: &str, d: &str, cr: &str, n: &Counts| {
            let _ = write!(s, "{c:<20} {d:<10} {cr:<12}");
            for v in n.values() {
                let _ = write!(s, " {v:>8}");
            }
            s.push('\n');
        };
        for (id, c) in &self.campaigns {
            for (day, creatives) in &c.by_day {
                for (cr, n) in creatives {
                    line(&mut s, id, day, cr, n);
                }
            }
            line(&mut s, id, "total", "(all)", &c.totals);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Forgery;
    use std::net::IpAddr;
    use time::macros::date;

    fn hit(listener: u32, creative: &str, event: EventKind, kind: HitKind) -> Hit {
        Hit {
            seq: 0,
            offset: std::time::Duration::ZERO,
            query: String::new(),
            user_agent: None,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            country: "US",
            trace_id: String::new(),
            campaign: "c1".into(),
            creative: creative.into(),
            episode: "ep1".into(),
            event,
            listener,
            kind,
        }
    }

    #[test]
    fn counts_follow_the_rules() {
        use EventKind::*;
        let d1 = date!(2026 - 11 - 27);
        let d2 = date!(2026 - 11 - 28);
        let hits = [
            (hit(1, "a", Impression, HitKind::Valid), d1),
            (hit(1, "a", Impression, HitKind::Valid), d1), // duplicate: raw only
            (hit(1, "a", Impression, HitKind::Valid), d2), // next day: counts again
            (hit(1, "b", Impression, HitKind::Valid), d1), // other creative: counts
            (hit(2, "a", Start, HitKind::Valid), d1),      // no impression: no unique
            (hit(3, "a", Impression, HitKind::Bot), d1),
            (
                hit(4, "a", Impression, HitKind::Forged(Forgery::BadSignature)),
                d1,
            ),
        ];
        let e = Expected::compute(hits.iter().map(|(h, d)| (h, *d)));
        let c = &e.campaigns["c1"];
        let a1 = c.by_day["2026-11-27"]["a"];
        assert_eq!(
            (
                a1.impressions,
                a1.raw_hits,
                a1.bot_hits,
                a1.invalid_hits,
                a1.unique_listeners,
                a1.starts
            ),
            (1, 5, 1, 1, 1, 1)
        );
        assert_eq!(c.by_day["2026-11-28"]["a"].impressions, 1);
        assert_eq!(c.by_creative["a"].impressions, 2);
        assert_eq!(c.by_creative["a"].unique_listeners, 2);
        assert_eq!(c.by_creative["b"].unique_listeners, 1);
        // Listener 1 on day 1 heard a and b: one campaign-wide unique that day.
        assert_eq!(c.totals.unique_listeners, 2);
        assert_eq!(c.totals.impressions, 3);
        assert_eq!(c.totals.raw_hits, 7);
        assert_eq!(
            (e.hits, e.valid_hits, e.bot_hits, e.invalid_hits),
            (7, 5, 1, 1)
        );
        assert_eq!(e.first_day.as_deref(), Some("2026-11-27"));
        assert_eq!(e.last_day.as_deref(), Some("2026-11-28"));
    }
}
