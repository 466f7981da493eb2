//! `reach_sketches` (migration 21): each load merges its objects' day
//! sketches ([`crate::counting::reach::sketches`]) into the stored ones.
//! Their blocks, `reach_sketch_blocks`, are [`crate::sketch_blocks`].

use sqlx::{Postgres, Transaction};
use time::Date;

use crate::counting::reach::{DayReach, ReachKey};
use crate::sketch_blocks::decode;

/// An object's reach sketches, as new rows; the keys that were there
/// already come back, for [`LOCK_SKETCHES`]. A key another load is
/// inserting makes this wait for its commit, then counts as there.
const INSERT_SKETCHES: &str = "INSERT INTO reach_sketches (campaign, day, dim, value, sketch, day_ids, month_ids)
SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[], $5::bytea[], $6::bool[], $7::bool[])
ON CONFLICT (campaign, day, dim, value) DO NOTHING
RETURNING campaign, day, dim, value";

/// The stored sketches of the keys given, locked in the keys' order (the
/// order concurrent loaders lock them in), as (index of the key, sketch,
/// day_ids, month_ids).
const LOCK_SKETCHES: &str =
    "SELECT k.i, r.sketch, r.day_ids, r.month_ids FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[])
    WITH ORDINALITY AS k (campaign, day, dim, value, i)
JOIN reach_sketches r USING (campaign, day, dim, value)
ORDER BY k.i FOR UPDATE OF r";

/// The merged sketches written back over the rows [`LOCK_SKETCHES`] locked.
const UPDATE_SKETCHES: &str = "UPDATE reach_sketches r SET sketch = u.sketch,
    day_ids = r.day_ids OR u.day_ids, month_ids = r.month_ids OR u.month_ids
FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[], $5::bytea[], $6::bool[], $7::bool[])
    AS u (campaign, day, dim, value, sketch, day_ids, month_ids)
WHERE (r.campaign, r.day, r.dim, r.value) = (u.campaign, u.day, u.dim, u.value)";

/// Keys merged per round of statements. A dense sketch is 16 KiB, and late
/// in a busy day a load touches ~1,150 of them (the loader benchmark's
/// keys): merged in one round, the rows read, the rows united and the
/// update's parameters were each ~18 MB at once, the loader's largest
/// allocation, which made its peak memory grow with the day. 128 keys keep
/// each round near 2 MiB for a few more round trips per load.
pub(crate) const SKETCH_BATCH: usize = 128;

/// Merges an object's reach sketches (sorted by key) into `reach_sketches`,
/// [`SKETCH_BATCH`] keys at a time, in key order, so locks are still taken
/// in the order concurrent loaders take them.
pub(crate) async fn merge(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(ReachKey<'_>, DayReach)],
) -> Result<(), sqlx::Error> {
    for batch in rows.chunks(SKETCH_BATCH) {
        merge_batch(tx, batch).await?;
    }
    Ok(())
}

/// Merges sketches (sorted by key) into `reach_sketches`:
/// new keys are inserted; the rows there already are locked in key order,
/// read, united with the object's listeners and written back, so two loads
/// of the same key take turns and neither loses the other's listeners.
///
/// Only the rows the union changed are written back: a listener heard
/// before is in the sketch already, and a dense sketch's register does not
/// always grow. Each written row is up to 16 KiB of registers, rewritten
/// whole; at 5 million events loaded that day ~800 rows per load, and
/// still 98% of them changed in the scale benchmark (new listeners), so
/// what cut that statement's time (500–550 ms to 65–70 ms) was lz4
/// (migration 30), not this.
async fn merge_batch(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(ReachKey<'_>, DayReach)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let bytes: Vec<Vec<u8>> = rows.iter().map(|(_, r)| r.sketch.to_bytes()).collect();
    let inserted: Vec<(String, Date, String, String)> = sqlx::query_as(INSERT_SKETCHES)
        .bind(rows.iter().map(|(k, _)| k.campaign).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(k, _)| k.day).collect::<Vec<Date>>())
        .bind(rows.iter().map(|(k, _)| k.dim).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(k, _)| k.value).collect::<Vec<&str>>())
        .bind(&bytes)
        .bind(rows.iter().map(|(_, r)| r.day_ids).collect::<Vec<bool>>())
        .bind(rows.iter().map(|(_, r)| r.month_ids).collect::<Vec<bool>>())
        .fetch_all(&mut **tx)
        .await?;
    if inserted.len() == rows.len() {
        return Ok(());
    }
    let new: foldhash::HashSet<(&str, Date, &str, &str)> = inserted
        .iter()
        .map(|(c, d, dim, v)| (c.as_str(), *d, dim.as_str(), v.as_str()))
        .collect();
    let there: Vec<&(ReachKey<'_>, DayReach)> = rows
        .iter()
        .filter(|(k, _)| !new.contains(&(k.campaign, k.day, k.dim, k.value)))
        .collect();
    let stored: Vec<(i64, Vec<u8>, bool, bool)> = sqlx::query_as(LOCK_SKETCHES)
        .bind(there.iter().map(|(k, _)| k.campaign).collect::<Vec<&str>>())
        .bind(there.iter().map(|(k, _)| k.day).collect::<Vec<Date>>())
        .bind(there.iter().map(|(k, _)| k.dim).collect::<Vec<&str>>())
        .bind(there.iter().map(|(k, _)| k.value).collect::<Vec<&str>>())
        .fetch_all(&mut **tx)
        .await?;
    let (merged, merged_bytes) = unite_locked(&there, &stored)?;
    tracing::debug!(
        locked = stored.len(),
        changed = merged.len(),
        bytes = merged_bytes.iter().map(Vec::len).sum::<usize>(),
        "day sketches united"
    );
    if merged.is_empty() {
        return Ok(());
    }
    sqlx::query(UPDATE_SKETCHES)
        .bind(
            merged
                .iter()
                .map(|(k, _)| k.campaign)
                .collect::<Vec<&str>>(),
        )
        .bind(merged.iter().map(|(k, _)| k.day).collect::<Vec<Date>>())
        .bind(merged.iter().map(|(k, _)| k.dim).collect::<Vec<&str>>())
        .bind(merged.iter().map(|(k, _)| k.value).collect::<Vec<&str>>())
        .bind(&merged_bytes)
        .bind(merged.iter().map(|(_, r)| r.day_ids).collect::<Vec<bool>>())
        .bind(
            merged
                .iter()
                .map(|(_, r)| r.month_ids)
                .collect::<Vec<bool>>(),
        )
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A key of an object's sketches with its listeners.
type Row<'r, 'k> = &'r (ReachKey<'k>, DayReach);

/// The rows [`LOCK_SKETCHES`] returned, as (1-based index of the key in
/// `there`, stored bytes, day_ids, month_ids), each united with its new
/// sketch: the step the day sketches take under their row locks. Returns
/// the keys whose row the union changes (listeners or flags), in the order
/// they were locked, and the bytes to write back.
fn unite_locked<'r, 'k>(
    there: &[Row<'r, 'k>],
    stored: &[(i64, Vec<u8>, bool, bool)],
) -> Result<(Vec<Row<'r, 'k>>, Vec<Vec<u8>>), sqlx::Error> {
    let mut keys = Vec::with_capacity(stored.len());
    let mut bytes = Vec::with_capacity(stored.len());
    for (i, b, day_ids, month_ids) in stored {
        let row = there[(*i - 1) as usize];
        let reach = &row.1;
        let mut united = decode(b)?;
        united.merge(&reach.sketch);
        let united = united.to_bytes();
        let flags_grow = (reach.day_ids && !day_ids) || (reach.month_ids && !month_ids);
        if united != *b || flags_grow {
            keys.push(row);
            bytes.push(united);
        }
    }
    Ok((keys, bytes))
}
