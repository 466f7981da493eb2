//! Day partitions of `events`: created ahead of need, on demand for
//! replays of older days, and dropped after the retention period. (The
//! key tables' partitions live and die by other rules:
//! `counting::keys`.)

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::PgPool;
use time::{Date, Duration};

/// Days of partitions created ahead of today, so a new day never waits on DDL.
pub const DAYS_AHEAD: i64 = 3;

/// The tables whose day partitions the retention period drops with
/// `events`': the key logs of migration 8, which loaders no longer write
/// (migration 11) and a later migration drops.
const RETIRED_KEY_LOGS: [&str; 2] = ["counted_keys", "daily_listeners"];

/// A day as partition names end: `YYYYMMDD`.
pub(crate) fn suffix(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A day as SQL reads it: `YYYY-MM-DD`.
pub(crate) fn iso(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The days of `parent`'s partitions, which are named `<parent>_pYYYYMMDD`,
/// in order.
pub(crate) async fn partition_days(pool: &PgPool, parent: &str) -> Result<Vec<Date>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = $1",
    )
    .bind(parent)
    .fetch_all(pool)
    .await?;
    let fmt = time::macros::format_description!("[year][month][day]");
    let prefix = format!("{parent}_p");
    let mut days: Vec<Date> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix))
        .filter(|s| s.len() == 8)
        .filter_map(|s| Date::parse(s, &fmt).ok())
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// Remembers which days exist, so the common case costs no query.
#[derive(Default)]
pub struct Partitions {
    known: Mutex<HashSet<Date>>,
}

impl Partitions {
    /// Makes sure the partitions for `days` exist. DDL runs in its own short
    /// transactions, outside any load transaction.
    pub async fn ensure(
        &self,
        pool: &PgPool,
        days: impl IntoIterator<Item = Date>,
    ) -> Result<(), sqlx::Error> {
        let missing: Vec<Date> = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<Date> = days.into_iter().filter(|d| !known.contains(d)).collect();
            v.sort();
            v.dedup();
            v
        };
        for day in missing {
            create_day(pool, day).await?;
            self.known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(day);
        }
        Ok(())
    }

    /// Creates today's and the next [`DAYS_AHEAD`] days' partitions.
    pub async fn ensure_ahead(&self, pool: &PgPool, today: Date) -> Result<(), sqlx::Error> {
        self.ensure(pool, (0..=DAYS_AHEAD).map(|i| today + Duration::days(i)))
            .await
    }

    /// Drops partitions whose day is before `oldest_kept`, whole (no row is
    /// deleted). Returns the days dropped.
    pub async fn drop_before(
        &self,
        pool: &PgPool,
        oldest_kept: Date,
    ) -> Result<Vec<Date>, sqlx::Error> {
        let mut dropped = Vec::new();
        for day in partition_days(pool, "events").await? {
            if day < oldest_kept {
                for table in std::iter::once("events").chain(RETIRED_KEY_LOGS) {
                    drop_day(pool, table, day).await?;
                }
                self.known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&day);
                dropped.push(day);
            }
        }
        dropped.sort();
        Ok(dropped)
    }
}

/// Drops `parent`'s partition of `day`, if there is one. Through the
/// function migration 20 made for it, so that the loader's role needs no
/// DDL right (docs/OPERATIONS.md, "Database roles"); as for every such
/// function, `parent` is checked against a fixed list there.
pub(crate) async fn drop_day(pool: &PgPool, parent: &str, day: Date) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT earshot_drop_day_partition($1, $2)")
        .bind(parent)
        .bind(day)
        .execute(pool)
        .await?;
    Ok(())
}

async fn create_day(pool: &PgPool, day: Date) -> Result<(), sqlx::Error> {
    // Through migration 20's function, as `drop_day`.
    match sqlx::query("SELECT earshot_create_events_partition($1)")
        .bind(day)
        .execute(pool)
        .await
    {
        Ok(_) => Ok(()),
        // Two loaders creating the same partition at once: the loser sees
        // a duplicate in the catalog; the partition exists either way.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P07") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
