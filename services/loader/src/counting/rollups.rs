//! The rollup deltas of one object, computed in the loader from its new
//! events and what the counting rule decided for them.
//!
//! Doing this in Rust rather than in SQL over a staging table means
//! PostgreSQL only writes: it receives a few thousand aggregated rows per
//! object instead of joining and grouping every event several times. The
//! rules are the ones in docs/COUNTING.md; `earshot verify` recounts every
//! rollup from the raw events table, and the loader's tests compare both.

use earshot_domain::{EventKind, TrackingEvent, Verdict};
use time::{Date, OffsetDateTime};

use super::{HashMap, Staged};
use foldhash::HashMapExt as _;

/// Number of metric columns `rollup_daily` and `rollup_blocks` hold, in the
/// order of `store::daily_metric_columns!`.
pub const DAILY_METRICS: usize = 16;
pub(crate) const RAW_HITS: usize = 0;
pub(crate) const BOT_HITS: usize = 1;
pub(crate) const INVALID_HITS: usize = 2;

/// Column of the counted (valid, first of its key) events of a kind.
pub(crate) const fn counted_column(kind: EventKind) -> usize {
    match kind {
        EventKind::Impression => 3,
        EventKind::Start => 4,
        EventKind::FirstQuartile => 5,
        EventKind::Midpoint => 6,
        EventKind::ThirdQuartile => 7,
        EventKind::Complete => 8,
        EventKind::Click => 9,
        EventKind::Skip => 10,
        EventKind::Error => 11,
    }
}

/// Column of the bot hits of the kinds `include_bots=true` shows.
pub(crate) const fn bot_column(kind: EventKind) -> Option<usize> {
    match kind {
        EventKind::Impression => Some(12),
        EventKind::Start => Some(13),
        EventKind::Complete => Some(14),
        EventKind::Click => Some(15),
        _ => None,
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
}

/// raw, counted, bot and invalid hits.
pub type HourlyCounts = [i64; 4];

/// An event's dimensions below the hour, in `rollup_hourly`'s column order
/// ('' when missing): what its hourly row holds and [`hourly_group`] hashes.
pub(crate) fn hourly_dims(e: &TrackingEvent) -> [&str; 8] {
    [
        e.creative.as_ref().map_or("", |x| x.as_str()),
        e.episode.as_ref().map_or("", |x| x.as_str()),
        e.show.as_ref().map_or("", |x| x.as_str()),
        e.placement.map_or("", |p| p.as_str()),
        e.event.map_or("", |k| k.as_str()),
        e.country.as_ref().map_or("", |c| c.as_str()),
        e.app.as_deref().unwrap_or(""),
        e.device.as_deref().unwrap_or(""),
    ]
}

/// The hash of an hourly row's dimensions below the hour that `rollup_hourly.grp`
/// holds: the first 8 bytes of the MD5 of the eight dimensions joined by
/// U+001F, as a big-endian signed integer. Migration 9 gives the same in SQL,
/// for rows appended before it; a test holds the two equal. MD5 because
/// PostgreSQL has it built in, not for secrecy: a collision only makes the
/// merge rewrite two groups' rows as they were.
pub fn hourly_group(dims: [&str; 8]) -> i64 {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for (i, d) in dims.iter().enumerate() {
        if i > 0 {
            h.update([0x1f]);
        }
        h.update(d.as_bytes());
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
    pub daily: Vec<(DailyKey<'a>, [i64; DAILY_METRICS])>,
    /// Campaigns the object touched.
    pub campaigns: Vec<&'a str>,
}

/// Unix seconds of the start of the UTC hour holding `ts`.
pub(crate) fn hour_of(ts: OffsetDateTime) -> i64 {
    ts.unix_timestamp().div_euclid(3600) * 3600
}

/// Sums `fresh` (the object's events not loaded before) into rollup rows;
/// `counted[i]` says whether `fresh[i]` counted.
pub fn rollups<'a>(fresh: &[&'a Staged], counted: &[bool]) -> Rollups<'a> {
    // Nearly one hourly group per event on realistic traffic: size for it.
    let mut hourly: HashMap<HourlyKey<'a>, HourlyCounts> = HashMap::with_capacity(fresh.len());
    let mut daily: HashMap<DailyKey<'a>, [i64; DAILY_METRICS]> = HashMap::new();
    let mut campaigns: Vec<&'a str> = Vec::new();
    for (st, &is_counted) in fresh.iter().zip(counted) {
        let e = &st.event;
        let campaign = e.campaign.as_ref().map_or("", |c| c.as_str());
        let [creative, episode, show, placement, event, country, app, device] = hourly_dims(e);
        if let Some(c) = &e.campaign {
            if campaigns.last() != Some(&c.as_str()) {
                campaigns.push(c.as_str());
            }
        }
        let bot = e.verdict == Verdict::Bot;
        let invalid = e.verdict == Verdict::Invalid;

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
            })
            .or_default();
        h[0] += 1;
        h[1] += i64::from(is_counted);
        h[2] += i64::from(bot);
        h[3] += i64::from(invalid);

        let d = daily
            .entry(DailyKey {
                campaign,
                day: st.day,
                creative,
                country,
            })
            .or_insert([0; DAILY_METRICS]);
        d[RAW_HITS] += 1;
        d[BOT_HITS] += i64::from(bot);
        d[INVALID_HITS] += i64::from(invalid);
        if let Some(kind) = e.event {
            if is_counted {
                d[counted_column(kind)] += 1;
            }
            if let (true, Some(col)) = (bot, bot_column(kind)) {
                d[col] += 1;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::tests::{staged, L1, L2};
    use earshot_domain::EventKind;
    use time::macros::datetime;

    #[test]
    fn rollups_add_up_by_verdict_kind_and_counting() {
        let ts = datetime!(2026-11-27 10:15 UTC);
        let imp = staged(1, ts, EventKind::Impression, L1, Verdict::Valid);
        let dup = staged(
            2,
            ts + time::Duration::minutes(1),
            EventKind::Impression,
            L1,
            Verdict::Valid,
        );
        let other = staged(3, ts, EventKind::Impression, L2, Verdict::Valid);
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
        let mut hourly: Vec<(i64, &str, HourlyCounts)> = r
            .hourly
            .iter()
            .map(|(k, v)| (k.hour, k.event, *v))
            .collect();
        hourly.sort_unstable();
        let ten = datetime!(2026-11-27 10:00 UTC).unix_timestamp();
        assert_eq!(
            hourly,
            vec![
                (ten, "complete", [1, 0, 1, 0]),
                (ten, "impression", [3, 2, 0, 0]),
                (ten + 3600, "click", [1, 0, 0, 1]),
            ]
        );
        assert_eq!(r.daily.len(), 1);
        let d = r.daily[0].1;
        assert_eq!(d[RAW_HITS], 5);
        assert_eq!(d[BOT_HITS], 1);
        assert_eq!(d[INVALID_HITS], 1);
        assert_eq!(d[counted_column(EventKind::Impression)], 2);
        assert_eq!(d[counted_column(EventKind::Complete)], 0);
        assert_eq!(d[bot_column(EventKind::Complete).unwrap()], 1);
        assert_eq!(d.iter().sum::<i64>(), 5 + 1 + 1 + 2 + 1);
    }
}
