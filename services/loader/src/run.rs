//! The loader's loop: poll, load each object in its own transaction, ack,
//! keep partitions ahead, and stop cleanly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::OptionFuture;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::compact::{self, Touched};
use crate::keys::Keys;
use crate::parse::{self, Parsed, Quarantined};
use crate::partitions::Partitions;
use crate::source::{Delivery, Object, ObjectMissing, Source};
use crate::store::{self, LoadStats, ObjectId};
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

/// What loading one delivery did.
struct DeliveryLoad {
    stats: Vec<LoadStats>,
    /// Every object was there; the delivery may be acknowledged.
    complete: bool,
}

impl DeliveryLoad {
    /// Adds to the run's totals; returns whether to acknowledge.
    fn add_to(self, summary: &mut RunSummary) -> bool {
        for stats in self.stats {
            if stats.loaded {
                summary.objects_loaded += 1;
                summary.events_new += stats.new_events as u64;
                summary.duplicates += stats.duplicates as u64;
                summary.quarantined += stats.quarantined as u64;
                summary.counted += stats.counted as u64;
            } else {
                summary.objects_skipped += 1;
            }
        }
        self.complete
    }
}

pub struct Loader {
    pool: PgPool,
    source: Source,
    partitions: Partitions,
    opts: LoadOptions,
    last_maintenance: Option<Instant>,
    /// Hours that got hourly rollup rows since the last merge.
    touched: Mutex<Touched>,
    /// The counting keys and listener keys of the last days.
    keys: Keys,
    last_compaction: Instant,
    /// Every step runs under it.
    watchdog: Arc<Watchdog>,
}

fn backoff(attempt: u32) -> Duration {
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
            keys: Keys::default(),
            last_compaction: Instant::now(),
            watchdog: Arc::new(Watchdog::new(opts.stall_limit)),
        }
    }

    fn oldest_kept(&self, now: OffsetDateTime) -> time::Date {
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
        let dropped = self
            .partitions
            .drop_before(&self.pool, self.oldest_kept(now))
            .await?;
        if !dropped.is_empty() {
            tracing::info!(days = dropped.len(), first = %dropped[0], "dropped expired event partitions");
        }
        if let Some(f) = store::fold_blocks(&self.pool, store::fold_through(now.date())).await? {
            tracing::info!(after = %f.from, through = %f.through, rows = f.rows, "folded the days that ended into the day blocks");
        }
        self.last_maintenance = Some(Instant::now());
        Ok(())
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
            // object, and two transactions inserting the same event make one
            // of them fail and start over.
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

    /// Loads deliveries one after the other until done, stopped or failed:
    /// what it loaded, and the failure if one ended it.
    ///
    /// Three objects are in hand at a time, each at its own stage:
    /// - the next is fetched and parsed (the loader's work, on a blocking
    ///   thread);
    /// - the current one's transaction begins (`store::begin`: its events
    ///   go in);
    /// - the previous one's transaction finishes (`store::finish`: it takes
    ///   the turn, counts, adds the rollups and uniques, and commits).
    ///
    /// On two cores the stages overlap instead of taking turns, and the
    /// result is a one-at-a-time load's: objects take the turn to count, and
    /// commit, in order, so the same hit counts whatever the timing. The
    /// current object leaves out the ids the previous one inserts. When a
    /// half fails, nothing overlaps until it is right again: the object
    /// behind it is rolled back, and the failed one is loaded whole, with
    /// retries, on its own.
    async fn load_run<'d>(
        &self,
        run: &'d [Delivery],
        stop: &watch::Receiver<bool>,
    ) -> (Vec<(&'d Delivery, DeliveryLoad)>, Option<anyhow::Error>) {
        // The run's objects in order, with their delivery's index.
        let objects: Vec<(usize, &Object)> = run
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.objects.iter().map(move |o| (i, o)))
            .collect();
        let mut loads: Vec<DeliveryLoad> = run
            .iter()
            .map(|d| DeliveryLoad {
                stats: Vec::with_capacity(d.objects.len()),
                complete: true,
            })
            .collect();
        // Objects of each delivery done with (loaded, skipped or missing).
        let mut settled = vec![0usize; run.len()];
        // Deliveries the run went into; a stop keeps it out of the next one
        // (left for the next run: SQS redelivers).
        let mut reached = 0;
        let mut stopped = false;
        let mut failure = None;
        let mut next = 0;
        let mut parsed_ahead: Option<anyhow::Result<Prepared>> = None;
        // The object waiting for its second half: its index, and its first
        // half unless that failed or was rolled back (then it loads whole).
        let mut waiting: Option<(usize, Prepared, Option<store::Begun>)> = None;
        loop {
            // A failed half left this one to load whole, with nothing beside.
            if let Some((k, p, None)) = waiting.take_if(|w| w.2.is_none()) {
                match self.store_with_retries(objects[k].1, &p).await {
                    Ok(stats) => {
                        loads[objects[k].0].stats.push(stats);
                        settled[objects[k].0] += 1;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let start = next < objects.len() && {
                let d = objects[next].0;
                if d < reached {
                    true
                } else if *stop.borrow() {
                    stopped = true;
                    false
                } else {
                    reached = d + 1;
                    true
                }
            };
            if !start && waiting.is_none() {
                break;
            }
            let current = match (start, parsed_ahead.take()) {
                (false, _) => None,
                (true, Some(p)) => Some(p),
                (true, None) => Some(self.prepare_with_retries(objects[next].1).await),
            };
            let ahead = (start && next + 1 < objects.len())
                .then(|| self.prepare_with_retries(objects[next + 1].1));
            let (previous, prev_prepared, prev_begun) = match waiting.take() {
                Some((k, p, Some(b))) => (Some(k), Some(p), Some(b)),
                _ => (None, None, None),
            };
            let preceding = match &prev_prepared {
                Some(Prepared::Ready { parsed, .. }) => store::Preceding::of(parsed),
                _ => store::Preceding::default(),
            };
            let (finished, began, ahead) = tokio::join!(
                OptionFuture::from(prev_prepared.as_ref().zip(prev_begun).map(|(p, b)| {
                    self.watchdog.watch(
                        "counting and committing an object",
                        about(objects[previous.expect("a begun object")].1),
                        self.finish(p, b),
                    )
                })),
                OptionFuture::from(current.as_ref().and_then(|r| r.as_ref().ok()).map(|p| {
                    self.watchdog.watch(
                        "inserting an object's events",
                        about(objects[next].1),
                        self.begin(p, &preceding),
                    )
                })),
                OptionFuture::from(ahead)
            );
            parsed_ahead = ahead;
            let mut began = match began {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    self.failed_once(objects[next].1, &e);
                    None
                }
                None => None,
            };
            if let (Some(k), Some(result)) = (previous, finished) {
                let result = match result {
                    Ok(stats) => Ok(stats),
                    Err(e) => {
                        self.failed_once(objects[k].1, &e);
                        if let Some(b) = began.take() {
                            b.rollback().await;
                        }
                        let p = prev_prepared.as_ref().expect("finished what was prepared");
                        self.store_with_retries(objects[k].1, p).await
                    }
                };
                match result {
                    Ok(stats) => {
                        loads[objects[k].0].stats.push(stats);
                        settled[objects[k].0] += 1;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break; // the current object, begun or not, rolls back
                    }
                }
            }
            if let Some(prepared) = current {
                let (k, d) = (next, objects[next].0);
                next += 1;
                match prepared {
                    Ok(p) => waiting = Some((k, p, began)),
                    // Not acknowledged, and the loader moves on: SQS hands the
                    // message out again until its redrive policy moves it to
                    // the dead-letter queue; a file or listing entry is
                    // simply gone.
                    Err(e) if e.is::<ObjectMissing>() => {
                        loads[d].complete = false;
                        settled[d] += 1;
                        metrics::counter!("earshot_loader_errors_total", "stage" => "missing")
                            .increment(1);
                        tracing::error!(error = %format!("{e:#}"), "an announced object does not exist; its delivery is left unacknowledged");
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if failure.is_none() && !stopped {
            reached = run.len(); // the deliveries after the last object hold none
        }
        let done = run
            .iter()
            .zip(loads)
            .zip(settled)
            .take(reached)
            .filter(|((d, _), settled)| *settled == d.objects.len())
            .map(|((d, load), _)| (d, load))
            .collect();
        (done, failure)
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

    async fn prepare_with_retries(&self, obj: &Object) -> anyhow::Result<Prepared> {
        self.retrying(obj, || {
            self.watchdog.watch(
                "fetching and parsing an object",
                about(obj),
                self.prepare(obj),
            )
        })
        .await
    }

    async fn store_with_retries(&self, obj: &Object, p: &Prepared) -> anyhow::Result<LoadStats> {
        self.retrying(obj, || {
            self.watchdog
                .watch("loading an object", about(obj), self.store(p))
        })
        .await
    }

    /// Runs `attempt` until it succeeds, backing off between failures; gives
    /// up at once on a missing object, and after `ONCE_PATIENCE` with `--once`.
    async fn retrying<T, F, Fut>(&self, obj: &Object, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            match attempt().await {
                Ok(x) => return Ok(x),
                Err(e) if e.is::<ObjectMissing>() => return Err(e),
                Err(e) => {
                    failures += 1;
                    metrics::counter!("earshot_loader_errors_total", "stage" => "load")
                        .increment(1);
                    if self.opts.once && started.elapsed() > ONCE_PATIENCE {
                        return Err(e.context(format!("loading {} {}", obj.source, obj.key)));
                    }
                    let wait = backoff(failures);
                    tracing::warn!(source = %obj.source, key = %obj.key, attempt = failures, error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "loading an object failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Fetches, parses and loads one object.
    pub async fn load_one(&self, obj: &Object) -> anyhow::Result<LoadStats> {
        let p = self.prepare(obj).await?;
        self.store(&p).await
    }

    /// Fetches and parses one object (the parse on a blocking thread), unless
    /// the ledger already has it by its etag.
    pub async fn prepare(&self, obj: &Object) -> anyhow::Result<Prepared> {
        if let Some(etag) = &obj.etag {
            if store::already_loaded(&self.pool, &obj.source, &obj.key, etag).await? {
                tracing::debug!(source = %obj.source, key = %obj.key, "already loaded; skipped");
                return Ok(Prepared::Skipped);
            }
        }
        let (bytes, etag) = self.source.fetch(obj).await?;
        let id = ObjectId {
            source: obj.source.clone(),
            key: obj.key.clone(),
            etag,
            bytes: bytes.len() as u64,
        };
        let now = OffsetDateTime::now_utc();
        let oldest = self.oldest_kept(now);
        let parsed = tokio::task::spawn_blocking(move || parse_object(&bytes, now, oldest)).await?;
        Ok(Prepared::Ready { id, parsed })
    }

    /// Loads a prepared object in its transaction.
    pub async fn store(&self, prepared: &Prepared) -> anyhow::Result<LoadStats> {
        let begun = self.begin(prepared, &store::Preceding::default()).await?;
        self.finish(prepared, begun).await
    }

    /// The first half of a prepared object's transaction (`store::begin`),
    /// with the partitions its events need.
    async fn begin(
        &self,
        prepared: &Prepared,
        preceding: &store::Preceding,
    ) -> anyhow::Result<store::Begun> {
        let Prepared::Ready { id, parsed } = prepared else {
            return Ok(store::Begun::default());
        };
        self.partitions
            .ensure(&self.pool, parsed.events.iter().map(|s| s.day))
            .await?;
        Ok(store::begin(&self.pool, id, parsed, preceding).await?)
    }

    /// The second half (`store::finish`), and what a load tells: metrics,
    /// the hours to merge, the log line.
    async fn finish(&self, prepared: &Prepared, begun: store::Begun) -> anyhow::Result<LoadStats> {
        let Prepared::Ready { id, parsed } = prepared else {
            metrics::counter!("earshot_loader_objects_total", "outcome" => "skipped").increment(1);
            return Ok(LoadStats::default());
        };
        let stats = store::finish(&self.keys, parsed, begun).await?;
        if stats.new_events > 0 {
            let mut touched = Touched::default();
            for s in &parsed.events {
                touched.add(
                    s.event.campaign.as_ref().map_or("", |c| c.as_str()),
                    s.event.ts,
                );
            }
            self.touched.lock().expect("not poisoned").merge(touched);
        }
        if stats.loaded {
            metrics::counter!("earshot_loader_objects_total", "outcome" => "loaded").increment(1);
            metrics::counter!("earshot_loader_events_total", "kind" => "new")
                .increment(stats.new_events as u64);
            metrics::counter!("earshot_loader_events_total", "kind" => "duplicate")
                .increment(stats.duplicates as u64);
            metrics::counter!("earshot_loader_counted_total").increment(stats.counted as u64);
            metrics::counter!("earshot_loader_quarantined_lines_total")
                .increment(stats.quarantined as u64);
            if let Some(max) = stats.max_event_ts {
                let lag = OffsetDateTime::now_utc() - max;
                metrics::gauge!("earshot_loader_lag_seconds").set(lag.as_seconds_f64());
            }
            // Trace ids of the events: one hit can be followed from the pixel
            // (edge log / X-Ray) to this object and its row.
            for s in &parsed.events {
                if let Some(t) = &s.event.trace_id {
                    tracing::debug!(target: "earshot_loader::trace", trace_id = %t, event_id = %s.event.id, object_id = stats.ledger_id, "event loaded");
                }
            }
            tracing::info!(
                source = %id.source, key = %id.key, object_id = stats.ledger_id, lines = stats.lines,
                new_events = stats.new_events, duplicates = stats.duplicates,
                quarantined = stats.quarantined, counted = stats.counted,
                "object loaded"
            );
        } else {
            metrics::counter!("earshot_loader_objects_total", "outcome" => "skipped").increment(1);
        }
        Ok(stats)
    }

    /// A half of an object's transaction failed; it will be loaded again.
    fn failed_once(&self, obj: &Object, e: &anyhow::Error) {
        metrics::counter!("earshot_loader_errors_total", "stage" => "load").increment(1);
        tracing::warn!(source = %obj.source, key = %obj.key, error = %format!("{e:#}"), "loading an object failed; loading it again whole");
    }
}

/// How the watchdog names an object.
fn about(obj: &Object) -> Option<String> {
    Some(format!("{} {}", obj.source, obj.key))
}

/// An object fetched and parsed, ready for its transaction.
pub enum Prepared {
    /// The ledger already holds it (known by its etag before downloading).
    Skipped,
    Ready {
        id: ObjectId,
        parsed: Parsed,
    },
}

/// Decompresses and parses an object's bytes. A corrupt object is recorded
/// whole in quarantine, so it is neither lost nor retried forever.
fn parse_object(bytes: &[u8], now: OffsetDateTime, oldest: time::Date) -> Parsed {
    match parse::decompress(bytes) {
        Ok(data) => parse::parse(&data, now, oldest),
        Err(e) => Parsed {
            quarantined: vec![Quarantined {
                line_no: 0,
                raw: bytes[..bytes.len().min(parse::MAX_QUARANTINED_LINE)].to_vec(),
                reason: e.to_string(),
            }],
            ..Default::default()
        },
    }
}
