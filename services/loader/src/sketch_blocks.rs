//! `reach_sketch_blocks` (migration 27): each reach sketch of a day up to
//! the reach blocks' mark (`counting_state.reach_blocks_through`) united
//! into the aligned blocks of 2 to 128 days holding it, so a report over
//! many days merges a few block sketches instead of one per day
//! (docs/COUNTING.md, "Reach and frequency").
//!
//! Written two ways, like `rollup_blocks`: the fold adds whole days when
//! the blocks' mark moves ([`crate::daily::fold_blocks`]), and a load of a
//! day already folded adds its sketches to that day's blocks itself
//! ([`add_late`]). Both hold `counting_state`'s row (the fold alone, the
//! loads shared), so each day's listeners reach its blocks exactly once.
//! A HyperLogLog union is exact on its registers, so a block is the same
//! sketch whichever way and order its days arrived. Beside its sketch, a
//! block keeps its days' listener-id periods ([`IdPeriods`]), a union as
//! well, so a report learns whether its reach is an upper bound from the
//! blocks it merges.

use std::collections::BTreeMap;

use earshot_platform::id_periods::IdPeriods;
use earshot_platform::rollup::{block_start, BLOCK_SPANS};
use earshot_platform::sketch::Sketch;
use sqlx::{Postgres, Transaction};
use time::Date;

use crate::counting::reach::{DayReach, ReachKey};

/// A `reach_sketch_blocks` key; ordered as the primary key, the order
/// writers lock rows in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockKey {
    pub campaign: String,
    pub dim: String,
    pub value: String,
    pub span_days: i32,
    pub first_day: Date,
}

/// Every block of every span holding `day`, for one scope.
fn blocks_of(campaign: &str, dim: &str, value: &str, day: Date) -> impl Iterator<Item = BlockKey> {
    let (campaign, dim, value) = (campaign.to_owned(), dim.to_owned(), value.to_owned());
    BLOCK_SPANS.into_iter().map(move |span| BlockKey {
        campaign: campaign.clone(),
        dim: dim.clone(),
        value: value.clone(),
        span_days: span as i32,
        first_day: block_start(day, span),
    })
}

/// A block's listeners and the listener-id periods of their ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockReach {
    pub sketch: Sketch,
    pub periods: IdPeriods,
}

impl BlockReach {
    /// One day's listeners, with the kinds of ids they had.
    fn of_day(sketch: Sketch, day: Date, day_ids: bool, month_ids: bool) -> Self {
        Self {
            sketch,
            periods: IdPeriods::of_day(day, day_ids, month_ids),
        }
    }

    /// A stored block: its sketch's bytes and its periods.
    fn stored(bytes: &[u8], days: Vec<Date>, months: Vec<Date>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            sketch: decode(bytes)?,
            periods: IdPeriods::stored(days, months),
        })
    }

    fn merge(&mut self, other: &BlockReach) {
        self.sketch.merge(&other.sketch);
        self.periods.union(&other.periods);
    }
}

/// Days as a PostgreSQL array literal (`{2026-11-03,2026-11-04}`): one
/// text per row of an `UNNEST`, whose arrays cannot nest rows of arrays of
/// different lengths; the statements cast it back to `date[]`.
fn dates_literal(days: &[Date]) -> String {
    let days: Vec<String> = days.iter().map(Date::to_string).collect();
    format!("{{{}}}", days.join(","))
}

/// A stored sketch, as the database gives it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Sketch, sqlx::Error> {
    Sketch::from_bytes(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The days after `after` (every day, when `None`) up to `through` with
/// reach sketches.
const DAYS_TO_FOLD: &str = "SELECT DISTINCT day FROM reach_sketches
WHERE ($1::date IS NULL OR day > $1) AND day <= $2 ORDER BY day";

/// One day's sketches, with the kinds of ids their listeners had.
const DAY_SKETCHES: &str =
    "SELECT campaign, dim, value, sketch, day_ids, month_ids FROM reach_sketches WHERE day = $1";

/// How many block sketches a fold unites in memory before writing them
/// (at most 16 KB each: ~64 MB). A daily fold holds a day's, far fewer; a
/// fold of many days (the first after migration 27, a rebuild) writes each
/// block once per batch instead of once per day, which would leave a dead
/// row version per day behind.
const FOLD_BATCH_BLOCKS: usize = 4_096;

/// Adds the sketches of the days after `after` up to `through` to their
/// blocks, read a day at a time and written in batches of
/// [`FOLD_BATCH_BLOCKS`]; returns the block rows written. The caller holds
/// the marks' row lock, so no load writes a block meanwhile.
pub async fn fold(
    tx: &mut Transaction<'_, Postgres>,
    after: Option<Date>,
    through: Date,
) -> Result<u64, sqlx::Error> {
    let days: Vec<Date> = sqlx::query_scalar(DAYS_TO_FOLD)
        .bind(after)
        .bind(through)
        .fetch_all(&mut **tx)
        .await?;
    let mut written = 0;
    let mut blocks = BTreeMap::new();
    for day in days {
        let rows: Vec<(String, String, String, Vec<u8>, bool, bool)> = sqlx::query_as(DAY_SKETCHES)
            .bind(day)
            .fetch_all(&mut **tx)
            .await?;
        for (campaign, dim, value, bytes, day_ids, month_ids) in rows {
            let reach = BlockReach::of_day(decode(&bytes)?, day, day_ids, month_ids);
            for key in blocks_of(&campaign, &dim, &value, day) {
                blocks
                    .entry(key)
                    .or_insert_with(BlockReach::default)
                    .merge(&reach);
            }
        }
        if blocks.len() >= FOLD_BATCH_BLOCKS {
            written += merge(tx, std::mem::take(&mut blocks)).await?;
        }
    }
    written += merge(tx, blocks).await?;
    Ok(written)
}

/// Adds an object's sketches of days up to `reach_through` (the reach
/// blocks' mark the load shares) to their blocks.
pub async fn add_late(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(ReachKey<'_>, DayReach)],
    reach_through: Option<Date>,
) -> Result<(), sqlx::Error> {
    let Some(through) = reach_through else {
        return Ok(());
    };
    let mut blocks = BTreeMap::new();
    for (k, r) in rows.iter().filter(|(k, _)| k.day <= through) {
        let reach = BlockReach::of_day(r.sketch.clone(), k.day, r.day_ids, r.month_ids);
        for key in blocks_of(k.campaign, k.dim, k.value, k.day) {
            blocks
                .entry(key)
                .or_insert_with(BlockReach::default)
                .merge(&reach);
        }
    }
    merge(tx, blocks).await?;
    Ok(())
}

/// New blocks, as rows; the keys there already come back.
const INSERT_BLOCKS: &str = "INSERT INTO reach_sketch_blocks
    (campaign, dim, value, span_days, first_day, sketch, daily_id_days, monthly_id_months)
SELECT campaign, dim, value, span_days, first_day, sketch, days::date[], months::date[]
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::date[], $6::bytea[], $7::text[], $8::text[])
    AS u (campaign, dim, value, span_days, first_day, sketch, days, months)
ON CONFLICT (campaign, dim, value, span_days, first_day) DO NOTHING
RETURNING campaign, dim, value, span_days, first_day";

/// The stored blocks of the keys given, locked in the keys' order, as
/// (index of the key, sketch, periods).
const LOCK_BLOCKS: &str = "SELECT k.i, b.sketch, b.daily_id_days, b.monthly_id_months
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::date[])
    WITH ORDINALITY AS k (campaign, dim, value, span_days, first_day, i)
JOIN reach_sketch_blocks b USING (campaign, dim, value, span_days, first_day)
ORDER BY k.i FOR UPDATE OF b";

/// A row of [`LOCK_BLOCKS`].
type LockedBlock = (i64, Vec<u8>, Vec<Date>, Vec<Date>);

/// The united blocks written back over the rows [`LOCK_BLOCKS`] locked.
const UPDATE_BLOCKS: &str = "UPDATE reach_sketch_blocks b
SET sketch = u.sketch, daily_id_days = u.days::date[], monthly_id_months = u.months::date[]
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::date[], $6::bytea[], $7::text[], $8::text[])
    AS u (campaign, dim, value, span_days, first_day, sketch, days, months)
WHERE (b.campaign, b.dim, b.value, b.span_days, b.first_day)
    = (u.campaign, u.dim, u.value, u.span_days, u.first_day)";

/// The key columns of `keys`, one array each, for the statements above.
struct KeyColumns<'a> {
    campaign: Vec<&'a str>,
    dim: Vec<&'a str>,
    value: Vec<&'a str>,
    span_days: Vec<i32>,
    first_day: Vec<Date>,
}

impl<'a> KeyColumns<'a> {
    fn of(keys: impl Iterator<Item = &'a BlockKey>) -> Self {
        let mut c = KeyColumns {
            campaign: Vec::new(),
            dim: Vec::new(),
            value: Vec::new(),
            span_days: Vec::new(),
            first_day: Vec::new(),
        };
        for k in keys {
            c.campaign.push(&k.campaign);
            c.dim.push(&k.dim);
            c.value.push(&k.value);
            c.span_days.push(k.span_days);
            c.first_day.push(k.first_day);
        }
        c
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        q.bind(self.campaign)
            .bind(self.dim)
            .bind(self.value)
            .bind(self.span_days)
            .bind(self.first_day)
    }
}

/// Unites `blocks` (sorted by key) with `reach_sketch_blocks`: new keys are
/// inserted; the rows there already are locked in key order, read, united
/// and written back, so two loads of one block take turns and neither
/// loses the other's listeners. Returns the rows written.
async fn merge(
    tx: &mut Transaction<'_, Postgres>,
    blocks: BTreeMap<BlockKey, BlockReach>,
) -> Result<u64, sqlx::Error> {
    if blocks.is_empty() {
        return Ok(0);
    }
    let values = ValueColumns::of(blocks.values());
    let inserted: Vec<(String, String, String, i32, Date)> = values
        .bind(KeyColumns::of(blocks.keys()).bind(sqlx::query(INSERT_BLOCKS)))
        .try_map(|r: sqlx::postgres::PgRow| {
            use sqlx::Row;
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .fetch_all(&mut **tx)
        .await?;
    let written = blocks.len() as u64;
    if inserted.len() == blocks.len() {
        return Ok(written);
    }
    let new: std::collections::BTreeSet<BlockKey> = inserted
        .into_iter()
        .map(|(campaign, dim, value, span_days, first_day)| BlockKey {
            campaign,
            dim,
            value,
            span_days,
            first_day,
        })
        .collect();
    let there: Vec<(&BlockKey, &BlockReach)> =
        blocks.iter().filter(|(k, _)| !new.contains(k)).collect();
    let stored: Vec<LockedBlock> = KeyColumns::of(there.iter().map(|(k, _)| *k))
        .bind(sqlx::query(LOCK_BLOCKS))
        .try_map(|r: sqlx::postgres::PgRow| {
            use sqlx::Row;
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
        })
        .fetch_all(&mut **tx)
        .await?;
    // Each locked row united with its new listeners and periods, in the
    // order the rows were locked; written back only if that changed it
    // (as the day sketches are: `day_sketches::merge` says why).
    let mut united_keys = Vec::with_capacity(stored.len());
    let mut united = Vec::with_capacity(stored.len());
    for (i, bytes, days, months) in stored {
        let (key, add) = there[(i - 1) as usize];
        let before = BlockReach::stored(&bytes, days, months)?;
        let mut block = before.clone();
        block.merge(add);
        if block != before {
            united_keys.push(key);
            united.push(block);
        }
    }
    if united.is_empty() {
        return Ok(written);
    }
    ValueColumns::of(united.iter())
        .bind(KeyColumns::of(united_keys.into_iter()).bind(sqlx::query(UPDATE_BLOCKS)))
        .execute(&mut **tx)
        .await?;
    Ok(written)
}

/// The value columns of blocks, one array each, bound after their keys'.
struct ValueColumns {
    sketch: Vec<Vec<u8>>,
    days: Vec<String>,
    months: Vec<String>,
}

impl ValueColumns {
    fn of<'a>(blocks: impl Iterator<Item = &'a BlockReach>) -> Self {
        let mut c = ValueColumns {
            sketch: Vec::new(),
            days: Vec::new(),
            months: Vec::new(),
        };
        for b in blocks {
            c.sketch.push(b.sketch.to_bytes());
            c.days.push(dates_literal(&b.periods.days()));
            c.months.push(dates_literal(&b.periods.months()));
        }
        c
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.sketch).bind(self.days).bind(self.months)
    }
}

/// The campaigns with reach blocks or with sketches of days up to the mark.
const CAMPAIGNS_TO_CHECK: &str = "SELECT campaign FROM reach_sketch_blocks
WHERE $1::text IS NULL OR campaign = $1
UNION
SELECT campaign FROM reach_sketches
WHERE ($1::text IS NULL OR campaign = $1) AND day <= $2";

/// A campaign's sketches of the days up to the mark.
const CAMPAIGN_DAYS: &str = "SELECT dim, value, day, sketch, day_ids, month_ids FROM reach_sketches
WHERE campaign = $1 AND day <= $2";

/// A campaign's block sketches.
const CAMPAIGN_BLOCKS: &str =
    "SELECT dim, value, span_days, first_day, sketch, daily_id_days, monthly_id_months
FROM reach_sketch_blocks WHERE campaign = $1";

/// `earshot verify`'s check of the reach blocks: every block is the union
/// of its days' sketches up to the mark, no more and no less (a block
/// missing, one too many, or other listeners), and holds their listener-id
/// periods, one campaign at a time.
/// Each disagreement as (key `campaign/dim/value/first_day/span`, the
/// count of the days' union, the block's count: 0 where absent).
pub async fn check(
    pool: &sqlx::PgPool,
    campaign: Option<&str>,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let mark: Option<Date> = sqlx::query_scalar("SELECT reach_blocks_through FROM counting_state")
        .fetch_one(pool)
        .await?;
    // Before the first fold no block may exist.
    let through = mark.unwrap_or(Date::MIN);
    let campaigns: Vec<String> = sqlx::query_scalar(CAMPAIGNS_TO_CHECK)
        .bind(campaign)
        .bind(through)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::new();
    for c in campaigns {
        let days: Vec<(String, String, Date, Vec<u8>, bool, bool)> = sqlx::query_as(CAMPAIGN_DAYS)
            .bind(&c)
            .bind(through)
            .fetch_all(pool)
            .await?;
        let mut want: BTreeMap<BlockKey, BlockReach> = BTreeMap::new();
        for (dim, value, day, bytes, day_ids, month_ids) in days {
            let reach = BlockReach::of_day(decode(&bytes)?, day, day_ids, month_ids);
            for key in blocks_of(&c, &dim, &value, day) {
                want.entry(key).or_default().merge(&reach);
            }
        }
        type Stored = (String, String, i32, Date, Vec<u8>, Vec<Date>, Vec<Date>);
        let stored: Vec<Stored> = sqlx::query_as(CAMPAIGN_BLOCKS)
            .bind(&c)
            .fetch_all(pool)
            .await?;
        let mut have: BTreeMap<BlockKey, BlockReach> = BTreeMap::new();
        for (dim, value, span_days, first_day, bytes, days, months) in stored {
            let key = BlockKey {
                campaign: c.clone(),
                dim,
                value,
                span_days,
                first_day,
            };
            have.insert(key, BlockReach::stored(&bytes, days, months)?);
        }
        let keys: std::collections::BTreeSet<&BlockKey> = want.keys().chain(have.keys()).collect();
        for k in keys {
            let (w, h) = (want.get(k), have.get(k));
            if w != h {
                // Same listeners, other periods: the key says so, as the
                // counts cannot.
                let periods_only = matches!((w, h), (Some(w), Some(h)) if w.sketch == h.sketch);
                out.push((
                    format!(
                        "{}/{}/{}/{}/{}d{}",
                        k.campaign,
                        k.dim,
                        k.value,
                        k.first_day,
                        k.span_days,
                        if periods_only {
                            " (listener-id periods)"
                        } else {
                            ""
                        }
                    ),
                    w.map_or(0, |b| b.sketch.count()),
                    h.map_or(0, |b| b.sketch.count()),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_day_is_in_one_block_of_each_span_aligned_from_1970() {
        // 2026-08-24 is day 20,689 since 1970-01-01.
        let day = date!(2026 - 08 - 24);
        let keys: Vec<BlockKey> = blocks_of("c", "", "", day).collect();
        assert_eq!(keys.len(), BLOCK_SPANS.len());
        for k in &keys {
            let span = i64::from(k.span_days);
            assert!(k.first_day <= day && day < k.first_day + time::Duration::days(span));
            assert_eq!((k.first_day - date!(1970 - 01 - 01)).whole_days() % span, 0);
        }
        assert_eq!(block_start(day, 2), date!(2026 - 08 - 23));
        assert_eq!(block_start(date!(2026 - 08 - 23), 2), date!(2026 - 08 - 23));
    }
}
