//! The counting rule's memory: the counting keys and listener keys each UTC
//! day already holds, kept in the loader.
//!
//! `counted_keys` and `daily_listeners` are append-only logs in PostgreSQL
//! (migration 8); this cache is what decides whether a key is new. A primary
//! key on random 128-bit hashes would cost a B-tree insertion per key (40% of
//! a load's database time when the keys were inserted that way,
//! docs/BENCHMARKS.md, "Loader"); a lookup in a hash set costs nanoseconds,
//! and appending the new keys to an unindexed heap a seventh of the insert.
//!
//! What keeps it exact, with any number of loaders:
//! - Every transaction that writes keys first bumps the one row of
//!   `counting_state` (`BUMP_EPOCH`). The row lock makes key writers take
//!   turns until each commits, across processes, so the keys a transaction
//!   reads are all the keys there are. Each key row carries the epoch of the
//!   turn that appended it.
//! - The cache is valid for one epoch: the value its last own commit left.
//!   If the bumped epoch is not the next one, other loaders counted
//!   meanwhile, and the cache reads what they appended (keys of its days
//!   with a later epoch: a BRIN index finds them at the end of each day's
//!   table). After a commit whose outcome this loader never heard, it drops
//!   the cache and reads each day whole.
//! - New keys join the cache only after their transaction commits; any error
//!   in between forgets the epoch, so the next load reads again.
//!
//! Within one process, transactions loading side by side
//! (`EARSHOT_LOAD_CONCURRENCY`) hold [`KeyMemory`]'s lock from the bump to the
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

/// Takes the key writers' turn and returns the new epoch, and the last day
/// the blocks hold (`store::fold_blocks`, which moves it under the same row
/// lock). Anything that writes `counted_keys` or `daily_listeners` must run
/// this first, in the same transaction.
const BUMP_EPOCH: &str =
    "UPDATE counting_state SET epoch = epoch + 1 RETURNING epoch, blocks_through";

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
struct KeyCache {
    /// The epoch of the last commit this cache saw; `None`: read again.
    epoch: Option<i64>,
    days: BTreeMap<Date, DayKeys>,
    /// Turns taken, to order the days by use.
    turns: u64,
}

/// The cache behind the lock that load transactions take turns on.
#[derive(Debug, Default)]
pub struct KeyMemory(tokio::sync::Mutex<KeyCache>);

impl KeyMemory {
    /// Takes the turn to count: the lock of this process, then the epoch
    /// row of the database (waiting for another loader's commit). Reads the
    /// keys of `days` that the cache lacks.
    pub async fn turn<'k>(
        &'k self,
        tx: &mut Transaction<'_, Postgres>,
        days: impl IntoIterator<Item = Date>,
    ) -> Result<Turn<'k>, sqlx::Error> {
        let mut cache = self.0.lock().await;
        let (epoch, blocks_through): (i64, Date) =
            sqlx::query_as(BUMP_EPOCH).fetch_one(&mut **tx).await?;
        match cache.epoch {
            Some(last) if last == epoch - 1 => {}
            // Other loaders took the turns in between: add what they appended.
            Some(last) if last < epoch => {
                let mut caught_up = 0;
                for (day, keys) in cache.days.iter_mut() {
                    caught_up +=
                        read_into(&mut keys.counted, tx, COUNTED_AFTER, *day, last).await?;
                    caught_up +=
                        read_into(&mut keys.listeners, tx, LISTENERS_AFTER, *day, last).await?;
                }
                metrics::counter!("earshot_loader_keys_caught_up_total").increment(caught_up);
                tracing::debug!(
                    from_epoch = last,
                    to_epoch = epoch - 1,
                    keys = caught_up,
                    "read the counting keys other loaders appended"
                );
            }
            // No commit yet, one this loader never heard back from, or an
            // epoch behind its own (a database restored from a backup):
            // start over.
            _ => cache.days.clear(),
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
            let (mut counted, mut listeners) = (HashSet::default(), HashSet::default());
            read_into(&mut counted, tx, COUNTED_AFTER, day, i64::MIN).await?;
            read_into(&mut listeners, tx, LISTENERS_AFTER, day, i64::MIN).await?;
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
        Ok(Turn {
            cache,
            epoch,
            blocks_through,
        })
    }
}

/// A day's keys appended after epoch `$2`: by other loaders' turns, or all
/// of them (`i64::MIN`; rows from before migration 8 have epoch 0).
const COUNTED_AFTER: &str = "SELECT key FROM counted_keys WHERE day = $1 AND epoch > $2";
const LISTENERS_AFTER: &str = "SELECT key FROM daily_listeners WHERE day = $1 AND epoch > $2";

/// Streams the keys `query` selects for `day` after `epoch` into `keys` (a
/// busy day holds millions; a `Vec` of them first would double the memory)
/// and returns how many it read.
async fn read_into(
    keys: &mut HashSet<u128>,
    tx: &mut Transaction<'_, Postgres>,
    query: &'static str,
    day: Date,
    epoch: i64,
) -> Result<u64, sqlx::Error> {
    let mut rows = sqlx::query_scalar::<_, Uuid>(query)
        .bind(day)
        .bind(epoch)
        .fetch(&mut **tx);
    let mut n = 0;
    while let Some(key) = rows.try_next().await? {
        keys.insert(key.as_u128());
        n += 1;
    }
    Ok(n)
}

/// A transaction's turn to count. Dropped without [`Turn::committed`], it
/// leaves the cache to be read again.
pub struct Turn<'k> {
    cache: tokio::sync::MutexGuard<'k, KeyCache>,
    epoch: i64,
    blocks_through: Date,
}

impl Turn<'_> {
    /// The epoch of this turn, which the keys it appends carry.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The last day `rollup_blocks` holds: a load adds to the blocks of its
    /// days up to it and leaves later days to the fold (migration 10).
    pub fn blocks_through(&self) -> Date {
        self.blocks_through
    }

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
