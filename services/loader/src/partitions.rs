//! Day partitions of `events`, `counted_keys` and `daily_listeners`:
//! created ahead of need, on demand for replays of older days, and dropped
//! after the retention period.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::{AssertSqlSafe, PgPool};
use time::{Date, Duration};

/// Days of partitions created ahead of today, so a new day never waits on DDL.
pub const DAYS_AHEAD: i64 = 3;

/// The partitioned tables and how their bounds are written.
const TABLES: [(&str, bool); 3] = [
    ("events", true),
    ("counted_keys", false),
    ("daily_listeners", false),
];

fn suffix(d: Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

fn iso(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
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

    /// Drops partitions whose day is before `oldest_kept`. Returns the days dropped.
    pub async fn drop_before(
        &self,
        pool: &PgPool,
        oldest_kept: Date,
    ) -> Result<Vec<Date>, sqlx::Error> {
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT c.relname::text FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'events' AND c.relname ~ '^events_p[0-9]{8}$'",
        )
        .fetch_all(pool)
        .await?;
        let fmt = time::macros::format_description!("[year][month][day]");
        let mut dropped = Vec::new();
        for (name,) in names {
            let Ok(day) = Date::parse(&name["events_p".len()..], &fmt) else {
                continue;
            };
            if day < oldest_kept {
                for (table, _) in TABLES {
                    // The table is one of `TABLES`, the suffix a Date's digits.
                    let sql = format!("DROP TABLE IF EXISTS {table}_p{}", suffix(day));
                    sqlx::query(AssertSqlSafe(sql)).execute(pool).await?;
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

async fn create_day(pool: &PgPool, day: Date) -> Result<(), sqlx::Error> {
    let next = day + Duration::days(1);
    for (table, timestamped) in TABLES {
        let (from, to) = if timestamped {
            (
                format!("{} 00:00:00+00", iso(day)),
                format!("{} 00:00:00+00", iso(next)),
            )
        } else {
            (iso(day), iso(next))
        };
        // Names and bounds come from a Date, never from input text.
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {table}_p{} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}')",
            suffix(day)
        );
        match sqlx::query(AssertSqlSafe(sql)).execute(pool).await {
            Ok(_) => {}
            // Two loaders creating the same partition at once: the loser sees
            // a duplicate in the catalog; the partition exists either way.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P07") | Some("23505")) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
