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

use std::collections::BTreeMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::counting::rollups::hour_of;
use crate::watchdog::Watchdog;

/// The hours, per campaign, that received rows since the last merge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// campaign ('' for hits without a usable one) -> first and last hour,
    /// as Unix seconds of the hour's start.
    hours: BTreeMap<String, (i64, i64)>,
}

impl Touched {
    /// Notes that `campaign` got rows for the hour holding `ts`.
    pub fn add(&mut self, campaign: &str, ts: OffsetDateTime) {
        let hour = hour_of(ts);
        self.widen(campaign, hour, hour);
    }

    /// Adds what `other` holds.
    pub fn merge(&mut self, other: Touched) {
        for (campaign, (lo, hi)) in other.hours {
            self.widen(&campaign, lo, hi);
        }
    }

    /// Widens `campaign`'s range to take in the hours `lo` to `hi`.
    fn widen(&mut self, campaign: &str, lo: i64, hi: i64) {
        match self.hours.get_mut(campaign) {
            Some(range) => *range = (range.0.min(lo), range.1.max(hi)),
            None => {
                self.hours.insert(campaign.to_owned(), (lo, hi));
            }
        }
    }

    /// Takes out the hours that start before `cutoff`; the later ones stay.
    pub fn take_before(&mut self, cutoff: OffsetDateTime) -> Touched {
        let last_before = hour_of(cutoff - time::Duration::SECOND);
        let cutoff = cutoff.unix_timestamp();
        let mut taken = Touched::default();
        self.hours.retain(|campaign, (lo, hi)| {
            if *lo >= cutoff {
                return true;
            }
            taken
                .hours
                .insert(campaign.clone(), (*lo, (*hi).min(last_before)));
            if *hi > last_before {
                *lo = last_before + 3600;
                true
            } else {
                false
            }
        });
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    /// Campaigns with their first and last hour.
    pub fn ranges(&self) -> impl Iterator<Item = (&str, OffsetDateTime, OffsetDateTime)> {
        self.hours.iter().map(|(c, &(lo, hi))| {
            let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).expect("an hour of an event");
            (c.as_str(), at(lo), at(hi))
        })
    }
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

/// Finds the groups of the range holding more than one row, deletes their
/// rows (by `ctid`: the finding and the deleting see one snapshot, and only
/// loads write the table meanwhile, which insert) and inserts their sums.
///
/// Groups are found by (hour, `grp`), the loader's hash of the other
/// dimensions (migration 9), for rows appended before it by the same hash
/// computed here (`GROUP_HASH_SQL`): a 64-bit key groups faster than eight text
/// columns. The sums are grouped by every dimension, so rows of two groups
/// that share a hash go back as two rows: the hash finds, it never decides.
const MERGE_CAMPAIGN: &str = concat!(
    "WITH gone AS (
    DELETE FROM rollup_hourly
    WHERE ctid = ANY (ARRAY(
        SELECT unnest(array_agg(ctid)) FROM rollup_hourly
        WHERE campaign = $1 AND hour >= $2 AND hour <= $3
        GROUP BY hour, COALESCE(grp, ",
    group_hash!(),
    ")
        HAVING count(*) > 1))
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
    let (merged, into): (i64, i64) = sqlx::query_as(MERGE_CAMPAIGN)
        .bind(campaign)
        .bind(first)
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
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
    let results: Vec<_> = futures::stream::iter(touched.ranges())
        .map(|(campaign, first, last)| async move {
            let merge = merge_campaign(pool, campaign, first, last);
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
                left.hours.remove(campaign);
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
