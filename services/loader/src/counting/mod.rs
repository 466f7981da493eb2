//! The counting rule (docs/COUNTING.md), all of it: the keys an event is
//! counted and heard by, which new events count given the keys counted
//! before, and what they add to the rollups.
//!
//! - [`stage`] gives an event its UTC day and keys: the counting key
//!   (campaign, creative, episode, event, listener) of a valid event, and
//!   the listener keys (campaign-wide and per creative) of a valid
//!   impression.
//! - [`candidates`] are an object's new events' keys: per (day, counting
//!   key), the earliest new event by (ts, id); each listener key once.
//! - [`keys`] holds the keys each day counted and heard, in PostgreSQL:
//!   inserting the candidates returns the ones that are new.
//! - [`decide`] applies the rule: a candidate whose counting key was new
//!   counts; a listener key new on its day is a new unique listener.
//! - [`rollups`] sums the new events into hourly and daily rollup rows.
//!
//! Parsing (`parse.rs`) only turns bytes into events; the store
//! (`store.rs`) only writes what this module decided.

pub mod keys;
pub mod reach;
pub mod rollups;

use earshot_domain::{EventKind, ListenerId, TrackingEvent, Verdict};
use sha2::{Digest, Sha256};
use time::Date;
use uuid::Uuid;

/// The maps here hash every event's keys: foldhash, not the standard
/// library's SipHash, which was a tenth of the loader's CPU (`perf`, loader
/// bench). Its seed is random per map, so crafted ids cannot aim at
/// collisions offline.
pub(crate) type HashMap<K, V> = foldhash::HashMap<K, V>;
pub(crate) type HashSet<T> = foldhash::HashSet<T>;
use foldhash::HashMapExt as _;

/// One event ready to be loaded, with its day and keys.
#[derive(Debug, Clone)]
pub struct Staged {
    pub event: TrackingEvent,
    pub day: Date,
    /// Counting key (valid events only).
    pub count_key: Option<Uuid>,
    /// Unique-listener keys (valid impressions only): campaign-wide and per creative.
    pub uniq_campaign_key: Option<Uuid>,
    pub uniq_creative_key: Option<Uuid>,
    /// [`rollups::hourly_group`] of its hourly row's dimensions, hashed here,
    /// with the keys, while the previous object loads.
    pub hourly_group: i64,
}

/// An event with its UTC day and counting keys.
pub fn stage(ev: TrackingEvent) -> Staged {
    let (uc, ucr) = uniq_keys(&ev);
    Staged {
        count_key: count_key(&ev),
        hourly_group: rollups::hourly_group(rollups::hourly_dims(&ev)),
        uniq_campaign_key: uc,
        uniq_creative_key: ucr,
        day: ev.day(),
        event: ev,
    }
}

/// A key of `listener`'s, from parts, as a uuid: the listener id's first 8
/// bytes, then the first 8 bytes of the SHA-256 of the tag, the parts and
/// the listener id, each preceded by U+001F (so that ("ab","c") ≠
/// ("a","bc")). The key tables store the two halves as (listener, key)
/// (migration 32).
///
/// Led by the listener so that the keys one listener makes (an ad's
/// impression, start, quartiles and complete come within a minute, so in one
/// object) sit side by side in the day's primary key: an object's keys land
/// on a leaf page per listener, not one per key. The listener id is an HMAC
/// output, so its bytes are already uniform; the hash holds it too, so two
/// keys are one only if 128 bits agree.
fn key(listener: &ListenerId, tag: &[u8], parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    h.update(tag);
    for p in parts.iter().chain([&listener.as_str()]) {
        h.update([0x1f]);
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut hash = [0u8; 8];
    hash.copy_from_slice(&d[..8]);
    Uuid::from_u64_pair(listener_lead(listener), u64::from_be_bytes(hash))
}

/// A listener id's first 8 bytes (its first 16 hex digits) as a number.
fn listener_lead(listener: &ListenerId) -> u64 {
    let mut lead = [0u8; 8];
    hex::decode_to_slice(&listener.as_bytes()[..16], &mut lead)
        .expect("a listener id is lower-case hex (ListenerId::parse)");
    u64::from_be_bytes(lead)
}

/// A key's two halves as the key tables store them: (listener, key), each
/// a bigint holding the 8 bytes as they are.
pub fn key_columns(key: Uuid) -> (i64, i64) {
    let (listener, hash) = key.as_u64_pair();
    (listener as i64, hash as i64)
}

/// The key of the two columns of [`key_columns`].
pub fn key_of_columns(listener: i64, hash: i64) -> Uuid {
    Uuid::from_u64_pair(listener as u64, hash as u64)
}

/// The counting key of a valid event: (campaign, creative, episode, event,
/// listener); the UTC day is the partition column beside it.
pub fn count_key(ev: &TrackingEvent) -> Option<Uuid> {
    if ev.verdict != Verdict::Valid {
        return None;
    }
    Some(key(
        &ev.listener,
        b"count/v1",
        &[
            ev.campaign.as_ref()?.as_str(),
            ev.creative.as_ref()?.as_str(),
            ev.episode.as_ref().map_or("", |e| e.as_str()),
            ev.event?.as_str(),
        ],
    ))
}

/// The listener keys of a valid impression: campaign-wide and per creative.
fn uniq_keys(ev: &TrackingEvent) -> (Option<Uuid>, Option<Uuid>) {
    if ev.verdict != Verdict::Valid || ev.event != Some(EventKind::Impression) {
        return (None, None);
    }
    let (Some(c), Some(cr)) = (ev.campaign.as_ref(), ev.creative.as_ref()) else {
        return (None, None);
    };
    (
        Some(key(&ev.listener, b"uniq/v1", &[c.as_str(), ""])),
        Some(key(&ev.listener, b"uniq/v1", &[c.as_str(), cr.as_str()])),
    )
}

/// Candidates for `counting_keys`: per (UTC day, counting key), the earliest
/// new valid event by (ts, id), as an index into `fresh`. Sorted by
/// (day, key), so a load appends its keys in the same order whatever the
/// hash map's seed.
pub fn count_candidates(fresh: &[&Staged]) -> Vec<(Date, Uuid, usize)> {
    let mut first: HashMap<(Date, Uuid), usize> = HashMap::with_capacity(fresh.len());
    for (i, s) in fresh.iter().enumerate() {
        let Some(key) = s.count_key else { continue };
        first
            .entry((s.day, key))
            .and_modify(|j| {
                let held = &fresh[*j].event;
                if (s.event.ts, s.event.id) < (held.ts, held.id) {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let mut out: Vec<(Date, Uuid, usize)> =
        first.into_iter().map(|((d, k), i)| (d, k, i)).collect();
    out.sort_unstable();
    out
}

/// A listener key with its day and scope: (day, key, campaign, creative),
/// creative '' for the campaign-wide key.
pub type Heard<'a> = (Date, Uuid, &'a str, &'a str);

/// Candidates for `listener_keys`: each (day, key) once, sorted by
/// (day, key).
pub fn unique_candidates<'a>(fresh: &[&'a Staged]) -> Vec<Heard<'a>> {
    let mut seen: HashMap<(Date, Uuid), (&'a str, &'a str)> = HashMap::new();
    for s in fresh {
        let campaign = s.event.campaign.as_ref().map_or("", |c| c.as_str());
        if let Some(k) = s.uniq_campaign_key {
            seen.entry((s.day, k)).or_insert((campaign, ""));
        }
        if let Some(k) = s.uniq_creative_key {
            let creative = s.event.creative.as_ref().map_or("", |c| c.as_str());
            seen.entry((s.day, k)).or_insert((campaign, creative));
        }
    }
    let mut out: Vec<_> = seen
        .into_iter()
        .map(|((d, k), (c, cr))| (d, k, c, cr))
        .collect();
    out.sort_unstable_by_key(|&(d, k, _, _)| (d, k));
    out
}

/// New listeners per (campaign, day, creative): `heard` (listener keys not
/// heard before) counted per scope, sorted by scope, the order concurrent
/// loaders take `daily_uniques`' row locks in.
pub fn new_listeners<'a>(heard: &[Heard<'a>]) -> Vec<(&'a str, Date, &'a str, i64)> {
    let mut n: HashMap<(&'a str, Date, &'a str), i64> = HashMap::new();
    for &(day, _, campaign, creative) in heard {
        *n.entry((campaign, day, creative)).or_default() += 1;
    }
    let mut out: Vec<_> = n.into_iter().map(|((c, d, cr), n)| (c, d, cr, n)).collect();
    out.sort_unstable();
    out
}

/// An object's candidate keys: what [`keys::insert_new`] is asked to add.
#[derive(Debug, Default)]
pub struct Candidates<'a> {
    /// Per (day, counting key), the event that counts if the key is new,
    /// sorted by (day, key).
    pub counted: Vec<(Date, Uuid, usize)>,
    /// Each listener key once, sorted by (day, key).
    pub heard: Vec<Heard<'a>>,
}

/// The candidates of `fresh` (an object's events not loaded before).
pub fn candidates<'a>(fresh: &[&'a Staged]) -> Candidates<'a> {
    Candidates {
        counted: count_candidates(fresh),
        heard: unique_candidates(fresh),
    }
}

impl Candidates<'_> {
    /// The counting keys, in the order they are inserted.
    pub fn count_keys(&self) -> Vec<(Date, Uuid)> {
        self.counted.iter().map(|&(d, k, _)| (d, k)).collect()
    }

    /// The listener keys, in the order they are inserted.
    pub fn listener_keys(&self) -> Vec<(Date, Uuid)> {
        self.heard.iter().map(|&(d, k, _, _)| (d, k)).collect()
    }
}

/// What the rule decided for an object's new events.
#[derive(Debug, Default)]
pub struct Decision<'a> {
    /// Whether each event of `fresh` counted.
    pub counted: Vec<bool>,
    /// How many counted: the counting keys that were new.
    pub counted_now: u32,
    /// The listener keys heard for the first time on their day, sorted by
    /// (day, key).
    pub new_heard: Vec<Heard<'a>>,
}

/// Applies the rule to `fresh` (an object's events not loaded before),
/// given which of its candidates' keys were new on their day:
/// `new_counted` and `new_heard` as [`keys::insert_new`] returned them.
pub fn decide<'a>(
    fresh: &[&'a Staged],
    candidates: Candidates<'a>,
    new_counted: &HashSet<(Date, Uuid)>,
    new_heard: &HashSet<(Date, Uuid)>,
) -> Decision<'a> {
    let mut counted = vec![false; fresh.len()];
    let mut counted_now = 0;
    for (day, key, i) in candidates.counted {
        if new_counted.contains(&(day, key)) {
            counted[i] = true;
            counted_now += 1;
        }
    }
    let new_heard = candidates
        .heard
        .into_iter()
        .filter(|&(day, key, _, _)| new_heard.contains(&(day, key)))
        .collect();
    Decision {
        counted,
        counted_now,
        new_heard,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;
    use time::OffsetDateTime;

    /// An event of campaign c1, creative cr1 at the kit's default time
    /// (tests here, in `rollups` and in `parse`).
    pub(crate) fn event(listener: u32, kind: EventKind, verdict: Verdict) -> TrackingEvent {
        earshot_testkit::event()
            .listener(listener)
            .kind(kind)
            .verdict(verdict)
            .build()
    }

    pub(crate) const L1: u32 = 1;
    pub(crate) const L2: u32 = 2;

    pub(crate) fn staged(
        id: u128,
        ts: OffsetDateTime,
        kind: EventKind,
        listener: u32,
        verdict: Verdict,
    ) -> Staged {
        let mut event = event(listener, kind, verdict);
        event.id = Uuid::from_u128(id);
        event.ts = ts;
        event.app = Some("app".into());
        stage(event)
    }

    /// `listener`'s valid impression at `ts`, with the id `id`.
    pub(crate) fn impression(id: u128, ts: OffsetDateTime, listener: u32) -> Staged {
        staged(id, ts, EventKind::Impression, listener, Verdict::Valid)
    }

    /// At `ts`: L1's impression (id 1), L1's same impression again (id 2),
    /// and L2's start (id 3).
    pub(crate) fn impression_again_and_start(ts: OffsetDateTime) -> [Staged; 3] {
        [
            impression(1, ts, L1),
            impression(2, ts, L1),
            staged(3, ts, EventKind::Start, L2, Verdict::Valid),
        ]
    }

    #[test]
    fn keys_follow_the_counting_rule() {
        let a = event(L1, EventKind::Impression, Verdict::Valid);
        let b = event(L1, EventKind::Impression, Verdict::Valid);
        let other_listener = event(L2, EventKind::Impression, Verdict::Valid);
        let start = event(L1, EventKind::Start, Verdict::Valid);
        let bot = event(L1, EventKind::Impression, Verdict::Bot);
        assert_eq!(count_key(&a), count_key(&b));
        assert_ne!(count_key(&a), count_key(&other_listener));
        assert_ne!(count_key(&a), count_key(&start));
        assert_eq!(count_key(&bot), None);
        assert_eq!(uniq_keys(&start), (None, None));
        let (ua, _) = uniq_keys(&a);
        assert_eq!(ua, uniq_keys(&b).0);
    }

    #[test]
    fn every_key_of_a_listener_is_led_by_its_ids_first_eight_bytes() {
        let mut ev = event(L1, EventKind::Impression, Verdict::Valid);
        ev.listener = ListenerId::parse("0123456789abcdeff0e1d2c3b4a59687").unwrap();
        let (campaign_wide, per_creative) = uniq_keys(&ev);
        let keys = [count_key(&ev), campaign_wide, per_creative].map(Option::unwrap);
        for k in keys {
            assert_eq!(key_columns(k).0, 0x0123_4567_89ab_cdef, "{k}");
            assert_eq!(key_of_columns(key_columns(k).0, key_columns(k).1), k);
        }
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        // A lead with its top bit set is a negative bigint, and back.
        ev.listener = ListenerId::parse("f123456789abcdef0000000000000000").unwrap();
        let k = count_key(&ev).unwrap();
        assert_eq!(key_columns(k).0, 0xf123_4567_89ab_cdef_u64 as i64);
        assert!(key_columns(k).0 < 0);
        assert_eq!(key_of_columns(key_columns(k).0, key_columns(k).1), k);
    }

    #[test]
    fn the_earliest_event_of_a_key_is_the_candidate_whatever_the_order() {
        let impression = |id, ts, verdict| staged(id, ts, EventKind::Impression, L1, verdict);
        let late = impression(2, datetime!(2026-11-27 10:00 UTC), Verdict::Valid);
        let early = impression(3, datetime!(2026-11-27 09:00 UTC), Verdict::Valid);
        let next_day = impression(4, datetime!(2026-11-28 00:00 UTC), Verdict::Valid);
        let bot = impression(5, datetime!(2026-11-27 08:00 UTC), Verdict::Bot);
        let fresh = [&late, &early, &next_day, &bot];
        let c = count_candidates(&fresh);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].2, 1, "the 09:00 event counts, not the 10:00 one");
        assert_eq!(c[1].2, 2, "a new UTC day is a new key");
        assert!(c[0].0 < c[1].0);
    }

    #[test]
    fn ties_on_ts_go_to_the_smaller_id() {
        let ts = datetime!(2026-11-27 10:00 UTC);
        let b = staged(9, ts, EventKind::Start, L1, Verdict::Valid);
        let a = staged(7, ts, EventKind::Start, L1, Verdict::Valid);
        let c = count_candidates(&[&b, &a]);
        assert_eq!(c.iter().map(|x| x.2).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn unique_candidates_hold_each_listener_once_per_scope() {
        let [a, again, start] = impression_again_and_start(datetime!(2026-11-27 10:00 UTC));
        let u = unique_candidates(&[&a, &again, &start]);
        let mut scopes: Vec<(&str, &str)> = u.iter().map(|x| (x.2, x.3)).collect();
        scopes.sort_unstable();
        assert_eq!(scopes, vec![("c1", ""), ("c1", "cr1")]);
    }
}
