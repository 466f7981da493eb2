//! The counting rule's memory: the counting keys and listener keys each UTC
//! day has counted and heard, in `counting_keys` and `listener_keys`
//! (migration 11), one partition per day with a primary key on (day,
//! listener, key): a key's first 8 bytes are its listener's, so one
//! listener's keys sit side by side (migration 32, [`super::key`]).
//!
//! An object's candidate keys are inserted with `ON CONFLICT DO NOTHING
//! RETURNING`: the keys returned are the new ones, and the primary key is
//! what decides, so the loader holds no key and reads none when it starts.
//! Loaders count side by side: two transactions inserting the same key
//! take turns on that key only (the second waits for the first to commit,
//! then finds it there), and the candidates go in sorted by (day, key), so
//! two loaders never wait on each other in a cycle.
//!
//! Only the open days ([`OPEN_DAYS`]) keep their keys; the loader's upkeep
//! drops the partitions of older days. A day's partitions are built
//! ([`ensure_days`]) from that day's raw events, which hold every field of
//! both keys, in SQL that hashes as [`super::count_key`] does: ahead of the
//! day (from no events), or when an event comes back to a closed day.
//!
//! Why a primary key and not the day's keys in memory (migration 8's way):
//! memory and restart time grew with the day's volume, about 95 MB and
//! 2.4 s per million events, and key writers had to take turns across
//! loaders. Inserting through the primary key costs more per key than
//! appending to a heap (docs/BENCHMARKS.md, "Loader"), which the lean
//! hourly grain pays for.

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

use super::HashSet;
use crate::partitions::{drop_day, partition_days, suffix};

/// Days that keep their keys: today and the two days before it. Live
/// traffic is today's, plus yesterday's for Firehose's buffering (up to 15
/// minutes) after midnight; the day before covers a loader that fell a day
/// behind. An event of an older day (a replay, a late object) has its day's
/// keys rebuilt from the raw events first, once; they are dropped again at
/// the next upkeep.
pub const OPEN_DAYS: i64 = 3;

/// The first day that keeps its keys at `today`.
pub fn first_open_day(today: Date) -> Date {
    today - Duration::days(OPEN_DAYS - 1)
}

/// The two key tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTable {
    /// Counting keys: (campaign, creative, episode, event, listener) of
    /// valid events.
    Counting,
    /// Listener keys: (campaign, listener) and (campaign, creative,
    /// listener) of valid impressions.
    Listener,
}

impl KeyTable {
    pub const ALL: [KeyTable; 2] = [KeyTable::Counting, KeyTable::Listener];

    pub fn name(self) -> &'static str {
        match self {
            KeyTable::Counting => "counting_keys",
            KeyTable::Listener => "listener_keys",
        }
    }

    const fn insert_sql(self) -> &'static str {
        match self {
            KeyTable::Counting => {
                "INSERT INTO counting_keys (day, listener, key)
                 SELECT * FROM UNNEST($1::date[], $2::int8[], $3::int8[])
                 ON CONFLICT DO NOTHING RETURNING day, listener, key"
            }
            KeyTable::Listener => {
                "INSERT INTO listener_keys (day, listener, key)
                 SELECT * FROM UNNEST($1::date[], $2::int8[], $3::int8[])
                 ON CONFLICT DO NOTHING RETURNING day, listener, key"
            }
        }
    }

    /// The day's keys from its raw events: `SELECT`s of (listener, key) for
    /// the events with `ts` in [$1, $2).
    pub const fn from_events_sql(self) -> &'static str {
        match self {
            KeyTable::Counting => COUNTING_KEYS_FROM_EVENTS,
            KeyTable::Listener => LISTENER_KEYS_FROM_EVENTS,
        }
    }
}

/// [`super::key`] in SQL, as the columns (listener, key): the listener
/// id's first 16 hex digits, and the first 8 bytes of the SHA-256 of the
/// tag, the parts and the listener id, each preceded by U+001F, each as a
/// bigint of those bytes.
/// `concat_ws` skips NULLs, so every part that can be NULL is coalesced as
/// the loader does.
macro_rules! key_sql {
    ($tag:literal, $parts:literal) => {
        concat!(
            "('x' || substr(listener, 1, 16))::bit(64)::bigint AS listener, ",
            "('x' || encode(substring(sha256(convert_to(concat_ws(chr(31), '",
            $tag,
            "', ",
            $parts,
            ", listener), 'UTF8')) FROM 1 FOR 8), 'hex'))::bit(64)::bigint AS key"
        )
    };
}

/// Every counting key of the valid events with `ts` in [$1, $2) (each may
/// come more than once).
const COUNTING_KEYS_FROM_EVENTS: &str = concat!(
    "SELECT ",
    key_sql!(
        "count/v1",
        "campaign, creative, coalesce(episode, ''), event"
    ),
    " FROM events WHERE ts >= $1 AND ts < $2 AND verdict = 'valid'"
);

/// Every listener key of the valid impressions with `ts` in [$1, $2):
/// campaign-wide (creative '') and per creative.
const LISTENER_KEYS_FROM_EVENTS: &str = concat!(
    "SELECT ",
    key_sql!("uniq/v1", "campaign, s.creative"),
    " FROM events CROSS JOIN LATERAL (VALUES (''), (creative)) AS s (creative)
     WHERE ts >= $1 AND ts < $2 AND verdict = 'valid' AND event = 'impression'"
);

/// Inserts `keys` (sorted by (day, key): the order concurrent loaders
/// take them in) into `table` and returns those that were not there: the
/// keys counted, or the listeners heard, for the first time on their day.
/// A key another transaction is inserting makes this wait for it to end.
/// Every day of `keys` must have its partition ([`ensure_days`]).
pub async fn insert_new(
    tx: &mut Transaction<'_, Postgres>,
    table: KeyTable,
    keys: &[(Date, Uuid)],
) -> Result<HashSet<(Date, Uuid)>, sqlx::Error> {
    debug_assert!(keys.is_sorted(), "keys go in sorted");
    if keys.is_empty() {
        return Ok(HashSet::default());
    }
    let days: Vec<Date> = keys.iter().map(|k| k.0).collect();
    let (listeners, hashes): (Vec<i64>, Vec<i64>) =
        keys.iter().map(|k| super::key_columns(k.1)).unzip();
    // UNNEST yields the arrays in order, and the insert takes its rows in
    // the order they come.
    let new: Vec<(Date, i64, i64)> = sqlx::query_as(table.insert_sql())
        .bind(&days)
        .bind(&listeners)
        .bind(&hashes)
        .fetch_all(&mut **tx)
        .await?;
    Ok(new
        .into_iter()
        .map(|(day, listener, hash)| (day, super::key_of_columns(listener, hash)))
        .collect())
}

/// The partition of `table` for `day`.
fn partition(table: KeyTable, day: Date) -> String {
    format!("{}_p{}", table.name(), suffix(day))
}

/// Of `days`, those whose key partitions (either table) do not exist.
const MISSING_DAYS: &str = "SELECT d FROM UNNEST($1::date[]) AS d
    WHERE to_regclass('counting_keys_p' || to_char(d, 'YYYYMMDD')) IS NULL
       OR to_regclass('listener_keys_p' || to_char(d, 'YYYYMMDD')) IS NULL
    ORDER BY d";

/// First key of the advisory lock that building a day's keys holds (the
/// second is the day's Julian day number): "ESKD" in ASCII.
const BUILD_LOCK_CLASS: i32 = 0x4553_4B44;

/// Makes sure every day of `days` has its key partitions, building those
/// that do not from the day's raw events. Returns the days built.
///
/// A day is built in one transaction: the partitions are made as tables of
/// their own, filled from the events committed so far, given their primary
/// key and attached (`ATTACH PARTITION` takes a lock that lets loads go on,
/// where `CREATE TABLE … PARTITION OF` would stop every load for the whole
/// build). Until the attach commits, a load of that day finds no partition
/// for its keys and fails (to be retried), so no event of the day can
/// commit without its keys being in the partition that follows: the ones
/// before the build are in its fill, the ones after insert theirs. Loaders
/// building the same day take turns on an advisory lock, and the second
/// finds it built.
pub async fn ensure_days(
    pool: &PgPool,
    days: impl IntoIterator<Item = Date>,
) -> Result<Vec<Date>, sqlx::Error> {
    let mut days: Vec<Date> = days.into_iter().collect();
    days.sort_unstable();
    days.dedup();
    let missing: Vec<Date> = sqlx::query_scalar(MISSING_DAYS)
        .bind(&days)
        .fetch_all(pool)
        .await?;
    let mut built = Vec::new();
    for day in missing {
        if build_day(pool, day).await? {
            metrics::counter!("earshot_loader_key_days_built_total").increment(1);
            built.push(day);
        }
    }
    Ok(built)
}

/// Builds `day`'s key partitions unless another loader did meanwhile;
/// returns whether it did.
async fn build_day(pool: &PgPool, day: Date) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(BUILD_LOCK_CLASS)
        .bind(day.to_julian_day())
        .execute(&mut *tx)
        .await?;
    let still_missing: Vec<Date> = sqlx::query_scalar(MISSING_DAYS)
        .bind(&[day][..])
        .fetch_all(&mut *tx)
        .await?;
    if still_missing.is_empty() {
        tx.rollback().await?;
        return Ok(false);
    }
    let from = day.midnight().assume_utc();
    let to = from + Duration::DAY;
    for table in KeyTable::ALL {
        // The partition is made and attached by migration 20's functions,
        // so that the loader's role needs no DDL right; a partition of one
        // table without the other (dropped by hand) is built again whole.
        let part: String = sqlx::query_scalar("SELECT earshot_new_key_partition($1, $2)")
            .bind(table.name())
            .bind(day)
            .fetch_one(&mut *tx)
            .await?;
        debug_assert_eq!(part, partition(table, day));
        // The name is the table's and a Date's digits, as the function
        // made it.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {part} (day, listener, key)
             SELECT DISTINCT $3::date, listener, key FROM ({}) AS k",
            table.from_events_sql()
        )))
        .bind(from)
        .bind(to)
        .bind(day)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT earshot_attach_key_partition($1, $2)")
            .bind(table.name())
            .bind(day)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(%day, "built the day's counting and listener keys from its events");
    Ok(true)
}

/// Drops the key partitions of the days before the open ones at `today`;
/// returns the days dropped. A load of such a day in flight is waited for;
/// one that starts later finds no partition, fails, and is retried after
/// [`ensure_days`] builds the day again.
pub async fn drop_closed_days(pool: &PgPool, today: Date) -> Result<Vec<Date>, sqlx::Error> {
    let first_open = first_open_day(today);
    let mut dropped = Vec::new();
    for table in KeyTable::ALL {
        for day in partition_days(pool, table.name()).await? {
            if day < first_open {
                drop_day(pool, table.name(), day).await?;
                dropped.push(day);
            }
        }
    }
    dropped.sort_unstable();
    dropped.dedup();
    Ok(dropped)
}

/// The open days at `now`, and the days ahead the loader makes partitions
/// for, to build before they are needed.
pub fn days_to_keep_ready(now: OffsetDateTime, ahead: i64) -> impl Iterator<Item = Date> {
    let today = now.date();
    (-(OPEN_DAYS - 1)..=ahead).map(move |i| today + Duration::days(i))
}
