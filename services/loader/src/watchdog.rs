//! A step that never ends stops the loader instead of stalling it for good.
//!
//! Why: a load is a chain of network waits (a poll, a download, the
//! statements of an object's transaction), and one that never returns
//! leaves the loader alive, healthy to its liveness probe, and loading
//! nothing. It happened: sqlx 0.8's TLS socket could wait forever in the
//! middle of a `COPY` (vendor/README.md), with PostgreSQL waiting for the
//! rest of it. PostgreSQL's own timeouts do not help there: a `COPY … FROM
//! STDIN` waiting for its client is not cancelled by `statement_timeout`
//! (checked on PostgreSQL 15: still `active` in `ClientRead` past it), and
//! the connection is not idle. Worse, a stalled transaction holds its locks:
//! another loader inserting one of its counting keys waits on it, and so
//! does the day's fold of the blocks (`counting/keys.rs`, `store.rs`).
//!
//! So every step of the loader runs under a [`Watchdog`]: when one has run
//! longer than the limit (`EARSHOT_LOADER_STALL_SECONDS`), [`Loader::run`]
//! returns [`Stalled`] and the process exits with an error. Exiting is the
//! one way out that is always safe: its sockets close, PostgreSQL rolls the
//! open transactions back and frees their locks, SQS hands the unacknowledged
//! messages out again, and the ledger skips what was committed — the same
//! path as a `SIGKILL`, which the loader is tested against. Retrying inside
//! the process would reuse connections whose state nobody knows.
//!
//! [`Loader::run`]: crate::Loader::run

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, which tests can pause and advance.
use tokio::time::Instant;

/// Default limit on one step. A step is one poll, one object's download and
/// parse, one half of one object's transaction, one campaign's hourly
/// merge or one partition upkeep. The largest object Firehose writes
/// (128 MiB, its S3 buffer limit) takes under 15 s on the loader bench's
/// two cores; ten minutes leaves room for a database under pressure and
/// for a wait on another loader's keys or rows (itself bounded by its own
/// watchdog), while a stall still ends within the hour an alert looks at.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(600);

/// The longest the watchdog sleeps between looks: a stall is noticed at
/// most this long (or a quarter of the limit, if less) after the limit.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The steps in progress and how long each may take.
#[derive(Debug)]
pub struct Watchdog {
    limit: Duration,
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Step>>,
}

#[derive(Debug, Clone)]
struct Step {
    what: &'static str,
    object: Option<String>,
    since: Instant,
}

/// A step in progress; it ends when dropped.
#[must_use = "the step ends when the guard is dropped"]
pub struct Running<'w> {
    dog: &'w Watchdog,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.dog.lock().remove(&self.id);
    }
}

/// A step ran past the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the loader stalled: {what}{} has been running for {}s, longer than \
     EARSHOT_LOADER_STALL_SECONDS ({}s); exiting so that its transactions \
     roll back and a restart loads the rest",
    object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default(),
    running_for.as_secs(),
    limit.as_secs()
)]
pub struct Stalled {
    /// The step, e.g. "counting and committing an object".
    pub what: &'static str,
    /// The object it was working on, as `source key`.
    pub object: Option<String>,
    pub running_for: Duration,
    pub limit: Duration,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            next: AtomicU64::new(0),
            running: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Step>> {
        // A panic elsewhere cannot leave the map half-changed: each change
        // is one insert or remove.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a step: `what` it does, on which object (if one).
    pub fn start(&self, what: &'static str, object: Option<String>) -> Running<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Step {
                what,
                object,
                since: Instant::now(),
            },
        );
        Running { dog: self, id }
    }

    /// Runs `step` as a step.
    pub async fn watch<F: std::future::Future>(
        &self,
        what: &'static str,
        object: Option<String>,
        step: F,
    ) -> F::Output {
        let _running = self.start(what, object);
        step.await
    }

    /// The step that has run longest, if it ran past the limit.
    pub fn overdue(&self) -> Option<Stalled> {
        let now = Instant::now();
        let running = self.lock();
        // Ids grow with start time, so the first entry is the oldest step.
        let (_, oldest) = running.iter().next()?;
        let running_for = now.saturating_duration_since(oldest.since);
        (running_for > self.limit).then(|| Stalled {
            what: oldest.what,
            object: oldest.object.clone(),
            running_for,
            limit: self.limit,
        })
    }

    /// Resolves once a step has run past the limit.
    pub async fn stalled(&self) -> Stalled {
        let every = (self.limit / 4).clamp(Duration::from_millis(10), MAX_CHECK_INTERVAL);
        loop {
            tokio::time::sleep(every).await;
            if let Some(s) = self.overdue() {
                return s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_settings_default() {
        assert_eq!(
            DEFAULT_STALL_LIMIT,
            Duration::from_secs(crate::LoaderSettings::default().stall_seconds)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_step_past_the_limit_is_a_stall() {
        let dog = Watchdog::new(Duration::from_secs(10));
        assert_eq!(dog.overdue(), None, "nothing running");
        let first = dog.start("polling the source", None);
        tokio::time::advance(Duration::from_secs(6)).await;
        let second = dog.start("beginning an object", Some("dir:/x a.ndjson".into()));
        tokio::time::advance(Duration::from_secs(5)).await;
        // The first has run 11 s, the second 5 s.
        let s = dog.overdue().expect("the first step is overdue");
        assert_eq!((s.what, s.object.as_deref()), ("polling the source", None));
        drop(first);
        assert_eq!(dog.overdue(), None, "the second is within its limit");
        tokio::time::advance(Duration::from_secs(6)).await;
        let s = dog.overdue().expect("now the second is");
        assert_eq!(s.object.as_deref(), Some("dir:/x a.ndjson"));
        assert_eq!(s.running_for, Duration::from_secs(11));
        assert_eq!(
            s.to_string(),
            "the loader stalled: beginning an object (dir:/x a.ndjson) has been running for 11s, \
             longer than EARSHOT_LOADER_STALL_SECONDS (10s); exiting so that its transactions \
             roll back and a restart loads the rest"
        );
        drop(second);
        assert_eq!(dog.overdue(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_resolves_soon_after_the_limit_and_not_before() {
        let dog = Watchdog::new(Duration::from_secs(4));
        let _step = dog.start("merging hourly rollups", None);
        let started = tokio::time::Instant::now();
        let s = dog.stalled().await;
        let waited = started.elapsed();
        assert!(
            waited > Duration::from_secs(4) && waited <= Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(s.what, "merging hourly rollups");
    }

    #[tokio::test(start_paused = true)]
    async fn watch_ends_the_step_with_its_future() {
        let dog = Watchdog::new(Duration::from_secs(1));
        let out = dog
            .watch("acknowledging a delivery", None, async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                7
            })
            .await;
        assert_eq!(out, 7);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(dog.overdue(), None);
    }
}
