//! The loader's loop: poll, load each object in its own transaction, ack,
//! keep partitions ahead, and stop cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::compact::{self, Touched};
use crate::counting::keys;
use crate::daily;
use crate::partitions::Partitions;
use crate::source::{Delivery, Source};
use crate::watchdog::Watchdog;

/// How long `--once` keeps retrying one object through database or AWS
/// errors before giving up with an error exit.
pub const ONCE_PATIENCE: Duration = Duration::from_secs(120);
/// Backoff between retries of one object: doubling from 200 ms to 30 s.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Partition upkeep (create ahead, drop expired) runs this often.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the loader looks for hourly rollup rows to merge.
const COMPACT_INTERVAL: Duration = Duration::from_secs(300);
/// Hours the sequence audit's gauges cover: the current one and the two
/// before, which hold whatever is still in flight.
const AUDIT_GAUGE_HOURS: i64 = 3;
/// An hour's rows are merged once the hour ended this long ago (and when the
/// loader stops), so each row is read by about one merge, not by one every
/// interval while its hour fills. Firehose buffers up to 15 minutes before
/// writing an object; rows arriving later for a merged hour are merged by a
/// later pass. Reports are right either way; only the row count differs.
const COMPACT_AFTER: time::Duration = time::Duration::hours(1);

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Process what is there, then return.
    pub once: bool,
    /// Pause between polls of a directory or S3 prefix when idle.
    pub poll_interval: Duration,
    /// Days of raw events kept.
    pub retention_days: u32,
    /// Deliveries loaded at once, each on its own connection.
    pub concurrency: usize,
    /// The longest one step may run before the loader gives up and
    /// [`Loader::run`] returns [`Stalled`](crate::watchdog::Stalled)
    /// (`watchdog.rs` says why).
    pub stall_limit: Duration,
    /// Most events in one part of an object loaded in parts
    /// (`store::PART_EVENTS` by default).
    pub part_events: usize,
}

/// Totals over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub objects_loaded: u64,
    pub objects_skipped: u64,
    pub events_new: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub counted: u64,
}

pub struct Loader {
    pub(crate) pool: PgPool,
    pub(crate) source: Source,
    pub(crate) partitions: Partitions,
    pub(crate) opts: LoadOptions,
    last_maintenance: Option<Instant>,
    /// Hours that got hourly rollup rows since the last merge.
    pub(crate) touched: Mutex<Touched>,
    last_compaction: Instant,
    /// Every step runs under it.
    pub(crate) watchdog: Arc<Watchdog>,
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = RETRY_BASE
        .saturating_mul(1 << attempt.min(10))
        .min(RETRY_CAP);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

impl Loader {
    pub fn new(pool: PgPool, source: Source, opts: LoadOptions) -> Self {
        Self {
            pool,
            source,
            partitions: Partitions::default(),
            opts,
            last_maintenance: None,
            touched: Mutex::default(),
            last_compaction: Instant::now(),
            watchdog: Arc::new(Watchdog::new(opts.stall_limit)),
        }
    }

    pub(crate) fn oldest_kept(&self, now: OffsetDateTime) -> time::Date {
        now.date() - time::Duration::days(self.opts.retention_days as i64)
    }

    async fn maintain(&mut self) -> Result<(), sqlx::Error> {
        if self
            .last_maintenance
            .is_some_and(|t| t.elapsed() < MAINTENANCE_INTERVAL)
        {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        self.partitions.ensure_ahead(&self.pool, now.date()).await?;
        keys::ensure_days(
            &self.pool,
            keys::days_to_keep_ready(now, crate::partitions::DAYS_AHEAD),
        )
        .await?;
        let dropped = self
            .partitions
            .drop_before(&self.pool, self.oldest_kept(now))
            .await?;
        if !dropped.is_empty() {
            tracing::info!(days = dropped.len(), first = %dropped[0], "dropped expired event partitions");
        }
        let expired = crate::sequences::drop_before(&self.pool, self.oldest_kept(now)).await?;
        if expired > 0 {
            tracing::info!(rows = expired, "dropped the sequence ledger's expired rows");
        }
        let closed = keys::drop_closed_days(&self.pool, now.date()).await?;
        if !closed.is_empty() {
            tracing::info!(days = closed.len(), first = %closed[0], "dropped the keys of closed days");
        }
        let pruned = crate::store::prune_settled_tries(&self.pool).await?;
        if pruned > 0 {
            tracing::info!(
                rows = pruned,
                "removed the tries and parts of objects loaded since"
            );
        }
        if let Some(f) = daily::fold_blocks(&self.pool, daily::fold_through(now.date())).await? {
            tracing::info!(after = %f.from, through = %f.through, rows = f.rows, "folded the days that ended into the day blocks");
        }
        self.last_maintenance = Some(Instant::now());
        Ok(())
    }

    /// Sets the sequence audit's gauges (docs/COUNTING.md, "How we know
    /// nothing was lost") from the last [`AUDIT_GAUGE_HOURS`] hours, with the
    /// default in-flight window; every merge interval.
    async fn audit_gauges(&self) {
        use earshot_platform::audit::{self, AuditOptions, Tail, DEFAULT_IN_FLIGHT};
        let now = OffsetDateTime::now_utc();
        let to = audit::hour_of(now) + time::Duration::HOUR;
        let opts = AuditOptions {
            from: to - time::Duration::hours(AUDIT_GAUGE_HOURS),
            to,
            now,
            in_flight: DEFAULT_IN_FLIGHT,
        };
        match audit::audit(&self.pool, opts).await {
            Ok(a) => {
                let t = &a.total;
                metrics::gauge!("earshot_audit_numbered").set(t.numbered as f64);
                metrics::gauge!("earshot_audit_stored").set(t.stored as f64);
                metrics::gauge!("earshot_audit_in_flight").set(t.in_flight as f64);
                metrics::gauge!("earshot_audit_lost").set(t.lost as f64);
                let unknown = a.edges.iter().filter(|e| e.tail == Tail::Unknown).count();
                metrics::gauge!("earshot_audit_unknown_tails").set(unknown as f64);
            }
            Err(e) => tracing::warn!(error = %e, "the sequence audit for the gauges failed"),
        }
    }

    /// Merges the hourly rollup rows appended since the last merge: of hours
    /// that ended `COMPACT_AFTER` ago, when it is time, or of every hour
    /// (`now`). A failure keeps the unmerged hours for the next time: the
    /// rows are correct as they are, only more numerous.
    async fn compact(&mut self, now: bool) {
        if !now && self.last_compaction.elapsed() < COMPACT_INTERVAL {
            return;
        }
        self.last_compaction = Instant::now();
        self.audit_gauges().await;
        let touched = {
            let mut all = self.touched.lock().expect("not poisoned");
            if now {
                std::mem::take(&mut *all)
            } else {
                // Hours starting an hour before the cutoff ended before it.
                all.take_before(OffsetDateTime::now_utc() - COMPACT_AFTER - time::Duration::HOUR)
            }
        };
        if touched.is_empty() {
            return;
        }
        let started = Instant::now();
        // As many campaigns at a time as the loads hold transactions (two
        // per run): the merge runs between polls, when those are idle.
        let merges = 2 * self.opts.concurrency;
        match compact::merge_touched(&self.pool, touched, merges, &self.watchdog).await {
            Ok(c) => {
                metrics::counter!("earshot_loader_hourly_rows_merged_total").increment(c.merged);
                tracing::info!(
                    merged_rows = c.merged,
                    into_rows = c.into,
                    ms = started.elapsed().as_millis() as u64,
                    "merged hourly rollup rows"
                );
            }
            Err((left, e)) => {
                metrics::counter!("earshot_loader_errors_total", "stage" => "compact").increment(1);
                tracing::warn!(error = %e, "merging hourly rollup rows failed; will retry");
                self.touched.lock().expect("not poisoned").merge(left);
            }
        }
    }

    /// Runs until the source is drained (`once`) or `stop` turns true. The
    /// object in hand is always finished before stopping.
    ///
    /// A step that runs longer than `stall_limit` ends the run at once with
    /// a [`Stalled`](crate::watchdog::Stalled) error, leaving its
    /// transaction open: the caller is to exit the process, which rolls it
    /// back (`watchdog.rs`).
    pub async fn run(&mut self, stop: watch::Receiver<bool>) -> anyhow::Result<RunSummary> {
        let dog = self.watchdog.clone();
        tokio::select! {
            done = self.run_watched(stop) => done,
            stalled = dog.stalled() => {
                tracing::error!(
                    step = stalled.what,
                    object = stalled.object.as_deref().unwrap_or(""),
                    running_s = stalled.running_for.as_secs(),
                    limit_s = stalled.limit.as_secs(),
                    "the loader stalled; exiting"
                );
                Err(stalled.into())
            }
        }
    }

    async fn run_watched(&mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<RunSummary> {
        let dog = self.watchdog.clone();
        let mut summary = RunSummary::default();
        let mut poll_failures = 0u32;
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = dog
                .watch("keeping event partitions ahead", None, self.maintain())
                .await
            {
                tracing::warn!(error = %e, "partition maintenance failed; will retry");
            }
            self.compact(false).await;
            // A stop interrupts an idle poll (SQS long polling waits up to
            // 20 s); messages it was about to receive stay in the queue.
            let polled = tokio::select! {
                p = dog.watch("polling the source", None, self.source.poll(self.opts.once)) => p,
                _ = stop.changed() => break,
            };
            let deliveries = match polled {
                Ok(d) => {
                    poll_failures = 0;
                    d
                }
                Err(e) => {
                    poll_failures += 1;
                    metrics::counter!("earshot_loader_errors_total", "stage" => "poll")
                        .increment(1);
                    tracing::warn!(error = %format!("{e:#}"), attempt = poll_failures, "polling the source failed; backing off");
                    if self.opts.once && poll_failures > 5 {
                        return Err(e.context("polling the source"));
                    }
                    self.pause(backoff(poll_failures), &mut stop).await;
                    continue;
                }
            };
            if deliveries.is_empty() {
                if self.opts.once {
                    break;
                }
                if !self.source.waits_by_itself() {
                    self.pause(self.opts.poll_interval, &mut stop).await;
                }
                continue;
            }
            // Up to `concurrency` runs of consecutive deliveries load at
            // once, each object in its own transaction. Runs, not
            // interleaving: Firehose's retries repeat events in the next
            // object, and a transaction inserting an event another holds
            // waits for the other's commit.
            let k = self.opts.concurrency.clamp(1, deliveries.len());
            let runs = deliveries.chunks(deliveries.len().div_ceil(k));
            let loaded = futures::future::join_all(runs.map(|run| self.load_run(run, &stop))).await;
            let mut failure = None;
            for (done, error) in loaded {
                for (d, load) in done {
                    if load.add_to(&mut summary) {
                        self.ack(d).await;
                    }
                }
                failure = failure.or(error);
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        self.compact(true).await;
        Ok(summary)
    }

    async fn pause(&self, d: Duration, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {},
            _ = stop.changed() => {},
        }
    }

    async fn ack(&mut self, d: &Delivery) {
        let mut attempt = 0;
        loop {
            let acked = self
                .watchdog
                .watch("acknowledging a delivery", None, self.source.ack(d))
                .await;
            match acked {
                Ok(()) => return,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %format!("{e:#}"), "acknowledging failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                // Not acknowledged: SQS redelivers and the ledger skips it.
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not acknowledge; the delivery will come again and be skipped");
                    return;
                }
            }
        }
    }
}
