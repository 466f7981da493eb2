//! The rollup deltas of one object, computed in the loader from its new
//! events and what the counting rule decided for them.
//!
//! Doing this in Rust rather than in SQL over a staging table means
//! PostgreSQL only writes: it receives a few thousand aggregated rows per
//! object instead of joining and grouping every event several times. The
//! rules are the ones in docs/COUNTING.md; `earshot verify` recounts every
//! rollup from the raw events table, and the loader's tests compare both.

use std::sync::LazyLock;

use earshot_domain::metric::{counter_count, counters, Registry, METRICS};
use earshot_domain::{EventKind, TrackingEvent, Verdict};
use earshot_platform::rollup::HOURLY_HITS;
use time::{Date, OffsetDateTime};

use super::{HashMap, Staged};
use foldhash::HashMapExt as _;

/// Which counters of a registry each hit adds one to, by its verdict, event
/// kind and whether it counted: looked up per event instead of asking every
/// counter.
#[derive(Debug)]
pub struct Tally {
    counters: usize,
    /// Indexed by [`Tally::slot`].
    feeds: Vec<Vec<usize>>,
}

const VERDICTS: [Verdict; 3] = [Verdict::Valid, Verdict::Bot, Verdict::Invalid];

impl Tally {
    pub fn new(registry: Registry) -> Self {
        let mut feeds =
            vec![Vec::new(); Self::slot(Verdict::Invalid, Some(EventKind::Error), true) + 1];
        for verdict in VERDICTS {
            let kinds = std::iter::once(None).chain(EventKind::ALL.map(Some));
            for kind in kinds {
                for counted in [false, true] {
                    feeds[Self::slot(verdict, kind, counted)] = counters(registry)
                        .filter(|(_, m)| m.takes(verdict, kind, counted))
                        .map(|(i, _)| i)
                        .collect();
                }
            }
        }
        Self {
            counters: counter_count(registry),
            feeds,
        }
    }

    /// The tally of earshot's registry ([`METRICS`]).
    pub fn standard() -> &'static Tally {
        static STANDARD: LazyLock<Tally> = LazyLock::new(|| Tally::new(METRICS));
        &STANDARD
    }

    /// Number of counters, the length of a daily row's values.
    pub fn counters(&self) -> usize {
        self.counters
    }

    fn slot(verdict: Verdict, kind: Option<EventKind>, counted: bool) -> usize {
        let kind = kind.map_or(0, |k| k as usize + 1);
        ((verdict as usize * (EventKind::ALL.len() + 1)) + kind) * 2 + usize::from(counted)
    }

    /// Adds a hit to `values` (a row of the registry's counters).
    fn add(&self, values: &mut [i64], verdict: Verdict, kind: Option<EventKind>, counted: bool) {
        for &i in &self.feeds[Self::slot(verdict, kind, counted)] {
            values[i] += 1;
        }
    }
}

/// A `rollup_hourly` key: every reporting dimension, '' when missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HourlyKey<'a> {
    pub campaign: &'a str,
    /// Unix seconds of the UTC hour.
    pub hour: i64,
    /// [`hourly_group`] of the dimensions below: what the merge groups by
    /// (migration 9). Follows from them, so it changes no equality.
    pub group: i64,
    pub creative: &'a str,
    pub episode: &'a str,
    pub show: &'a str,
    pub placement: &'a str,
    pub event: &'a str,
    pub country: &'a str,
    pub app: &'a str,
    pub device: &'a str,
    pub region: &'a str,
}

/// An hourly row's counts, one per `earshot_platform::rollup::HOURLY_HITS`.
pub type HourlyCounts = [i64; HOURLY_HITS.len()];

/// An event's dimensions below the hour, in `rollup_hourly`'s column order
/// ('' when missing): what its hourly row holds and [`hourly_group`] hashes.
///
/// An invalid hit's creative, episode and show are '': they are claims
/// nobody vouched for (a forged or tampered URL), so the hit rolls up under
/// the campaign it claims alone, and a flood of made-up ids adds a row per
/// campaign and hour, not one per id. Its raw event keeps them as sent.
/// The other dimensions are the edge's own (placement and event are one of
/// a few names; app, device, country and region come from its lists and
/// its geography data).
pub(crate) fn hourly_dims(e: &TrackingEvent) -> [&str; 9] {
    fn claimed(verdict: Verdict, id: Option<&str>) -> &str {
        match verdict {
            Verdict::Invalid => "",
            Verdict::Valid | Verdict::Bot => id.unwrap_or(""),
        }
    }
    [
        claimed(e.verdict, e.creative.as_ref().map(|x| x.as_str())),
        claimed(e.verdict, e.episode.as_ref().map(|x| x.as_str())),
        claimed(e.verdict, e.show.as_ref().map(|x| x.as_str())),
        e.placement.map_or("", |p| p.as_str()),
        e.event.map_or("", |k| k.as_str()),
        e.country.as_ref().map_or("", |c| c.as_str()),
        e.app.as_deref().unwrap_or(""),
        e.device.as_deref().unwrap_or(""),
        e.region.as_ref().map_or("", |r| r.as_str()),
    ]
}

/// The hash of an hourly row's dimensions below the hour that `rollup_hourly.grp`
/// holds: the first 8 bytes of the MD5 of the dimensions joined by
/// U+001F, as a big-endian signed integer; the region only when it is not
/// '', so rows without one hash as they did before it was a dimension
/// (migration 24). Migration 9 gives the same in SQL, for rows appended
/// before it (`compact::GROUP_HASH_SQL`); a test holds the two equal. MD5
/// because PostgreSQL has it built in, not for secrecy: a collision only
/// makes the merge rewrite two groups' rows as they were.
pub fn hourly_group(dims: [&str; 9]) -> i64 {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    let [first8 @ .., region] = dims;
    for (i, d) in first8.iter().enumerate() {
        if i > 0 {
            h.update([0x1f]);
        }
        h.update(d.as_bytes());
    }
    if !region.is_empty() {
        h.update([0x1f]);
        h.update(region.as_bytes());
    }
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("MD5 has 16 bytes"))
}

/// A `rollup_daily` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DailyKey<'a> {
    pub campaign: &'a str,
    pub day: Date,
    pub creative: &'a str,
    pub country: &'a str,
}

/// What the new events of one object add to the rollups. Daily rows are
/// sorted by key, the order concurrent loaders take their locks in; hourly
/// rows are appended (no locks) and come in (campaign, hour) order.
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    pub hourly: Vec<(HourlyKey<'a>, HourlyCounts)>,
    /// Each key's counters, in the order of the registry's counters.
    pub daily: Vec<(DailyKey<'a>, Vec<i64>)>,
    /// Campaigns the object touched.
    pub campaigns: Vec<&'a str>,
}

/// Unix seconds of the start of the UTC hour holding `ts`.
pub(crate) fn hour_of(ts: OffsetDateTime) -> i64 {
    ts.unix_timestamp().div_euclid(3600) * 3600
}

/// Sums `fresh` (the object's events not loaded before) into rollup rows of
/// earshot's counters; `counted[i]` says whether `fresh[i]` counted.
pub fn rollups<'a>(fresh: &[&'a Staged], counted: &[bool]) -> Rollups<'a> {
    Tally::standard().rollups(fresh, counted)
}

impl Tally {
    /// Sums `fresh` into rollup rows of this tally's counters.
    pub fn rollups<'a>(&self, fresh: &[&'a Staged], counted: &[bool]) -> Rollups<'a> {
        // Nearly one hourly group per event on realistic traffic: size for it.
        let mut hourly: HashMap<HourlyKey<'a>, HourlyCounts> = HashMap::with_capacity(fresh.len());
        let mut daily: HashMap<DailyKey<'a>, Vec<i64>> = HashMap::new();
        let mut campaigns: Vec<&'a str> = Vec::new();
        for (st, &is_counted) in fresh.iter().zip(counted) {
            let e = &st.event;
            let campaign = e.campaign.as_ref().map_or("", |c| c.as_str());
            let [creative, episode, show, placement, event, country, app, device, region] =
                hourly_dims(e);
            if let Some(c) = &e.campaign {
                if campaigns.last() != Some(&c.as_str()) {
                    campaigns.push(c.as_str());
                }
            }
            let h = hourly
                .entry(HourlyKey {
                    campaign,
                    hour: hour_of(e.ts),
                    group: st.hourly_group,
                    creative,
                    episode,
                    show,
                    placement,
                    event,
                    country,
                    app,
                    device,
                    region,
                })
                .or_default();
            for (n, hits) in h.iter_mut().zip(HOURLY_HITS) {
                *n += i64::from(hits.takes(e.verdict, is_counted));
            }

            let d = daily
                .entry(DailyKey {
                    campaign,
                    day: st.day,
                    creative,
                    country,
                })
                .or_insert_with(|| vec![0; self.counters]);
            self.add(d, e.verdict, e.event, is_counted);
        }
        // Hourly rows are appended (no locks to order), in campaign order: an
        // object's rows of one campaign then share pages, and a merge or a
        // report of that campaign reads those pages, not every page the object
        // wrote. Only by (campaign, hour): sorting by every dimension cost 9%
        // of the loader's CPU and bought nothing.
        let mut hourly: Vec<_> = hourly.into_iter().collect();
        hourly.sort_unstable_by_key(|(k, _)| (k.campaign, k.hour));
        let mut daily: Vec<_> = daily.into_iter().collect();
        daily.sort_unstable_by_key(|(k, _)| *k);
        campaigns.sort_unstable();
        campaigns.dedup();
        Rollups {
            hourly,
            daily,
            campaigns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::tests::{impression, staged, L1, L2};
    use earshot_domain::metric::counter_index;
    use time::macros::datetime;

    #[test]
    fn a_region_splits_its_countrys_row_and_rows_without_one_keep_their_hash() {
        use md5::{Digest, Md5};
        let eight = [
            "cr1",
            "ep1",
            "show1",
            "pre",
            "impression",
            "US",
            "Overcast",
            "iPhone",
        ];
        // Migration 9's hash, from before the region was a dimension.
        let d = Md5::digest(eight.join("\u{1f}").as_bytes());
        let before = i64::from_be_bytes(d[..8].try_into().unwrap());
        let with = |region| {
            let mut dims = [""; 9];
            dims[..8].copy_from_slice(&eight);
            dims[8] = region;
            hourly_group(dims)
        };
        assert_eq!(with(""), before);
        assert_ne!(with("US-CA"), before);
        assert_ne!(with("US-CA"), with("US-NY"));

        let ts = datetime!(2026-11-27 10:15 UTC);
        let in_region = |id, listener, region| {
            let mut e = impression(id, ts, listener).event;
            e.region = earshot_domain::RegionCode::parse(region);
            e.country = e.region.map(|r| r.country());
            crate::counting::stage(e)
        };
        let (ca, ny) = (in_region(1, L1, "US-CA"), in_region(2, L2, "US-NY"));
        let r = rollups(&[&ca, &ny], &[true, true]);
        let mut rows: Vec<(&str, &str, i64)> = r
            .hourly
            .iter()
            .map(|(k, v)| (k.country, k.region, v[0]))
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, vec![("US", "US-CA", 1), ("US", "US-NY", 1)]);
        // The daily rows are by country alone.
        assert_eq!(r.daily.len(), 1);
        assert_eq!(r.daily[0].0.country, "US");
    }

    #[test]
    fn rollups_add_up_by_verdict_kind_and_counting() {
        let ts = datetime!(2026-11-27 10:15 UTC);
        let imp = impression(1, ts, L1);
        let dup = impression(2, ts + time::Duration::minutes(1), L1);
        let other = impression(3, ts, L2);
        let bot = staged(4, ts, EventKind::Complete, L2, Verdict::Bot);
        let invalid = staged(
            5,
            datetime!(2026-11-27 11:00 UTC),
            EventKind::Click,
            L2,
            Verdict::Invalid,
        );
        let fresh = [&imp, &dup, &other, &bot, &invalid];
        let r = rollups(&fresh, &[true, false, true, false, false]);
        assert_eq!(r.campaigns, vec!["c1"]);
        let mut hourly: Vec<(i64, &str, &str, HourlyCounts)> = r
            .hourly
            .iter()
            .map(|(k, v)| (k.hour, k.event, k.creative, *v))
            .collect();
        hourly.sort_unstable();
        let ten = datetime!(2026-11-27 10:00 UTC).unix_timestamp();
        // The invalid hit rolls up under its campaign alone.
        assert_eq!(
            hourly,
            vec![
                (ten, "complete", "cr1", [1, 0, 1, 0]),
                (ten, "impression", "cr1", [3, 2, 0, 0]),
                (ten + 3600, "click", "", [1, 0, 0, 1]),
            ]
        );
        let creatives: Vec<&str> = r.daily.iter().map(|(k, _)| k.creative).collect();
        assert_eq!(creatives, vec!["", "cr1"]);
        let (invalid, d) = (&r.daily[0].1, &r.daily[1].1);
        let col = |name| counter_index(METRICS, name).unwrap();
        assert_eq!(d[col("raw_hits")], 4);
        assert_eq!(d[col("bot_hits")], 1);
        assert_eq!(d[col("invalid_hits")], 0);
        assert_eq!(d[col("impressions")], 2);
        assert_eq!(d[col("completes")], 0);
        assert_eq!(d[col("bot_completes")], 1);
        assert_eq!(d.iter().sum::<i64>(), 4 + 1 + 2 + 1);
        assert_eq!(invalid[col("raw_hits")], 1);
        assert_eq!(invalid[col("invalid_hits")], 1);
        assert_eq!(invalid.iter().sum::<i64>(), 2);
    }
}
