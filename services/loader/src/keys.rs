//! The counting rule's memory: the counting keys and listener keys each UTC
//! day already holds, kept in the loader.
//!
//! `counted_keys` and `daily_listeners` are append-only logs in PostgreSQL
//! (migration 8); this cache is what decides whether a key is new. Before,
//! each key went through `INSERT … ON CONFLICT DO NOTHING` into a primary key
//! on random 128-bit hashes, and those two statements were 40% of a load's
//! database time (docs/BENCHMARKS.md, "Loader"): a B-tree insertion per key.
//! Looking a key up in a hash set costs nanoseconds, and appending the new
//! ones to an unindexed heap costs a seventh of the insert.
//!
//! What keeps it exact, with any number of loaders:
//! - Every transaction that writes keys first bumps the one row of
//!   `counting_state` (`BUMP_EPOCH`). The row lock makes key writers take
//!   turns until each commits, across processes, so the keys a transaction
//!   reads are all the keys there are.
//! - The cache is valid for one epoch: the value its last own commit left.
//!   If the bumped epoch is not the next one, another loader (or a commit
//!   whose outcome this one never heard) wrote keys meanwhile, and the cache
//!   is dropped and each day read again from the tables.
//! - New keys join the cache only after their transaction commits; any error
//!   in between forgets the epoch, so the next load reads again.
//!
//! Within one process, transactions loading side by side
//! (`EARSHOT_LOAD_CONCURRENCY`) hold [`Keys`]' lock from the bump to the
//! cache update, so one never reads the cache while another's commit is on
//! its way in.

use std::collections::BTreeMap;

use futures::TryStreamExt as _;
use sqlx::{Postgres, Transaction};
use time::Date;
use uuid::Uuid;

type HashSet<T> = foldhash::HashSet<T>;

/// Days held in memory, the most recently used. The edge stamps an event
/// with the time it was heard, so live traffic is today's, plus
/// yesterday's for the pipeline's delay after midnight (Firehose buffers up
/// to 15 minutes); a backfill of an older day holds that day beside today.
/// A day that left is read again when an event comes back to it. Memory:
/// a day of the loader bench (1M events, 1.5M keys) raised the loader's
/// peak RSS by about 95 MB (docs/BENCHMARKS.md, "Loader").
pub const MAX_CACHED_DAYS: usize = 2;

/// Takes the key writers' turn and returns the new epoch. Anything that
/// writes `counted_keys` or `daily_listeners` must run this first, in the
/// same transaction.
const BUMP_EPOCH: &str = "UPDATE counting_state SET epoch = epoch + 1 RETURNING epoch";

/// The keys one day holds.
#[derive(Debug, Default)]
struct DayKeys {
    counted: HashSet<u128>,
    listeners: HashSet<u128>,
    /// The last turn that used the day (for eviction).
    used: u64,
}

/// The cache: the epoch it is valid for, and the days it holds.
#[derive(Debug, Default)]
pub struct KeyCache {
    /// The epoch of the last commit this cache saw; `None`: read again.
    epoch: Option<i64>,
    days: BTreeMap<Date, DayKeys>,
    /// Turns taken, to order the days by use.
    turns: u64,
}

/// The cache behind the lock that load transactions take turns on.
#[derive(Debug, Default)]
pub struct Keys(tokio::sync::Mutex<KeyCache>);

impl Keys {
    /// Takes the turn to count: the lock of this process, then the epoch
    /// row of the database (waiting for another loader's commit). Reads the
    /// keys of `days` that the cache lacks.
    pub async fn turn<'k>(
        &'k self,
        tx: &mut Transaction<'_, Postgres>,
        days: impl IntoIterator<Item = Date>,
    ) -> Result<Turn<'k>, sqlx::Error> {
        let mut cache = self.0.lock().await;
        let epoch: i64 = sqlx::query_scalar(BUMP_EPOCH).fetch_one(&mut **tx).await?;
        if cache.epoch != Some(epoch - 1) {
            if cache.epoch.is_some() {
                tracing::debug!("another loader wrote counting keys; reading them again");
            }
            cache.days.clear();
        }
        // Until this transaction commits, the cache is not known to match.
        cache.epoch = None;
        cache.turns += 1;
        let used = cache.turns;
        for day in days {
            if let Some(d) = cache.days.get_mut(&day) {
                d.used = used;
                continue;
            }
            let counted = read_day(tx, "SELECT key FROM counted_keys WHERE day = $1", day).await?;
            let listeners =
                read_day(tx, "SELECT key FROM daily_listeners WHERE day = $1", day).await?;
            metrics::counter!("earshot_loader_key_days_read_total").increment(1);
            cache.days.insert(
                day,
                DayKeys {
                    counted,
                    listeners,
                    used,
                },
            );
        }
        Ok(Turn { cache, epoch })
    }
}

/// One day's keys of a table, streamed into a set (a busy day holds
/// millions; a `Vec` of them first would double the memory).
async fn read_day(
    tx: &mut Transaction<'_, Postgres>,
    query: &str,
    day: Date,
) -> Result<HashSet<u128>, sqlx::Error> {
    let mut keys = HashSet::default();
    let mut rows = sqlx::query_scalar::<_, Uuid>(query)
        .bind(day)
        .fetch(&mut **tx);
    while let Some(key) = rows.try_next().await? {
        keys.insert(key.as_u128());
    }
    Ok(keys)
}

/// A transaction's turn to count. Dropped without [`Turn::committed`], it
/// leaves the cache to be read again.
pub struct Turn<'k> {
    cache: tokio::sync::MutexGuard<'k, KeyCache>,
    epoch: i64,
}

impl Turn<'_> {
    /// Is `key` counted on `day` (before this transaction)?
    pub fn is_counted(&self, day: Date, key: Uuid) -> bool {
        self.cache
            .days
            .get(&day)
            .is_some_and(|d| d.counted.contains(&key.as_u128()))
    }

    /// Has `key` (a listener of a campaign or creative) been heard on `day`?
    pub fn is_heard(&self, day: Date, key: Uuid) -> bool {
        self.cache
            .days
            .get(&day)
            .is_some_and(|d| d.listeners.contains(&key.as_u128()))
    }

    /// The transaction committed with these new keys: they join the cache,
    /// which is valid again, and the least recently used days beyond
    /// [`MAX_CACHED_DAYS`] leave it.
    pub fn committed(
        mut self,
        counted: impl IntoIterator<Item = (Date, Uuid)>,
        heard: impl IntoIterator<Item = (Date, Uuid)>,
    ) {
        let cache = &mut *self.cache;
        // Every day of the transaction was read in `turn`; a day missing
        // here would be read whole next time, never held in part.
        for (day, key) in counted {
            if let Some(d) = cache.days.get_mut(&day) {
                d.counted.insert(key.as_u128());
            }
        }
        for (day, key) in heard {
            if let Some(d) = cache.days.get_mut(&day) {
                d.listeners.insert(key.as_u128());
            }
        }
        while cache.days.len() > MAX_CACHED_DAYS {
            let lru = cache
                .days
                .iter()
                .min_by_key(|(_, d)| d.used)
                .map(|(day, _)| *day)
                .expect("more days than the limit");
            cache.days.remove(&lru);
        }
        cache.epoch = Some(self.epoch);
    }
}
