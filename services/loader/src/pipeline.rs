//! One run of consecutive deliveries, three objects in hand: the next one is
//! fetched and parsed while the current one's transaction begins and the
//! previous one's finishes.

use std::sync::Mutex;
use std::time::Instant;

use futures::future::OptionFuture;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::counting::keys;
use crate::parse;
use crate::run::{backoff, Loader, RunSummary, ONCE_PATIENCE};
use crate::source::{Delivery, Object, Unfetchable};
use crate::store::{self, Begun, LoadStats, ObjectId, PartsLoaded, Preceding, Prepared};

/// An object fetched and parsed, or known to be loaded already.
pub enum Fetched {
    /// The ledger already holds it (known by its etag before downloading).
    Skipped,
    Ready(Prepared),
}

/// What loading one delivery did.
pub(crate) struct DeliveryLoad {
    pub(crate) stats: Vec<LoadStats>,
    /// Every object was there; the delivery may be acknowledged.
    pub(crate) complete: bool,
}

impl DeliveryLoad {
    /// Adds to the run's totals; returns whether to acknowledge.
    pub(crate) fn add_to(self, summary: &mut RunSummary) -> bool {
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

/// An object between its stages: fetched and parsed, waiting for the
/// second half of its transaction.
struct InFlight<'r> {
    /// Its delivery's index in the run.
    delivery: usize,
    object: &'r Object,
    fetched: Fetched,
    /// The first half, open; `None` when it failed or was rolled back:
    /// then the object loads whole, with nothing beside it.
    begun: Option<Begun>,
    /// It was tried before and did not commit: it loads alone, in parts.
    in_parts: bool,
}

impl InFlight<'_> {
    /// The ids it is inserting, for the object behind it to leave out.
    fn preceding(&self) -> Preceding {
        match &self.fetched {
            Fetched::Ready(p) => Preceding::of(p),
            Fetched::Skipped => Preceding::default(),
        }
    }

    /// The second half of its transaction: counts and commits.
    async fn finish(&mut self, loader: &Loader) -> anyhow::Result<LoadStats> {
        let begun = self.begun.take().unwrap_or_default();
        loader
            .watchdog
            .watch(
                "counting and committing an object",
                about(self.object),
                loader.finish(&self.fetched, begun),
            )
            .await
    }

    /// Both halves in one go (or its parts), with retries.
    async fn load_whole(&self, loader: &Loader) -> anyhow::Result<LoadStats> {
        if self.in_parts {
            loader.load_in_parts(&self.fetched).await
        } else {
            loader.store_with_retries(self.object, &self.fetched).await
        }
    }
}

/// What a run has done so far, per delivery.
struct Progress<'d> {
    run: &'d [Delivery],
    loads: Vec<DeliveryLoad>,
    /// Objects of each delivery done with (loaded, skipped or unfetchable).
    settled: Vec<usize>,
    /// Deliveries the run went into; a stop keeps it out of the next one
    /// (left for the next run: SQS redelivers).
    reached: usize,
    stopped: bool,
}

impl<'d> Progress<'d> {
    fn new(run: &'d [Delivery]) -> Self {
        Self {
            run,
            loads: run
                .iter()
                .map(|d| DeliveryLoad {
                    stats: Vec::with_capacity(d.objects.len()),
                    complete: true,
                })
                .collect(),
            settled: vec![0; run.len()],
            reached: 0,
            stopped: false,
        }
    }

    /// May the run start an object of `delivery`? Not a new delivery once
    /// `stop` is set.
    fn enter(&mut self, delivery: usize, stop: &watch::Receiver<bool>) -> bool {
        if delivery < self.reached {
            true
        } else if *stop.borrow() {
            self.stopped = true;
            false
        } else {
            self.reached = delivery + 1;
            true
        }
    }

    fn loaded(&mut self, delivery: usize, stats: LoadStats) {
        self.loads[delivery].stats.push(stats);
        self.settled[delivery] += 1;
    }

    /// An object of `delivery` cannot be fetched, ever: the delivery is not to be
    /// acknowledged.
    fn unfetchable(&mut self, delivery: usize) {
        self.loads[delivery].complete = false;
        self.settled[delivery] += 1;
    }

    /// The deliveries whose every object was settled.
    fn done(mut self, failed: bool) -> Vec<(&'d Delivery, DeliveryLoad)> {
        if !failed && !self.stopped {
            self.reached = self.run.len(); // the deliveries after the last object hold none
        }
        self.run
            .iter()
            .zip(self.loads)
            .zip(self.settled)
            .take(self.reached)
            .filter(|((d, _), settled)| *settled == d.objects.len())
            .map(|((d, load), _)| (d, load))
            .collect()
    }
}

impl Loader {
    /// Loads deliveries one after the other until done, stopped or failed:
    /// what it loaded, and the failure if one ended it.
    ///
    /// Three objects are in hand at a time, each at its own stage:
    /// - the next is fetched and parsed (the loader's work, on a blocking
    ///   thread);
    /// - the current one's transaction begins (`store::begin`: its events
    ///   go in);
    /// - the previous one's transaction finishes (`store::finish`: it
    ///   counts, adds the rollups and uniques, and commits).
    ///
    /// On two cores the stages overlap instead of taking turns, and the
    /// result is a one-at-a-time load's: objects count, and commit, in
    /// order, so the same hit counts whatever the timing. The
    /// current object leaves out the ids the previous one inserts. When a
    /// half fails, nothing overlaps until it is right again: the object
    /// behind it is rolled back, and the failed one is loaded whole, with
    /// retries, on its own.
    pub(crate) async fn load_run<'d>(
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
        let mut progress = Progress::new(run);
        let mut failure = None;
        let mut next = 0;
        let mut fetched_ahead: Option<anyhow::Result<Fetched>> = None;
        let mut waiting: Option<InFlight> = None;
        loop {
            if let Some(alone) = waiting.take_if(|w| w.begun.is_none()) {
                match alone.load_whole(self).await {
                    Ok(stats) => progress.loaded(alone.delivery, stats),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let start = next < objects.len() && progress.enter(objects[next].0, stop);
            if !start && waiting.is_none() {
                break;
            }
            let current = match (start, fetched_ahead.take()) {
                (false, _) => None,
                (true, Some(f)) => Some(f),
                (true, None) => Some(self.prepare_with_retries(objects[next].1).await),
            };
            let ahead = (start && next + 1 < objects.len())
                .then(|| self.prepare_with_retries(objects[next + 1].1));
            let mut previous = waiting.take();
            let preceding = previous
                .as_ref()
                .map_or_else(Preceding::default, InFlight::preceding);
            let (finished, began, ahead) = tokio::join!(
                OptionFuture::from(previous.as_mut().map(|p| p.finish(self))),
                OptionFuture::from(current.as_ref().and_then(|r| r.as_ref().ok()).map(|f| {
                    self.watchdog.watch(
                        "inserting an object's events",
                        about(objects[next].1),
                        self.begin(f, &preceding),
                    )
                })),
                OptionFuture::from(ahead)
            );
            fetched_ahead = ahead;
            let mut in_parts = false;
            let mut began = match began {
                Some(Ok(Some(b))) => Some(b),
                Some(Ok(None)) => {
                    in_parts = true;
                    None
                }
                Some(Err(e)) => {
                    self.failed_once(objects[next].1, &e);
                    None
                }
                None => None,
            };
            if let (Some(prev), Some(result)) = (previous, finished) {
                let result = match result {
                    Ok(stats) => Ok(stats),
                    Err(e) => {
                        self.failed_once(prev.object, &e);
                        if let Some(b) = began.take() {
                            b.rollback().await;
                        }
                        prev.load_whole(self).await
                    }
                };
                match result {
                    Ok(stats) => progress.loaded(prev.delivery, stats),
                    Err(e) => {
                        failure = Some(e);
                        break; // the current object, begun or not, rolls back
                    }
                }
            }
            if let Some(fetched) = current {
                let (delivery, object) = objects[next];
                next += 1;
                match fetched {
                    Ok(fetched) => {
                        waiting = Some(InFlight {
                            delivery,
                            object,
                            fetched,
                            begun: began,
                            in_parts,
                        })
                    }
                    // Not acknowledged, and the loader moves on: SQS hands the
                    // message out again until its redrive policy moves it to
                    // the dead-letter queue; a file or listing entry is
                    // simply gone.
                    Err(e) if e.is::<Unfetchable>() => {
                        progress.unfetchable(delivery);
                        metrics::counter!("earshot_loader_errors_total", "stage" => "unfetchable")
                            .increment(1);
                        tracing::error!(error = %format!("{e:#}"), "an announced object cannot be fetched, and no retry would change that; its delivery is left unacknowledged for the dead-letter queue");
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        (progress.done(failure.is_some()), failure)
    }

    async fn prepare_with_retries(&self, obj: &Object) -> anyhow::Result<Fetched> {
        self.retrying(obj, || {
            self.watchdog.watch(
                "fetching and parsing an object",
                about(obj),
                self.prepare(obj),
            )
        })
        .await
    }

    async fn store_with_retries(&self, obj: &Object, f: &Fetched) -> anyhow::Result<LoadStats> {
        self.retrying(obj, || {
            self.watchdog
                .watch("loading an object", about(obj), self.store(f))
        })
        .await
    }

    /// Runs `attempt` until it succeeds, backing off between failures; gives
    /// up at once on an object that cannot be fetched, and after `ONCE_PATIENCE` with `--once`.
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
                Err(e) if e.is::<Unfetchable>() => return Err(e),
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
        let f = self.prepare(obj).await?;
        self.store(&f).await
    }

    /// Fetches, parses and stages one object (on a blocking thread), unless
    /// the ledger already has it by its etag.
    pub async fn prepare(&self, obj: &Object) -> anyhow::Result<Fetched> {
        if let Some(etag) = &obj.etag {
            if store::already_loaded(&self.pool, &obj.source, &obj.key, etag).await? {
                tracing::debug!(source = %obj.source, key = %obj.key, "already loaded; skipped");
                return Ok(Fetched::Skipped);
            }
        }
        let (bytes, etag) = self.source.fetch(obj).await?;
        // A file's etag is its bytes' hash, known only now: check the
        // ledger again before parsing, the costly part (a restart over a
        // directory of loaded files would parse every one of them).
        if obj.etag.is_none()
            && store::already_loaded(&self.pool, &obj.source, &obj.key, &etag).await?
        {
            tracing::debug!(source = %obj.source, key = %obj.key, "already loaded; skipped");
            return Ok(Fetched::Skipped);
        }
        let id = ObjectId {
            source: obj.source.clone(),
            key: obj.key.clone(),
            etag,
            bytes: bytes.len() as u64,
        };
        let now = OffsetDateTime::now_utc();
        let oldest = self.oldest_kept(now);
        let prepared = tokio::task::spawn_blocking(move || {
            Prepared::new(id, parse::parse_object(&bytes, now, oldest))
        })
        .await?;
        Ok(Fetched::Ready(prepared))
    }

    /// Loads a fetched object: in its transaction, or in parts if it was
    /// tried before.
    pub async fn store(&self, fetched: &Fetched) -> anyhow::Result<LoadStats> {
        match self.begin(fetched, &Preceding::default()).await? {
            Some(begun) => self.finish(fetched, begun).await,
            None => self.load_in_parts(fetched).await,
        }
    }

    /// The first half of an object's transaction (`store::begin`), with the
    /// partitions its events and their keys need; `None` when the object was
    /// tried before and did not commit, to be loaded alone and in parts
    /// ([`Self::load_in_parts`]).
    async fn begin(
        &self,
        fetched: &Fetched,
        preceding: &Preceding,
    ) -> anyhow::Result<Option<Begun>> {
        let Fetched::Ready(p) = fetched else {
            return Ok(Some(Begun::default()));
        };
        self.partitions
            .ensure(&self.pool, p.events.iter().map(|s| s.day))
            .await?;
        keys::ensure_days(&self.pool, p.events.iter().map(|s| s.day)).await?;
        match store::count_attempt(&self.pool, &p.id).await? {
            None => Ok(Some(Begun::default())),
            Some(1) => Ok(Some(store::begin(&self.pool, p, preceding).await?)),
            Some(attempt) => {
                tracing::info!(source = %p.id.source, key = %p.id.key, attempt, "the object was tried before and did not commit; loading it in parts");
                Ok(None)
            }
        }
    }

    /// Loads an object in parts, one transaction each (`store::load_in_parts`),
    /// with retries that go on from the parts in, and tells what it did as
    /// [`Self::finish`] does.
    async fn load_in_parts(&self, fetched: &Fetched) -> anyhow::Result<LoadStats> {
        let Fetched::Ready(p) = fetched else {
            return Ok(LoadStats::default());
        };
        let obj = Object {
            source: p.id.source.clone(),
            key: p.id.key.clone(),
            etag: Some(p.id.etag.clone()),
        };
        let so_far = Mutex::new(PartsLoaded::default());
        let result = self
            .retrying(&obj, || {
                self.watchdog
                    .watch("loading an object in parts", about(&obj), async {
                        Ok(
                            store::load_in_parts(&self.pool, p, self.opts.part_events, &so_far)
                                .await?,
                        )
                    })
            })
            .await;
        let PartsLoaded { stats, touched } = so_far.into_inner().expect("not poisoned");
        if !touched.is_empty() {
            self.touched.lock().expect("not poisoned").merge(touched);
        }
        metrics::counter!("earshot_loader_object_parts_total").increment(stats.parts as u64);
        if stats.loaded {
            report_loaded(p, &stats);
        } else {
            metrics::counter!("earshot_loader_objects_total", "outcome" => "skipped").increment(1);
        }
        result.map(|()| stats)
    }

    /// The second half (`store::finish`), and what a load tells: metrics,
    /// the hours to merge, the log line.
    async fn finish(&self, fetched: &Fetched, begun: Begun) -> anyhow::Result<LoadStats> {
        let Fetched::Ready(p) = fetched else {
            metrics::counter!("earshot_loader_objects_total", "outcome" => "skipped").increment(1);
            return Ok(LoadStats::default());
        };
        let (stats, touched) = store::finish(p, begun).await?;
        if !touched.is_empty() {
            self.touched.lock().expect("not poisoned").merge(touched);
        }
        if stats.loaded {
            report_loaded(p, &stats);
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

/// The metrics and log lines of a loaded object.
fn report_loaded(p: &Prepared, stats: &LoadStats) {
    metrics::counter!("earshot_loader_objects_total", "outcome" => "loaded").increment(1);
    metrics::counter!("earshot_loader_events_total", "kind" => "new")
        .increment(stats.new_events as u64);
    metrics::counter!("earshot_loader_events_total", "kind" => "duplicate")
        .increment(stats.duplicates as u64);
    metrics::counter!("earshot_loader_counted_total").increment(stats.counted as u64);
    metrics::counter!("earshot_loader_quarantined_lines_total").increment(stats.quarantined as u64);
    if let Some(max) = stats.max_event_ts {
        let lag = OffsetDateTime::now_utc() - max;
        metrics::gauge!("earshot_loader_lag_seconds").set(lag.as_seconds_f64());
    }
    // Trace ids of the events: one hit can be followed from the pixel
    // (edge log / X-Ray) to this object and its row.
    for s in &p.events {
        if let Some(t) = &s.event.trace_id {
            tracing::debug!(target: "earshot_loader::trace", trace_id = %t, event_id = %s.event.id, object_id = stats.ledger_id, "event loaded");
        }
    }
    tracing::info!(
        source = %p.id.source, key = %p.id.key, object_id = stats.ledger_id, lines = stats.lines,
        new_events = stats.new_events, duplicates = stats.duplicates,
        quarantined = stats.quarantined, counted = stats.counted,
        "object loaded"
    );
}

/// How the watchdog names an object.
fn about(obj: &Object) -> Option<String> {
    Some(format!("{} {}", obj.source, obj.key))
}
