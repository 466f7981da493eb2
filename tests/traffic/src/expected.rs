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
//!   over the days of a row;
//! - reach is the number of distinct listener ids with a valid impression
//!   over a row's days (every valid impression's key counts once, so these
//!   are the listeners of its counted impressions). An id is one audience
//!   member within one listener-id period (the edge's default,
//!   [`DEFAULT_LISTENER_PERIOD`]: a UTC month), so a member heard in two
//!   periods is two. Audiences here are far below 2,048 listeners, where
//!   the reach sketch is exact, so the API must give exactly this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use earshot_domain::metric::{Metric, Source, METRICS};
use earshot_domain::{EventKind, Verdict};
use earshot_edge::config::DEFAULT_LISTENER_PERIOD;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::generate::{Hit, HitKind};

/// One report row's numbers, named as the API names them: the metrics of
/// the registry a report shows without `include_bots` (its counters, the
/// unique listeners and reach; ratios and the upper-bound flag are left
/// out), in registry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(Vec<u64>);

/// The metrics [`Counts`] holds.
fn fields() -> impl Iterator<Item = &'static Metric> {
    METRICS.iter().filter(|m| match m.source {
        Source::Counter { .. } => m.bot_breakdown().is_none(),
        Source::DailyUniqueListeners | Source::Reach => true,
        Source::Ratio { .. } | Source::ReachUpperBound | Source::PerReach { .. } => false,
    })
}

impl Default for Counts {
    fn default() -> Self {
        Counts(vec![0; fields().count()])
    }
}

impl Counts {
    /// The field names, in the order [`Counts::values`] gives them.
    pub fn fields() -> Vec<&'static str> {
        fields().map(|m| m.name).collect()
    }

    pub fn values(&self) -> &[u64] {
        &self.0
    }

    /// Counts with each field's value from `value`.
    pub fn from_fn<E>(mut value: impl FnMut(&str) -> Result<u64, E>) -> Result<Self, E> {
        fields()
            .map(|m| value(m.name))
            .collect::<Result<_, _>>()
            .map(Counts)
    }

    /// The value of the field `name` (0 for a name it does not hold).
    pub fn get(&self, name: &str) -> u64 {
        fields()
            .position(|m| m.name == name)
            .map_or(0, |i| self.0[i])
    }

    /// Adds a hit to every counter it feeds.
    fn hit(&mut self, verdict: Verdict, kind: EventKind, counted: bool) {
        for (n, m) in self.0.iter_mut().zip(fields()) {
            *n += u64::from(m.takes(verdict, Some(kind), counted));
        }
    }

    fn unique_listeners(&mut self) -> &mut u64 {
        self.of(Source::DailyUniqueListeners)
    }

    fn reach(&mut self) -> &mut u64 {
        self.of(Source::Reach)
    }

    fn of(&mut self, source: Source) -> &mut u64 {
        let i = fields()
            .position(|m| m.source == source)
            .expect("the registry has it");
        &mut self.0[i]
    }

    fn add(&mut self, o: &Counts) {
        for (n, m) in self.0.iter_mut().zip(&o.0) {
            *n += m;
        }
    }
}

/// As an object of field names, in order.
impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (m, n) in fields().zip(&self.0) {
            map.serialize_entry(m.name, n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Counts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        Counts::from_fn(|name| {
            map.get(name)
                .copied()
                .ok_or_else(|| serde::de::Error::missing_field("a metric of the registry"))
        })
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
        // Listener ids (member, period) with a valid impression: per
        // campaign, creative and day; per campaign and creative; per
        // campaign.
        type Id = (u32, Date);
        let mut reach_day: HashSet<(&str, &str, Date, Id)> = HashSet::new();
        let mut reach_creative: HashSet<(&str, &str, Id)> = HashSet::new();
        let mut reach_campaign: HashSet<(&str, Id)> = HashSet::new();
        let mut days: Vec<Date> = Vec::new();
        for (h, day) in hits {
            days.push(day);
            out.hits += 1;
            let c = out.campaigns.entry(h.campaign.clone()).or_default();
            // A forged hit is reported under its campaign alone, in the
            // row of no creative (docs/COUNTING.md).
            let creative = match h.kind {
                HitKind::Forged(_) => "",
                HitKind::Valid | HitKind::Bot => &h.creative,
            };
            let row = c
                .by_day
                .entry(day_string(day))
                .or_default()
                .entry(creative.to_owned())
                .or_default();
            match h.kind {
                HitKind::Bot => {
                    out.bot_hits += 1;
                    row.hit(Verdict::Bot, h.event, false);
                }
                HitKind::Forged(_) => {
                    out.invalid_hits += 1;
                    row.hit(Verdict::Invalid, h.event, false);
                }
                HitKind::Valid => {
                    out.valid_hits += 1;
                    let first = counted.insert((
                        day,
                        &h.campaign,
                        &h.creative,
                        &h.episode,
                        h.event,
                        h.listener,
                    ));
                    row.hit(Verdict::Valid, h.event, first);
                    if h.event == EventKind::Impression {
                        if uniq_creative.insert((day, &h.campaign, &h.creative, h.listener)) {
                            *row.unique_listeners() += 1;
                        }
                        let id = (h.listener, DEFAULT_LISTENER_PERIOD.start(day));
                        if reach_day.insert((&h.campaign, &h.creative, day, id)) {
                            *row.reach() += 1;
                        }
                        reach_creative.insert((&h.campaign, &h.creative, id));
                        reach_campaign.insert((&h.campaign, id));
                        if uniq_campaign.insert((day, &h.campaign, h.listener)) {
                            *c.totals.unique_listeners() += 1;
                        }
                    }
                }
            }
        }
        // Reach is not additive: a row over several days (or creatives)
        // has its distinct ids.
        let mut creative_reach: HashMap<(&str, &str), u64> = HashMap::new();
        for (c, cr, _) in &reach_creative {
            *creative_reach.entry((c, cr)).or_default() += 1;
        }
        let mut campaign_reach: HashMap<&str, u64> = HashMap::new();
        for (c, _) in &reach_campaign {
            *campaign_reach.entry(c).or_default() += 1;
        }
        for (id, c) in out.campaigns.iter_mut() {
            let campaign_uniques = *c.totals.unique_listeners();
            let mut totals = Counts::default();
            for creatives in c.by_day.values() {
                for (cr, n) in creatives {
                    c.by_creative.entry(cr.clone()).or_default().add(n);
                    totals.add(n);
                }
            }
            for (cr, n) in c.by_creative.iter_mut() {
                let reach = creative_reach.get(&(id.as_str(), cr.as_str()));
                *n.reach() = reach.copied().unwrap_or(0);
            }
            *totals.unique_listeners() = campaign_uniques;
            *totals.reach() = campaign_reach.get(id.as_str()).copied().unwrap_or(0);
            c.totals = totals;
        }
        out.first_day = days.iter().min().map(|d| day_string(*d));
        out.last_day = days.iter().max().map(|d| day_string(*d));
        out
    }

    /// The numbers as a text table, one line per campaign, day and creative,
    /// then per-campaign totals.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "{:<20} {:<10} {:<12}", "campaign", "day", "creative");
        let fields = Counts::fields();
        for h in &fields {
            let _ = write!(s, " {h:>8}");
        }
        s.push('\n');
        let line = |s: &mut String, c: &str, d: &str, cr: &str, n: &Counts| {
            let _ = write!(s, "{c:<20} {d:<10} {cr:<12}");
            for (v, h) in n.values().iter().zip(&fields) {
                let _ = write!(s, " {v:>w$}", w = h.len().max(8));
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
        let a1 = &c.by_day["2026-11-27"]["a"];
        assert_eq!(
            (
                a1.get("impressions"),
                a1.get("raw_hits"),
                a1.get("bot_hits"),
                a1.get("invalid_hits"),
                a1.get("unique_listeners"),
                a1.get("starts")
            ),
            (1, 4, 1, 0, 1, 1)
        );
        // The forged hit, under no creative.
        let forged = &c.by_day["2026-11-27"][""];
        assert_eq!((forged.get("raw_hits"), forged.get("invalid_hits")), (1, 1));
        assert_eq!(c.by_day["2026-11-28"]["a"].get("impressions"), 1);
        assert_eq!(c.by_creative["a"].get("impressions"), 2);
        assert_eq!(c.by_creative["a"].get("unique_listeners"), 2);
        assert_eq!(c.by_creative["b"].get("unique_listeners"), 1);
        // Listener 1 on day 1 heard a and b: one campaign-wide unique that day.
        assert_eq!(c.totals.get("unique_listeners"), 2);
        assert_eq!(c.totals.get("impressions"), 3);
        // Reach: listener 1 on both days (one monthly id) and listener 1
        // again for b; the bot, the forger and the start reach no one.
        assert_eq!(a1.get("reach"), 1);
        assert_eq!(c.by_creative["a"].get("reach"), 1);
        assert_eq!(c.by_creative["b"].get("reach"), 1);
        assert_eq!(forged.get("reach"), 0);
        assert_eq!(c.totals.get("reach"), 1);
        assert_eq!(c.totals.get("raw_hits"), 7);
        assert_eq!(
            (e.hits, e.valid_hits, e.bot_hits, e.invalid_hits),
            (7, 5, 1, 1)
        );
        assert_eq!(e.first_day.as_deref(), Some("2026-11-27"));
        assert_eq!(e.last_day.as_deref(), Some("2026-11-28"));
    }

    #[test]
    fn a_listener_is_one_id_a_month_in_reach() {
        use EventKind::Impression;
        let days = [
            date!(2026 - 11 - 27),
            date!(2026 - 11 - 30),
            date!(2026 - 12 - 01),
        ];
        let hits: Vec<(Hit, Date)> = days
            .iter()
            .map(|&d| (hit(1, "a", Impression, HitKind::Valid), d))
            .chain([(hit(2, "a", Impression, HitKind::Valid), days[1])])
            .collect();
        let e = Expected::compute(hits.iter().map(|(h, d)| (h, *d)));
        let c = &e.campaigns["c1"];
        assert_eq!(c.by_day["2026-11-30"]["a"].get("reach"), 2);
        // Listener 1 in November and in December, listener 2 in November.
        assert_eq!(c.by_creative["a"].get("reach"), 3);
        assert_eq!(c.totals.get("reach"), 3);
        assert_eq!(c.totals.get("unique_listeners"), 4);
    }
}
