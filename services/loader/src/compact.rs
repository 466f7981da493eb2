//! Merging `rollup_hourly`'s rows back to one per group.
//!
//! A load appends its object's hourly sums (migration 6 says why), so a
//! group that appears in many objects of an hour gets a row per object.
//! Readers sum them, so the numbers are right either way; merging keeps the
//! table, and the reports reading it, about as small as one row per group.
//!
//! One statement per campaign deletes the rows of every group holding more
//! than one and inserts their sums, so every total is the same before and
//! after, and no reader sees one half without the other. Rows a load commits
//! meanwhile are not in the statement's snapshot and stay as they are.
//! Merges of one campaign take turns (a transaction-level advisory lock):
//! two deleting the same rows in different orders could deadlock, and the
//! second finds the first's work done.
//!
//! A merge reads only the groups loads appended to since the last one
//! ([`Touched`] keeps each appended row's hour and group hash), through the
//! (campaign, hour, grp) index of migration 26: its cost follows what was
//! appended, not how full the hour already is. Reading every row of the
//! touched hours instead took 1.4 s after one object of a 5-million-event
//! day, to merge 290 rows. When the groups are unknown (too many held, or
//! rows noted by hour alone) it reads the campaign's touched hours whole.

use std::collections::BTreeMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::counting::rollups::hour_of;
use crate::watchdog::Watchdog;

/// The most appended rows' (hour, group) [`Touched`] holds, 16 bytes each
/// (16 MB): about three hours of a 5-million-event day at today's hourly
/// grain, which is what a running loader holds between merges (the current
/// hour, and those that ended less than `COMPACT_AFTER` ago). Past it, the
/// merges read whole hours, as they did before groups were kept.
pub const MAX_TOUCHED_GROUPS: usize = 1_000_000;

/// What loads appended to `rollup_hourly` since the last merge, per
/// campaign.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// campaign ('' for hits without a usable one) -> what it got.
    spans: BTreeMap<String, Span>,
    /// The groups held in all spans.
    groups: usize,
}

/// One campaign's appended rows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    /// First and last hour, as Unix seconds of the hour's start.
    lo: i64,
    hi: i64,
    /// The (hour, group hash) of each appended row, or `None` when they are
    /// not known: then the merge reads the hours `lo` to `hi` whole.
    groups: Option<Vec<(i64, i64)>>,
}

/// What one campaign's merge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeScope<'a> {
    /// Every row of the hours from the first to the last, inclusive.
    Hours(OffsetDateTime, OffsetDateTime),
    /// The rows of these (hour, group hash), hours as Unix seconds; a pair
    /// may repeat.
    Groups(&'a [(i64, i64)]),
}

impl Touched {
    /// Notes that `campaign` got rows for the hour holding `ts`, of groups
    /// not known: its merge reads its hours whole.
    pub fn add(&mut self, campaign: &str, ts: OffsetDateTime) {
        let hour = hour_of(ts);
        self.widen(campaign, hour, hour, None);
    }

    /// Notes that `campaign` got a row of group `grp` (the row's hash,
    /// `counting::rollups::hourly_group`) for the hour starting at `hour`
    /// (Unix seconds).
    pub fn add_group(&mut self, campaign: &str, hour: i64, grp: i64) {
        self.widen(campaign, hour, hour, Some(vec![(hour, grp)]));
    }

    /// Adds what `other` holds.
    pub fn merge(&mut self, other: Touched) {
        for (campaign, span) in other.spans {
            self.widen(&campaign, span.lo, span.hi, span.groups);
        }
    }

    /// Widens `campaign`'s span to take in the hours `lo` to `hi` and
    /// `groups` (`None`: not known).
    fn widen(&mut self, campaign: &str, lo: i64, hi: i64, groups: Option<Vec<(i64, i64)>>) {
        let added = groups.as_ref().map_or(0, Vec::len);
        match self.spans.get_mut(campaign) {
            Some(span) => {
                span.lo = span.lo.min(lo);
                span.hi = span.hi.max(hi);
                match (&mut span.groups, groups) {
                    (Some(held), Some(more)) => {
                        held.extend(more);
                        self.groups += added;
                    }
                    (held, _) => {
                        self.groups -= held.take().map_or(0, |g| g.len());
                    }
                }
            }
            None => {
                self.groups += added;
                self.spans
                    .insert(campaign.to_owned(), Span { lo, hi, groups });
            }
        }
        if self.groups > MAX_TOUCHED_GROUPS {
            for span in self.spans.values_mut() {
                span.groups = None;
            }
            self.groups = 0;
        }
    }

    /// Takes out the hours that start before `cutoff`; the later ones stay.
    pub fn take_before(&mut self, cutoff: OffsetDateTime) -> Touched {
        let last_before = hour_of(cutoff - time::Duration::SECOND);
        let cutoff = cutoff.unix_timestamp();
        let mut taken = Touched::default();
        let mut moved = 0;
        self.spans.retain(|campaign, span| {
            if span.lo >= cutoff {
                return true;
            }
            let (early, late) = match span.groups.take() {
                Some(g) => {
                    let (early, late): (Vec<_>, Vec<_>) =
                        g.into_iter().partition(|&(hour, _)| hour < cutoff);
                    (Some(early), Some(late))
                }
                None => (None, None),
            };
            moved += early.as_ref().map_or(0, Vec::len);
            taken.spans.insert(
                campaign.clone(),
                Span {
                    lo: span.lo,
                    hi: span.hi.min(last_before),
                    groups: early,
                },
            );
            if span.hi > last_before {
                span.lo = last_before + 3600;
                span.groups = late;
                true
            } else {
                false
            }
        });
        taken.groups = moved;
        self.groups -= moved;
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Campaigns with their first and last hour.
    pub fn ranges(&self) -> impl Iterator<Item = (&str, OffsetDateTime, OffsetDateTime)> {
        self.spans
            .iter()
            .map(|(c, span)| (c.as_str(), at(span.lo), at(span.hi)))
    }

    /// Campaigns with what their merge reads.
    pub fn scopes(&self) -> impl Iterator<Item = (&str, MergeScope<'_>)> {
        self.spans.iter().map(|(c, span)| {
            let scope = match &span.groups {
                Some(g) => MergeScope::Groups(g),
                None => MergeScope::Hours(at(span.lo), at(span.hi)),
            };
            (c.as_str(), scope)
        })
    }
}

/// The time of Unix seconds of an hour's start.
fn at(s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(s).expect("an hour of an event")
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Rows deleted (every row of a group that had more than one).
    pub merged: u64,
    /// Rows inserted in their place (one per such group).
    pub into: u64,
}

/// First key of the advisory lock a merge holds on its campaign (the second
/// is the campaign's hash): "ESHR" in ASCII, so it cannot be mistaken for
/// another lock of the database.
const MERGE_LOCK_CLASS: i32 = 0x4553_4852;

/// `counting::rollups::hourly_group` in SQL, over a `rollup_hourly` row's columns (the
/// expression of migration 9, with the region where it is not '': concat_ws
/// skips the NULL, so rows without one hash as before migration 24).
macro_rules! group_hash {
    () => {
        "('x' || left(md5(concat_ws(chr(31), creative, episode, show, placement, event, country, app, device, NULLIF(region, ''))), 16))::bit(64)::bigint"
    };
}

/// The same expression, for tests and checks.
pub const GROUP_HASH_SQL: &str = group_hash!();

/// Deletes the rows of `candidates` (ctids) and inserts their sums, grouped
/// by every dimension; returns (rows deleted, rows inserted).
macro_rules! delete_and_sum {
    ($candidates:expr) => {
        concat!(
            "WITH gone AS (
    DELETE FROM rollup_hourly
    WHERE ctid = ANY (ARRAY(",
            $candidates,
            "))
    RETURNING *
), merged AS (
    INSERT INTO rollup_hourly
        (campaign, hour, creative, episode, show, placement, event, country, app, device, region,
         raw_hits, counted_hits, bot_hits, invalid_hits, grp)
    SELECT campaign, hour, creative, episode, show, placement, event, country, app, device, region,
           sum(raw_hits), sum(counted_hits), sum(bot_hits), sum(invalid_hits),
           COALESCE(min(grp), ",
            group_hash!(),
            ")
    FROM gone
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
    RETURNING 1
) SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM merged)"
        )
    };
}

/// Finds the groups of the range holding more than one row, deletes their
/// rows (by `ctid`: the finding and the deleting see one snapshot, and only
/// loads write the table meanwhile, which insert) and inserts their sums.
///
/// Groups are found by (hour, `grp`), the loader's hash of the other
/// dimensions (migration 9), for rows appended before it by the same hash
/// computed here (`GROUP_HASH_SQL`): a 64-bit key groups faster than eight text
/// columns. The sums are grouped by every dimension, so rows of two groups
/// that share a hash go back as two rows: the hash finds, it never decides.
const MERGE_CAMPAIGN: &str = delete_and_sum!(concat!(
    "SELECT unnest(array_agg(ctid)) FROM rollup_hourly
        WHERE campaign = $1 AND hour >= $2 AND hour <= $3
        GROUP BY hour, COALESCE(grp, ",
    group_hash!(),
    ")
        HAVING count(*) > 1"
));

/// As [`MERGE_CAMPAIGN`], over the rows of the given (hour, grp) pairs
/// only ($2 the hours as Unix seconds, $3 the hashes), each found through
/// the (campaign, hour, grp) index. Rows appended before migration 9 have
/// no `grp` and are not found: they stay as they are (the numbers are
/// right either way) until a merge of whole hours.
const MERGE_GROUPS: &str = delete_and_sum!(
    "SELECT unnest(array_agg(r.ctid))
        FROM (SELECT DISTINCT to_timestamp(h) AS hour, g AS grp
              FROM unnest($2::bigint[], $3::bigint[]) AS u(h, g)) k
        JOIN rollup_hourly r ON r.campaign = $1 AND r.hour = k.hour AND r.grp = k.grp
        GROUP BY r.hour, r.grp
        HAVING count(*) > 1"
);

/// Memory for the merge's grouping. With the default 4 MB, PostgreSQL sorts
/// the rows by nine text columns, which took 440–530 ms for one campaign's
/// 143,721 rows of the loader bench's day; hashing them took 160–230 ms
/// (`enable_sort` off, which the merge also sets). Local to its transaction.
const MERGE_WORK_MEM: &str = "64MB";

/// Merges the rows of every group of `campaign` between the hours `first`
/// and `last` (inclusive) that holds more than one.
pub async fn merge_campaign(
    pool: &PgPool,
    campaign: &str,
    first: OffsetDateTime,
    last: OffsetDateTime,
) -> Result<Compacted, sqlx::Error> {
    merge(pool, campaign, MergeScope::Hours(first, last)).await
}

/// Merges the rows of `campaign`'s groups in `scope` that hold more than
/// one.
pub async fn merge(
    pool: &PgPool,
    campaign: &str,
    scope: MergeScope<'_>,
) -> Result<Compacted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('work_mem', $1, true), set_config('enable_sort', 'off', true)")
        .bind(MERGE_WORK_MEM)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(MERGE_LOCK_CLASS)
        .bind(campaign)
        .execute(&mut *tx)
        .await?;
    let query = match scope {
        MergeScope::Hours(first, last) => sqlx::query_as(MERGE_CAMPAIGN)
            .bind(campaign)
            .bind(first)
            .bind(last),
        MergeScope::Groups(groups) => {
            let (hours, hashes): (Vec<i64>, Vec<i64>) = groups.iter().copied().unzip();
            sqlx::query_as(MERGE_GROUPS)
                .bind(campaign)
                .bind(hours)
                .bind(hashes)
        }
    };
    let (merged, into): (i64, i64) = query.fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Compacted {
        merged: merged as u64,
        into: into as u64,
    })
}

/// Merges every range of `touched`, `concurrency` campaigns at a time (each
/// on its own connection: campaigns share no rows). Returns what it did, and
/// on failure the ranges not merged (to try again later) with the first
/// error.
pub async fn merge_touched(
    pool: &PgPool,
    touched: Touched,
    concurrency: usize,
    watchdog: &Watchdog,
) -> Result<Compacted, (Touched, sqlx::Error)> {
    use futures::StreamExt as _;
    let results: Vec<_> = futures::stream::iter(touched.scopes())
        .map(|(campaign, scope)| async move {
            let merge = merge(pool, campaign, scope);
            let about = Some(format!("campaign {campaign:?}"));
            (
                campaign,
                watchdog
                    .watch("merging a campaign's hourly rollups", about, merge)
                    .await,
            )
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut total = Compacted::default();
    let mut left = touched.clone();
    let mut failure = None;
    for (campaign, result) in results {
        match result {
            Ok(c) => {
                total.merged += c.merged;
                total.into += c.into;
                if let Some(span) = left.spans.remove(campaign) {
                    left.groups -= span.groups.map_or(0, |g| g.len());
                }
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        None => Ok(total),
        Some(e) => Err((left, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn touched_keeps_each_rows_group_splits_them_by_hour_and_forgets_them_past_the_cap() {
        let h10 = datetime!(2026-11-27 10:00 UTC).unix_timestamp();
        let h11 = h10 + 3600;
        let mut t = Touched::default();
        t.add_group("c1", h10, 7);
        t.add_group("c1", h11, 8);
        let mut more = Touched::default();
        more.add_group("c1", h10, 7);
        more.add_group("c2", h11, 9);
        t.merge(more);
        assert_eq!(t.groups, 4);
        let scopes: Vec<_> = t.scopes().collect();
        assert_eq!(
            scopes,
            [
                ("c1", MergeScope::Groups(&[(h10, 7), (h11, 8), (h10, 7)])),
                ("c2", MergeScope::Groups(&[(h11, 9)])),
            ]
        );
        // Before 11:00: c1's 10:00 groups; 11:00 stays, c2 whole.
        let early = t.take_before(datetime!(2026-11-27 11:00 UTC));
        assert_eq!(
            early.scopes().collect::<Vec<_>>(),
            [("c1", MergeScope::Groups(&[(h10, 7), (h10, 7)]))]
        );
        assert_eq!((early.groups, t.groups), (2, 2));
        assert_eq!(
            t.scopes().collect::<Vec<_>>(),
            [
                ("c1", MergeScope::Groups(&[(h11, 8)])),
                ("c2", MergeScope::Groups(&[(h11, 9)])),
            ]
        );
        // Rows noted by hour alone make the campaign's groups unknown.
        t.add("c2", datetime!(2026-11-27 11:30 UTC));
        let at11 = datetime!(2026-11-27 11:00 UTC);
        assert_eq!(
            t.scopes().nth(1),
            Some(("c2", MergeScope::Hours(at11, at11)))
        );
        assert_eq!(t.groups, 1);
        // Past the cap, every campaign's merge reads its hours whole.
        for g in 0..MAX_TOUCHED_GROUPS as i64 {
            t.add_group("c3", h11, g);
        }
        assert_eq!(t.groups, 0);
        assert!(t.scopes().all(|(_, s)| matches!(s, MergeScope::Hours(..))));
    }

    #[test]
    fn touched_keeps_the_first_and_last_hour_of_each_campaign() {
        let mut t = Touched::default();
        t.add("c1", datetime!(2026-11-27 10:59:59 UTC));
        t.add("c1", datetime!(2026-11-27 08:00:00 UTC));
        t.add("", datetime!(2026-11-26 23:30:00 UTC));
        let mut later = Touched::default();
        later.add("c1", datetime!(2026-11-27 12:01:00 UTC));
        t.merge(later);
        let kept = t.clone();
        // Before 11:30: c1's 08:00–11:00 and all of ''; c1 keeps 12:00.
        let mut rest = t.clone();
        let early = rest.take_before(datetime!(2026-11-27 11:30:00 UTC));
        assert_eq!(
            early.ranges().collect::<Vec<_>>(),
            [
                (
                    "",
                    datetime!(2026-11-26 23:00:00 UTC),
                    datetime!(2026-11-26 23:00:00 UTC)
                ),
                (
                    "c1",
                    datetime!(2026-11-27 08:00:00 UTC),
                    datetime!(2026-11-27 11:00:00 UTC)
                ),
            ]
        );
        assert_eq!(
            rest.ranges().collect::<Vec<_>>(),
            [(
                "c1",
                datetime!(2026-11-27 12:00:00 UTC),
                datetime!(2026-11-27 12:00:00 UTC)
            )]
        );
        // A cutoff on the hour leaves that hour; nothing before the first.
        let mut on_the_hour = kept.clone();
        let taken = on_the_hour.take_before(datetime!(2026-11-27 12:00:00 UTC));
        assert_eq!(
            taken.ranges().map(|r| r.2).max(),
            Some(datetime!(2026-11-27 11:00:00 UTC))
        );
        let mut none = kept.clone();
        assert!(none
            .take_before(datetime!(2026-11-26 23:00:00 UTC))
            .is_empty());
        assert_eq!(none, kept);
        let got: Vec<_> = t.ranges().collect();
        assert_eq!(
            got,
            [
                (
                    "",
                    datetime!(2026-11-26 23:00:00 UTC),
                    datetime!(2026-11-26 23:00:00 UTC)
                ),
                (
                    "c1",
                    datetime!(2026-11-27 08:00:00 UTC),
                    datetime!(2026-11-27 12:00:00 UTC)
                ),
            ]
        );
    }
}
