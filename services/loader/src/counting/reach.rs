//! What an object's counted impressions add to the reach sketches
//! (`reach_sketches`, migration 21): per campaign and UTC day, whole and
//! per value of each sketched dimension (creative, show, episode, country,
//! app, device: `earshot_platform::sketch::DIMS`), the set of listeners
//! with a counted impression, as a HyperLogLog
//! (`earshot_platform::sketch`). A dimension's value is the one the
//! impression's hourly rollup row holds ([`hourly_dims`]), so each
//! report row's reach is over the listeners of that row's impressions.
//!
//! Only impressions the counting rule counted feed them, so a replayed or
//! duplicated hit adds nothing; a listener's second counted impression of
//! the day (another creative or episode) adds a listener already there.

use earshot_domain::TrackingEvent;
use earshot_domain::{EventKind, ListenerPeriod};
use earshot_platform::sketch::{
    in_frequency_sample, listener_hash, Sketch, DIMS, DIM_APP, DIM_CAMPAIGN, DIM_COUNTRY,
    DIM_CREATIVE, DIM_DEVICE, DIM_EPISODE, DIM_SHOW,
};
use time::Date;

use super::rollups::hourly_dims;
use super::{HashMap, Staged};

/// A `reach_sketches` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReachKey<'a> {
    pub campaign: &'a str,
    pub day: Date,
    /// [`DIM_CAMPAIGN`] or one of [`DIMS`].
    pub dim: &'static str,
    /// '' for the whole campaign; else the dimension's value as the
    /// rollups hold it ('' where the hit did not say).
    pub value: &'a str,
}

/// Every sketch a counted impression's listener goes in, as (dim, value):
/// the whole campaign's, and one per sketched dimension, valued as its
/// hourly rollup row is.
fn scopes(e: &TrackingEvent) -> [(&'static str, &str); 1 + DIMS.len()] {
    let [creative, episode, show, _placement, _event, country, app, device, _region] =
        hourly_dims(e);
    [
        (DIM_CAMPAIGN, ""),
        (DIM_CREATIVE, creative),
        (DIM_SHOW, show),
        (DIM_EPISODE, episode),
        (DIM_COUNTRY, country),
        (DIM_APP, app),
        (DIM_DEVICE, device),
    ]
}

/// One key's listeners of an object, and the periods their ids were made
/// under.
#[derive(Debug, Clone, PartialEq)]
pub struct DayReach {
    pub sketch: Sketch,
    pub day_ids: bool,
    pub month_ids: bool,
}

#[derive(Default)]
struct Collect {
    hashes: Vec<u64>,
    day_ids: bool,
    month_ids: bool,
}

/// The sketches of `fresh`'s counted impressions (`counted[i]` says whether
/// `fresh[i]` counted), one per key, sorted by key: the order concurrent
/// loaders lock their rows in.
pub fn sketches<'a>(fresh: &[&'a Staged], counted: &[bool]) -> Vec<(ReachKey<'a>, DayReach)> {
    let mut by_key: HashMap<ReachKey<'a>, Collect> = HashMap::default();
    for (st, &is_counted) in fresh.iter().zip(counted) {
        let e = &st.event;
        if !is_counted || e.event != Some(EventKind::Impression) {
            continue;
        }
        let (Some(campaign), Some(_)) = (&e.campaign, &e.creative) else {
            continue;
        };
        let hash = listener_hash(e.listener.as_str());
        for (dim, value) in scopes(e) {
            let c = by_key
                .entry(ReachKey {
                    campaign: campaign.as_str(),
                    day: st.day,
                    dim,
                    value,
                })
                .or_default();
            c.hashes.push(hash);
            match e.listener_period {
                ListenerPeriod::Day => c.day_ids = true,
                ListenerPeriod::Month => c.month_ids = true,
            }
        }
    }
    let mut out: Vec<(ReachKey<'a>, DayReach)> = by_key
        .into_iter()
        .map(|(k, c)| {
            (
                k,
                DayReach {
                    sketch: Sketch::from_hashes(c.hashes),
                    day_ids: c.day_ids,
                    month_ids: c.month_ids,
                },
            )
        })
        .collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out
}

/// A `frequency_sample` key: a sampled listener's campaign and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey<'a> {
    pub campaign: &'a str,
    pub day: Date,
    pub listener: &'a str,
}

/// The counted impressions of `fresh` by listeners of the frequency
/// sample, per campaign, day and listener, sorted by key (the order
/// concurrent loaders lock their rows in).
pub fn frequency_sample<'a>(fresh: &[&'a Staged], counted: &[bool]) -> Vec<(SampleKey<'a>, i64)> {
    let mut n: HashMap<SampleKey<'a>, i64> = HashMap::default();
    for (st, &is_counted) in fresh.iter().zip(counted) {
        let e = &st.event;
        if !is_counted || e.event != Some(EventKind::Impression) {
            continue;
        }
        let Some(campaign) = &e.campaign else {
            continue;
        };
        if !in_frequency_sample(listener_hash(e.listener.as_str())) {
            continue;
        }
        *n.entry(SampleKey {
            campaign: campaign.as_str(),
            day: st.day,
            listener: e.listener.as_str(),
        })
        .or_default() += 1;
    }
    let mut out: Vec<_> = n.into_iter().collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::tests::{impression, impression_again_and_start, L2};
    use time::macros::datetime;

    #[test]
    fn only_counted_impressions_feed_the_sketches() {
        let ts = datetime!(2026-11-27 10:15 UTC);
        let [imp, dup, start] = impression_again_and_start(ts);
        let not_counted = impression(4, ts, L2);
        let next_day = impression(5, datetime!(2026-11-28 01:00 UTC), L2);
        let fresh = [&imp, &dup, &start, &not_counted, &next_day];
        let s = sketches(&fresh, &[true, false, true, false, true]);
        let keys: Vec<(Date, &str, &str, i64)> = s
            .iter()
            .map(|(k, r)| (k.day, k.dim, k.value, r.sketch.count()))
            .collect();
        let (d1, d2) = (imp.day, next_day.day);
        // Every dimension, valued as the rollups value it: the app the
        // events name, '' for the show, episode, country and device they
        // do not.
        let day = |d| {
            [
                (d, "", "", 1),
                (d, "app", "app", 1),
                (d, "country", "", 1),
                (d, "creative", "cr1", 1),
                (d, "device", "", 1),
                (d, "episode", "", 1),
                (d, "show", "", 1),
            ]
        };
        assert_eq!(keys, [day(d1), day(d2)].concat());
        let l1 = listener_hash(imp.event.listener.as_str());
        assert_eq!(s[0].1.sketch, Sketch::from_hashes([l1]));
        assert_eq!(
            (s[0].1.day_ids, s[0].1.month_ids),
            (
                imp.event.listener_period == ListenerPeriod::Day,
                imp.event.listener_period == ListenerPeriod::Month
            )
        );
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use crate::counting::stage;
    use earshot_domain::ListenerId;
    use time::macros::datetime;

    #[test]
    fn the_sample_counts_each_sampled_listeners_counted_impressions() {
        // The first listeners numbered in and out of the sample.
        let id = |n: u32| ListenerId::parse(&format!("{n:032x}")).unwrap();
        let sampled = (0..)
            .find(|&n| in_frequency_sample(listener_hash(id(n).as_str())))
            .unwrap();
        let other = (0..)
            .find(|&n| !in_frequency_sample(listener_hash(id(n).as_str())))
            .unwrap();
        let at = |h, who, creative: &str| {
            stage(
                earshot_testkit::event()
                    .at(datetime!(2026-11-27 00:00 UTC) + time::Duration::hours(h))
                    .listener_id(id(who))
                    .creative(creative)
                    .build(),
            )
        };
        let events = [
            at(1, sampled, "cr1"),
            at(2, sampled, "cr2"),
            at(3, sampled, "cr1"),
            at(4, other, "cr1"),
            at(25, sampled, "cr1"),
        ];
        let fresh: Vec<&Staged> = events.iter().collect();
        let got: Vec<(Date, i64)> = frequency_sample(&fresh, &[true, true, false, true, true])
            .into_iter()
            .map(|(k, n)| (k.day, n))
            .collect();
        assert_eq!(
            got,
            vec![
                (datetime!(2026-11-27 00:00 UTC).date(), 2),
                (datetime!(2026-11-28 00:00 UTC).date(), 1)
            ]
        );
    }
}
