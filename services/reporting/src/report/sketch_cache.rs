//! Decoded reach sketches, kept between reports and revalidated against
//! the stored row at every report.
//!
//! A 90-day reach report by creative merges ~40 sketches of 16 KB each;
//! moving them out of PostgreSQL (TOAST, decompression, the wire) was most
//! of its cost. Nearly all of them are blocks and days that no load will
//! touch again, so the API keeps the decoded sketch with the version of the
//! row it came from (the row's `xmin`: every write of a row, by any writer,
//! makes a new row version with the writing transaction's id). Every report
//! still asks PostgreSQL for the versions of the rows it needs and reads the
//! bytes of any row whose version it does not hold, so a report is never
//! older than the database; this is not the report cache
//! ([`crate::report_cache`]), which serves whole reports for a TTL.
//!
//! Bounds: [`SKETCH_CACHE_BYTES`] of sketches (LRU), each trusted for
//! [`SKETCH_CACHE_MAX_AGE`], far inside the ~2 billion transactions after
//! which PostgreSQL would reuse a transaction id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use earshot_platform::sketch::Sketch;
use time::Date;

/// Most bytes of sketches held: 2,048 dense sketches of 16 KiB, the blocks
/// and edge days of ~50 campaigns' 90-day reports by creative (~40 each).
/// With the report cache's 64 MiB ([`crate::report_cache`]) it fits the
/// chart's 256 MiB limit of an API pod.
pub const SKETCH_CACHE_BYTES: usize = 32 << 20;

/// How long a held sketch is trusted before its bytes are read again,
/// whatever its version says.
pub const SKETCH_CACHE_MAX_AGE: Duration = Duration::from_secs(600);

/// Where a sketch is stored: a day's row of `reach_sketches`, or a block's
/// row of `reach_sketch_blocks` (its span in days).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Day,
    Block(i32),
}

impl Source {
    /// The source of a sketch spanning `span` days: a day is a span of 1,
    /// as the reach queries give it.
    pub fn of_span(span: i32) -> Self {
        if span == 1 {
            Source::Day
        } else {
            Source::Block(span)
        }
    }

    /// The days the sketch spans.
    pub fn span(&self) -> i32 {
        match self {
            Source::Day => 1,
            Source::Block(span) => *span,
        }
    }
}

/// One stored sketch: its table, campaign, first day, dimension and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SketchKey {
    pub source: Source,
    pub campaign: String,
    pub first_day: Date,
    pub dim: String,
    pub value: String,
}

struct Held {
    version: i64,
    sketch: Arc<Sketch>,
    read_at: Instant,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<SketchKey, Held>,
    clock: u64,
    bytes: usize,
}

/// The held sketches (see the module's doc).
#[derive(Default)]
pub struct SketchCache(Mutex<Inner>);

impl std::fmt::Debug for SketchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.lock().map.len();
        write!(f, "SketchCache({n} sketches)")
    }
}

impl SketchCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sketch of `key` if the one held is of row version `version`
    /// and young enough.
    pub fn get(&self, key: &SketchKey, version: i64) -> Option<Arc<Sketch>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let held = inner.map.get_mut(key)?;
        if held.version != version || held.read_at.elapsed() >= SKETCH_CACHE_MAX_AGE {
            return None;
        }
        held.used = now;
        Some(held.sketch.clone())
    }

    /// Holds `sketch`, read from row version `version` of `key`, in place
    /// of any other version; past [`SKETCH_CACHE_BYTES`], the least
    /// recently used go until an eighth of the bound is free.
    pub fn put(&self, key: SketchKey, version: i64, sketch: Arc<Sketch>) {
        let mut inner = self.lock();
        inner.clock += 1;
        let used = inner.clock;
        inner.bytes += sketch.heap_bytes();
        let held = Held {
            version,
            sketch,
            read_at: Instant::now(),
            used,
        };
        if let Some(old) = inner.map.insert(key, held) {
            inner.bytes -= old.sketch.heap_bytes();
        }
        if inner.bytes > SKETCH_CACHE_BYTES {
            let mut by_use: Vec<(u64, usize)> = inner
                .map
                .values()
                .map(|h| (h.used, h.sketch.heap_bytes()))
                .collect();
            by_use.sort_unstable();
            let mut bytes = inner.bytes;
            let mut cut = 0;
            for (used, b) in by_use {
                if bytes <= SKETCH_CACHE_BYTES - SKETCH_CACHE_BYTES / 8 {
                    break;
                }
                bytes -= b;
                cut = used;
            }
            inner.map.retain(|_, h| h.used > cut);
            inner.bytes = bytes;
        }
    }

    /// Bytes of sketches held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many sketches are held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn key(i: usize) -> SketchKey {
        SketchKey {
            source: Source::Block(2),
            campaign: "c".into(),
            first_day: date!(2026 - 01 - 01),
            dim: String::new(),
            value: i.to_string(),
        }
    }

    #[test]
    fn a_sketch_is_served_only_at_the_version_it_was_read_from() {
        let cache = SketchCache::default();
        let s = Arc::new(Sketch::from_hashes([1, 2, 3]));
        cache.put(key(1), 7, s.clone());
        assert_eq!(cache.get(&key(1), 7).as_deref(), Some(&*s));
        assert!(cache.get(&key(1), 8).is_none(), "the row was written since");
        assert!(cache.get(&key(2), 7).is_none(), "another row");
        let t = Arc::new(Sketch::from_hashes([4]));
        cache.put(key(1), 8, t.clone());
        assert_eq!(cache.get(&key(1), 8).as_deref(), Some(&*t));
        assert!(cache.get(&key(1), 7).is_none(), "the older version is gone");
    }

    #[test]
    fn past_its_bound_the_least_recently_used_go() {
        let cache = SketchCache::default();
        let dense = Arc::new(Sketch::from_hashes(0..100_000u64));
        let per = dense.heap_bytes();
        assert_eq!(per, 16_384);
        let fits = SKETCH_CACHE_BYTES / per;
        for i in 0..fits {
            cache.put(key(i), 1, dense.clone());
        }
        assert_eq!((cache.len(), cache.bytes()), (fits, SKETCH_CACHE_BYTES));
        // The first one is used again, so it is the newest.
        assert!(cache.get(&key(0), 1).is_some());
        // Replacing a version does not count its bytes twice.
        cache.put(key(5), 2, dense.clone());
        assert_eq!(cache.bytes(), SKETCH_CACHE_BYTES);
        cache.put(key(fits), 1, dense.clone());
        // Down to seven eighths of the bound.
        assert_eq!(cache.len(), fits - fits / 8);
        assert_eq!(cache.bytes(), cache.len() * per);
        assert!(cache.get(&key(0), 1).is_some(), "recently used stays");
        assert!(cache.get(&key(1), 1).is_none(), "least recently used went");
        assert!(cache.get(&key(fits), 1).is_some());
        assert!(cache.get(&key(5), 2).is_some());
    }
}
