//! The daily tables: `rollup_daily` (one row per campaign, day, creative
//! and country, a column per counter of the metric registry) and
//! `rollup_blocks` (the same summed over aligned blocks of days), their
//! statements generated from the registry, and the fold that adds the days
//! that ended to their blocks.

use std::sync::LazyLock;

use earshot_domain::metric::{counter_count, counters, Registry, METRICS};
use earshot_platform::rollup::{block_spans_sql, daily_columns};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use time::Date;

use crate::counting::rollups::Rollups;

/// The statements that write the daily tables, for one registry.
#[derive(Debug)]
pub struct DailySql {
    counters: usize,
    /// The rows of one object added to `rollup_daily`, and for the days up
    /// to the blocks' mark ([`share_mark`]) to their blocks.
    pub upsert: String,
    /// The days after `$1` (every day, when it is NULL) up to `$2`, from
    /// `rollup_daily` into their blocks.
    pub fold: String,
}

impl DailySql {
    pub fn new(registry: Registry) -> Self {
        let columns = daily_columns(registry, str::to_owned);
        let counters = counter_count(registry);
        let arrays: String = (0..counters)
            .map(|i| format!(", ${}::int8[]", 5 + i))
            .collect();
        let blocks_through = 5 + counters;
        // Data-modifying CTEs always run to completion, read or not.
        let upsert = format!(
            "WITH d AS (
    SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[]{arrays})
    AS t (campaign, day, creative, country, {columns})
), daily AS (
    INSERT INTO rollup_daily AS r (campaign, day, creative, country, {columns})
    SELECT * FROM d
    ON CONFLICT (campaign, day, creative, country) DO UPDATE SET
{add}
)
{blocks}",
            add = add_counts(registry),
            blocks = add_to_blocks(registry, "d", &format!("d.day <= ${blocks_through}::date")),
        );
        let fold = add_to_blocks(
            registry,
            "rollup_daily",
            "($1::date IS NULL OR d.day > $1) AND d.day <= $2",
        );
        Self {
            counters,
            upsert,
            fold,
        }
    }

    /// The statements of earshot's registry ([`METRICS`]).
    pub fn standard() -> &'static DailySql {
        static STANDARD: LazyLock<DailySql> = LazyLock::new(|| DailySql::new(METRICS));
        &STANDARD
    }

    /// Adds an object's daily rows (`r.daily`, sorted by key: the order
    /// concurrent loaders take the row locks in) to `rollup_daily`, and to
    /// the blocks of their days up to `blocks_through`. The counters go as
    /// one array each, in the registry's order.
    pub async fn upsert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        r: &Rollups<'_>,
        blocks_through: Date,
    ) -> Result<(), sqlx::Error> {
        let rows = &r.daily;
        let mut q = sqlx::query(AssertSqlSafe(self.upsert.as_str()))
            .bind(rows.iter().map(|(k, _)| k.campaign).collect::<Vec<&str>>())
            .bind(rows.iter().map(|(k, _)| k.day).collect::<Vec<Date>>())
            .bind(rows.iter().map(|(k, _)| k.creative).collect::<Vec<&str>>())
            .bind(rows.iter().map(|(k, _)| k.country).collect::<Vec<&str>>());
        for i in 0..self.counters {
            q = q.bind(rows.iter().map(|(_, m)| m[i]).collect::<Vec<i64>>());
        }
        q.bind(blocks_through).execute(&mut **tx).await?;
        Ok(())
    }
}

/// ON CONFLICT: add the new counts to the stored ones, for every counter.
fn add_counts(registry: Registry) -> String {
    counters(registry)
        .map(|(_, m)| format!("    {c} = r.{c} + EXCLUDED.{c}", c = m.name))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The rows of `src` (with a `day` and the counter columns) summed into
/// every aligned block of `rollup_blocks` holding their day, and added to
/// it. Rows come sorted by key: the order concurrent writers take the row
/// locks in.
fn add_to_blocks(registry: Registry, src: &str, filter: &str) -> String {
    format!(
        "INSERT INTO rollup_blocks AS r
    (campaign, span_days, first_day, creative, country, {columns})
SELECT d.campaign, b.span, d.day - ((d.day - DATE '1970-01-01') % b.span), d.creative, d.country,
       {sums}
FROM {src} AS d CROSS JOIN {spans} AS b (span)
WHERE {filter}
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (campaign, span_days, first_day, creative, country) DO UPDATE SET
{add}",
        columns = daily_columns(registry, str::to_owned),
        sums = daily_columns(registry, |c| format!("sum({c})")),
        spans = block_spans_sql(),
        add = add_counts(registry),
    )
}

/// The last day `rollup_blocks` holds, and the last day
/// `reach_sketch_blocks` holds (`None` before the loader first folded the
/// sketches of a database that had them: migration 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub blocks_through: Date,
    pub reach_through: Option<Date>,
}

const MARKS: &str = "SELECT blocks_through, reach_blocks_through FROM counting_state";

async fn read_marks<'e>(e: impl sqlx::PgExecutor<'e>, lock: &str) -> Result<Marks, sqlx::Error> {
    let (blocks_through, reach_through) = sqlx::query_as(AssertSqlSafe(format!("{MARKS}{lock}")))
        .fetch_one(e)
        .await?;
    Ok(Marks {
        blocks_through,
        reach_through,
    })
}

/// The blocks' marks, with `counting_state`'s row shared to the commit: any
/// number of loads hold it at once, and a fold ([`fold_blocks`]) waits for
/// them all (and they for it), so a load adds to the blocks of exactly the
/// days the marks say.
pub async fn share_mark(tx: &mut Transaction<'_, Postgres>) -> Result<Marks, sqlx::Error> {
    read_marks(&mut **tx, " FOR SHARE").await
}

/// The blocks' marks, with `counting_state`'s row locked against loads
/// (which share it, [`share_mark`]): no load is between this and the commit.
async fn lock_mark(tx: &mut Transaction<'_, Postgres>) -> Result<Marks, sqlx::Error> {
    read_marks(&mut **tx, " FOR UPDATE").await
}

/// Adds the days after `after` (every day, when `None`) up to `through` to
/// their `rollup_blocks`, and the days after `reach_after` to their reach
/// blocks (`crate::sketch_blocks`), moves both marks to `through` and
/// commits; returns the `rollup_blocks` rows written. `tx` holds the marks'
/// lock ([`lock_mark`]).
async fn fold_and_commit(
    mut tx: Transaction<'_, Postgres>,
    after: Option<Date>,
    reach_after: Option<Date>,
    through: Date,
) -> Result<u64, sqlx::Error> {
    let rows = if after.is_none_or(|a| a < through) {
        sqlx::query(AssertSqlSafe(DailySql::standard().fold.as_str()))
            .bind(after)
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    } else {
        0
    };
    if reach_after.is_none_or(|a| a < through) {
        crate::sketch_blocks::fold(&mut tx, reach_after, through).await?;
    }
    sqlx::query("UPDATE counting_state SET blocks_through = $1, reach_blocks_through = $1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows)
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// The mark before, and now.
    pub was: Date,
    pub through: Date,
    /// Block rows deleted, then written.
    pub deleted: u64,
    pub rows: u64,
}

/// Rebuilds `rollup_blocks` from `rollup_daily`: every day up to `through`
/// (by default the last day with numbers, or the mark if later) and none
/// after, and moves the mark there. The repair for blocks that `earshot
/// verify` finds off, and for a version of the loader that does not know
/// the mark having run against the database (docs/OPERATIONS.md, "Upgrades
/// and rollback"). With the mark's row lock, like a fold.
pub async fn rebuild_blocks(pool: &PgPool, through: Option<Date>) -> Result<Rebuilt, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let was = lock_mark(&mut tx).await?.blocks_through;
    let last: Option<Date> = sqlx::query_scalar("SELECT max(day) FROM rollup_daily")
        .fetch_one(&mut *tx)
        .await?;
    let through = through.unwrap_or_else(|| last.map_or(was, |l| l.max(was)));
    let deleted = sqlx::query("DELETE FROM rollup_blocks")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM reach_sketch_blocks")
        .execute(&mut *tx)
        .await?;
    let rows = fold_and_commit(tx, None, None, through).await?;
    Ok(Rebuilt {
        was,
        through,
        deleted,
        rows,
    })
}

/// Days are folded into `rollup_blocks` once the day after them has ended
/// too: live traffic is today's, plus yesterday's for Firehose's buffering
/// (up to 15 minutes) and any loader backlog of up to a day, and those loads
/// then leave the blocks alone. A load for a day already folded (a late
/// object, a backfill) adds to its blocks itself: later folding costs
/// speed, never exactness.
pub const FOLD_AFTER_DAYS: i64 = 2;

/// The last day to fold at `today`.
pub fn fold_through(today: Date) -> Date {
    today - time::Duration::days(FOLD_AFTER_DAYS)
}

/// What a fold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// The days after `from` up to `through` joined the blocks.
    pub from: Date,
    pub through: Date,
    /// Block rows written.
    pub rows: u64,
}

/// Adds the days after the blocks' mark up to `through` to `rollup_blocks`
/// and moves the mark there; `None` when the mark is already there.
///
/// It locks `counting_state`'s row, which every load shares to its commit
/// ([`share_mark`]), so no load is between reading the mark and committing:
/// each day's numbers reach its blocks once, through the loads before the
/// fold or through the fold and the loads after it.
///
/// The mark only moves forward, so a mark already at `through` stays there:
/// such a call (nearly every one: each loader asks at every upkeep, a day
/// needs folding once a day) reads it without the lock and returns, never
/// making a load wait.
pub async fn fold_blocks(pool: &PgPool, through: Date) -> Result<Option<Folded>, sqlx::Error> {
    let in_step = |m: Marks| m.reach_through == Some(m.blocks_through);
    let marks = read_marks(pool, "").await?;
    if through <= marks.blocks_through && in_step(marks) {
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    let marks = lock_mark(&mut tx).await?;
    if through <= marks.blocks_through && in_step(marks) {
        tx.rollback().await?;
        return Ok(None);
    }
    // The reach blocks catch up with a mark that is not moving (the first
    // upkeep after migration 27 on a database with reach data).
    let from = marks.blocks_through;
    let through = through.max(from);
    let rows = fold_and_commit(tx, Some(from), marks.reach_through, through).await?;
    Ok(Some(Folded {
        from,
        through,
        rows,
    }))
}
