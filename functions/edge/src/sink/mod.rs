//! Where events go: a pipeline that batches NDJSON lines and hands them to
//! a [`Deliver`] implementation (Firehose, or files in a directory).

pub mod dir;
pub mod firehose;
pub mod pipeline;

pub use pipeline::{Pipeline, Receipt};

use std::future::Future;

/// Takes a batch of NDJSON lines (each ending in `\n`) and makes them
/// durable, or dead-letters what it could not. It never gives up silently:
/// when it returns, every line is either delivered or dead-lettered.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, lines: Vec<Vec<u8>>) -> impl Future<Output = ()> + Send;
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
    async fn deliver(&self, lines: Vec<Vec<u8>>) {
        match self {
            Sink::Firehose(s) => s.deliver(lines).await,
            Sink::Dir(s) => s.deliver(lines).await,
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
