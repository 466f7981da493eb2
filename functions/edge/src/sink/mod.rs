//! Where events go: a pipeline that batches NDJSON lines and hands them to
//! a [`Deliver`] implementation (Firehose, or files in a directory).

pub mod dir;
pub mod firehose;
pub mod pipeline;

pub use pipeline::{Pipeline, Receipt};

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// When a delivery must be over: its batch's own deadline (a sync hit's
/// invocation deadline), or the pipeline's cutoff (set at shutdown, and
/// possibly while a delivery is under way), whichever comes first. Neither:
/// only the sink's attempt budget bounds it.
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Option<Instant>,
    cutoff: watch::Receiver<Option<Instant>>,
}

impl Deadline {
    /// No deadline and no cutoff.
    pub fn none() -> Self {
        Self::new(None, watch::channel(None).1)
    }

    /// `at`, or the cutoff `cutoff` carries if that comes first.
    pub fn new(at: Option<Instant>, cutoff: watch::Receiver<Option<Instant>>) -> Self {
        Self { at, cutoff }
    }

    /// The instant, as it stands now.
    pub fn get(&self) -> Option<Instant> {
        earliest(self.at, *self.cutoff.borrow())
    }

    /// Time left (zero once passed); `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Completes once the deadline has passed, following the cutoff if it
    /// moves; never without one.
    pub async fn passed(&self) {
        let mut cutoff = self.cutoff.clone();
        loop {
            let by = earliest(self.at, *cutoff.borrow_and_update());
            tokio::select! {
                () = sleep_until_opt(by) => return,
                changed = cutoff.changed() => {
                    if changed.is_err() {
                        // The cutoff can no longer move.
                        let by = earliest(self.at, *cutoff.borrow());
                        return sleep_until_opt(by).await;
                    }
                }
            }
        }
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until `at`; forever without one.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Takes a batch of NDJSON lines (each ending in `\n`) and makes them
/// durable, or dead-letters what it could not by `deadline`. It never gives
/// up silently: when it returns, every line is either delivered or
/// dead-lettered.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) -> impl Future<Output = ()> + Send;
    /// Called on a timer and at shutdown (`closing`), for sinks that keep
    /// something open (the directory sink's current file).
    fn maintain(&self, closing: bool) -> impl Future<Output = ()> + Send {
        let _ = closing;
        async {}
    }
}

/// The configured sink.
pub enum Sink {
    Firehose(firehose::FirehoseSink<aws_sdk_firehose::Client>),
    Dir(dir::DirSink),
}

impl Deliver for Sink {
    async fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) {
        match self {
            Sink::Firehose(s) => s.deliver(lines, deadline).await,
            Sink::Dir(s) => s.deliver(lines, deadline).await,
        }
    }

    async fn maintain(&self, closing: bool) {
        match self {
            Sink::Firehose(s) => s.maintain(closing).await,
            Sink::Dir(s) => s.maintain(closing).await,
        }
    }
}

/// Most bytes of NDJSON in one dead-letter log line: CloudWatch Logs takes
/// events up to 256 KiB; the rest of the line is the JSON envelope.
pub const DEAD_LETTER_CHUNK: usize = 200 * 1024;

/// Writes undeliverable events to the log as structured lines holding their
/// NDJSON (split at line boundaries into chunks CloudWatch accepts), so
/// they can be replayed from the logs. Returns the number of events.
pub fn dead_letter(ndjson: &[u8], why: &str) -> usize {
    let mut events = 0;
    let mut chunk_start = 0;
    let mut chunk_events = 0;
    let mut pos = 0;
    let emit = |chunk: &[u8], n: usize| {
        tracing::error!(
            dead_letter = true,
            events = n,
            reason = why,
            ndjson = %String::from_utf8_lossy(chunk),
            "events dead-lettered"
        );
    };
    for line in ndjson.split_inclusive(|b| *b == b'\n') {
        if pos + line.len() - chunk_start > DEAD_LETTER_CHUNK && chunk_events > 0 {
            emit(&ndjson[chunk_start..pos], chunk_events);
            chunk_start = pos;
            chunk_events = 0;
        }
        pos += line.len();
        chunk_events += 1;
        events += 1;
    }
    if chunk_events > 0 {
        emit(&ndjson[chunk_start..pos], chunk_events);
    }
    events
}
