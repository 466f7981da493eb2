//! Which rows of `rollup_blocks` and `rollup_daily` a total over whole
//! days reads, and the blocks' mark (the last day they hold).

use earshot_platform::rollup::{block_start, BLOCK_SPANS};
use sqlx::PgPool;
use time::{Date, Duration};

/// Splits the whole UTC days [from, to) into the fewest blocks aligned as
/// `rollup_blocks` aligns them (a block of n days starts on a day whose
/// distance from 1970-01-01 is a multiple of n), greedily taking the longest
/// block that starts where the last ended and does not pass `to`: at most
/// about 2·log2(days) blocks, each (span in days, first day); spans of 1 are
/// single days.
pub fn day_blocks(from: Date, to: Date) -> Vec<(i64, Date)> {
    let mut out = Vec::new();
    let mut day = from;
    while day < to {
        let left = (to - day).whole_days();
        let span = BLOCK_SPANS
            .iter()
            .rev()
            .copied()
            .find(|&s| block_start(day, s) == day && s <= left)
            .unwrap_or(1);
        out.push((span, day));
        day += Duration::days(span);
    }
    out
}

/// The last day `rollup_blocks` holds (migration 10): later days are only in
/// `rollup_daily` until the loader folds them in; and the last day
/// `reach_sketch_blocks` holds (migration 27; NULL before the loader's first
/// fold of a database that had sketches).
const BLOCKS_THROUGH: &str = "SELECT blocks_through, reach_blocks_through FROM counting_state";

/// How long the API trusts the blocks' mark it read. Reading it with every
/// report was one more round trip per uncached report (1,652 against 1,947
/// req/s in `scripts/bench api`); the mark moves once a day.
pub const BLOCKS_MARK_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The blocks' marks as last read, per database. An old mark is still
/// right: a mark only moves forward, and the blocks of the days up to any
/// mark it held stay whole (loads of those days add to them), so a report
/// that uses an old one reads a few more single days, never a partial
/// block.
#[derive(Debug, Default)]
pub struct BlocksMark(std::sync::Mutex<Option<(Marks, std::time::Instant)>>);

/// `rollup_blocks`' mark and `reach_sketch_blocks`'.
#[derive(Debug, Clone, Copy)]
struct Marks {
    blocks: Date,
    reach: Option<Date>,
}

impl BlocksMark {
    /// The marks, read again when older than [`BLOCKS_MARK_TTL`].
    async fn marks(&self, pool: &PgPool) -> Result<Marks, sqlx::Error> {
        let held = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((marks, at)) = held {
            if at.elapsed() < BLOCKS_MARK_TTL {
                return Ok(marks);
            }
        }
        let (blocks, reach) = sqlx::query_as(BLOCKS_THROUGH).fetch_one(pool).await?;
        let marks = Marks { blocks, reach };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((marks, std::time::Instant::now()));
        Ok(marks)
    }

    /// `rollup_blocks`' mark.
    pub async fn get(&self, pool: &PgPool) -> Result<Date, sqlx::Error> {
        Ok(self.marks(pool).await?.blocks)
    }

    /// `reach_sketch_blocks`' mark; `None` while it holds no day.
    pub async fn reach(&self, pool: &PgPool) -> Result<Option<Date>, sqlx::Error> {
        Ok(self.marks(pool).await?.reach)
    }
}

/// The whole UTC days [from, to) as [`day_blocks`] splits them, for the days
/// up to `blocks_through`, then single days: a block is read only where
/// `rollup_blocks` holds every one of its days.
pub fn day_parts(from: Date, to: Date, blocks_through: Date) -> Vec<(i64, Date)> {
    let folded_end = to.min(blocks_through + Duration::days(1));
    let mut out = if from < folded_end {
        day_blocks(from, folded_end)
    } else {
        Vec::new()
    };
    let mut day = from.max(folded_end);
    while day < to {
        out.push((1, day));
        day += Duration::days(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn day_blocks_cover_the_range_once_with_aligned_blocks() {
        // 2026-08-24 .. 2026-11-22 (90 days): day 20,689 since 1970 is odd.
        let b = day_blocks(date!(2026 - 08 - 24), date!(2026 - 11 - 22));
        assert_eq!(
            b.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 32, 32, 8, 2, 1],
        );
        assert_eq!(b[0].1, date!(2026 - 08 - 24));
        // Every range up to 400 days from every start in a year.
        let epoch = date!(1970 - 01 - 01);
        for start in 0..366 {
            let from = date!(2026 - 01 - 01) + Duration::days(start);
            for len in 0..=400 {
                let to = from + Duration::days(len);
                let blocks = day_blocks(from, to);
                let mut day = from;
                for (span, first) in &blocks {
                    assert_eq!(*first, day, "contiguous");
                    assert!(*span == 1 || BLOCK_SPANS.contains(span));
                    assert_eq!(
                        (*first - epoch).whole_days().rem_euclid(*span),
                        0,
                        "aligned"
                    );
                    day += Duration::days(*span);
                }
                assert_eq!(day, to, "covers [from, to) exactly");
                assert!(blocks.len() <= 15, "{len} days: {} blocks", blocks.len());
            }
        }
    }

    #[test]
    fn day_parts_use_blocks_only_up_to_the_last_folded_day() {
        let (from, to) = (date!(2026 - 08 - 24), date!(2026 - 11 - 22));
        assert_eq!(
            day_parts(from, to, date!(2026 - 12 - 31)),
            day_blocks(from, to),
            "every day folded"
        );
        let singles: Vec<(i64, Date)> = (0..(to - from).whole_days())
            .map(|i| (1, from + Duration::days(i)))
            .collect();
        assert_eq!(
            day_parts(from, to, date!(2026 - 08 - 23)),
            singles,
            "none folded"
        );
        let through = date!(2026 - 11 - 19);
        let parts = day_parts(from, to, through);
        let mut covered = Vec::new();
        for &(span, first) in &parts {
            let last = first + Duration::days(span - 1);
            assert!(span == 1 || last <= through, "{span} days from {first}");
            covered.extend((0..span).map(|i| first + Duration::days(i)));
        }
        assert_eq!(covered, singles.iter().map(|&(_, d)| d).collect::<Vec<_>>());
        assert_eq!(
            &parts[parts.len() - 3..],
            &[
                (1, date!(2026 - 11 - 19)),
                (1, date!(2026 - 11 - 20)),
                (1, date!(2026 - 11 - 21))
            ][..],
            "the block of the 20th and 21st is not read: the 20th is not folded"
        );
    }
}
