//! The batching pipeline between the handler and the sink.
//!
//! One worker task owns the buffer. In `sync` mode a hit waits for its
//! receipt, and the worker sends whatever has queued up at that moment as one
//! batch (group commit): one event per call when traffic is light, many when
//! it is not, and never a wait for a timer. In `buffered` mode a hit returns
//! at once; the worker flushes at `max_events`, at `max_age`, on `flush()` and
//! on `shutdown()`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Deliver;
use crate::config::FlushMode;

/// Most lines handed to the sink at once in sync mode. The Firehose sink
/// splits further by its own limits; this only bounds one batch's latency.
pub const MAX_SYNC_BATCH: usize = 4000;
/// How often the sink's `maintain` runs (the directory sink rotates files).
pub const MAINTAIN_INTERVAL: Duration = Duration::from_millis(250);

enum Msg {
    Line(Vec<u8>, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// What `submit` gives back: wait on it to know the event is delivered (or
/// dead-lettered) in sync mode; in buffered mode it is ready at once.
pub struct Receipt(Option<oneshot::Receiver<()>>);

impl Receipt {
    pub async fn wait(self) {
        if let Some(rx) = self.0 {
            // A dropped sender means the worker is gone (shutdown); the line
            // was handled by the final flush or is being logged there.
            let _ = rx.await;
        }
    }
}

#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::UnboundedSender<Msg>,
    sync: bool,
}

impl Pipeline {
    pub fn start<D: Deliver>(sink: Arc<D>, mode: FlushMode) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(sink, mode, rx));
        Self {
            tx,
            sync: mode == FlushMode::Sync,
        }
    }

    /// Queues one NDJSON line.
    pub fn submit(&self, line: Vec<u8>) -> Receipt {
        let (ack, rx) = if self.sync {
            let (ack, rx) = oneshot::channel();
            (Some(ack), Some(rx))
        } else {
            (None, None)
        };
        if let Err(mpsc::error::SendError(Msg::Line(line, _))) = self.tx.send(Msg::Line(line, ack))
        {
            // Only after shutdown: the event is written to the log, never dropped.
            crate::sink::dead_letter(&line, "pipeline already shut down");
        }
        Receipt(rx)
    }

    /// Delivers everything queued so far.
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Delivers everything, closes the sink, and stops the worker.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Buffer {
    lines: Vec<Vec<u8>>,
    acks: Vec<oneshot::Sender<()>>,
    oldest: Option<Instant>,
}

impl Buffer {
    fn push(&mut self, line: Vec<u8>, ack: Option<oneshot::Sender<()>>) {
        self.oldest.get_or_insert_with(Instant::now);
        self.lines.push(line);
        self.acks.extend(ack);
    }

    async fn drain_into<D: Deliver>(&mut self, sink: &D) {
        if self.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        sink.deliver(lines).await;
        for ack in self.acks.drain(..) {
            let _ = ack.send(());
        }
        self.oldest = None;
    }
}

async fn worker<D: Deliver>(sink: Arc<D>, mode: FlushMode, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf = Buffer {
        lines: Vec::new(),
        acks: Vec::new(),
        oldest: None,
    };
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (max_events, max_age) = match mode {
        FlushMode::Sync => (MAX_SYNC_BATCH, Duration::ZERO),
        FlushMode::Buffered {
            max_events,
            max_age,
        } => (max_events, max_age),
    };
    let mut control: Option<Msg> = None;
    loop {
        let msg = match control.take() {
            Some(m) => Some(m),
            None => {
                let deadline = buf.oldest.map(|t| t + max_age);
                tokio::select! {
                    m = rx.recv() => m,
                    _ = sleep_until_opt(deadline), if deadline.is_some() && mode != FlushMode::Sync => {
                        buf.drain_into(&*sink).await;
                        continue;
                    }
                    _ = tick.tick() => {
                        sink.maintain(false).await;
                        continue;
                    }
                }
            }
        };
        match msg {
            Some(Msg::Line(line, ack)) => {
                buf.push(line, ack);
                if mode == FlushMode::Sync {
                    // Group commit: take whatever else is already waiting.
                    while buf.lines.len() < max_events {
                        match rx.try_recv() {
                            Ok(Msg::Line(l, a)) => buf.push(l, a),
                            Ok(other) => {
                                control = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    buf.drain_into(&*sink).await;
                } else if buf.lines.len() >= max_events {
                    buf.drain_into(&*sink).await;
                }
            }
            Some(Msg::Flush(done)) => {
                buf.drain_into(&*sink).await;
                let _ = done.send(());
            }
            Some(Msg::Shutdown(done)) => {
                // Take what was queued before the shutdown request too.
                while let Ok(Msg::Line(l, a)) = rx.try_recv() {
                    buf.push(l, a);
                }
                buf.drain_into(&*sink).await;
                sink.maintain(true).await;
                let _ = done.send(());
                return;
            }
            None => {
                buf.drain_into(&*sink).await;
                sink.maintain(true).await;
                return;
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recording {
        batches: Mutex<Vec<Vec<Vec<u8>>>>,
        closed: Mutex<bool>,
    }

    impl Deliver for Recording {
        async fn deliver(&self, lines: Vec<Vec<u8>>) {
            self.batches.lock().unwrap().push(lines);
        }
        async fn maintain(&self, closing: bool) {
            if closing {
                *self.closed.lock().unwrap() = true;
            }
        }
    }

    fn line(i: usize) -> Vec<u8> {
        format!("{{\"n\":{i}}}\n").into_bytes()
    }

    #[tokio::test]
    async fn sync_mode_acknowledges_after_delivery() {
        let sink = Arc::new(Recording::default());
        let p = Pipeline::start(sink.clone(), FlushMode::Sync);
        p.submit(line(1)).wait().await;
        assert_eq!(sink.batches.lock().unwrap().concat(), vec![line(1)]);
        p.shutdown().await;
        assert!(*sink.closed.lock().unwrap());
    }

    #[tokio::test]
    async fn sync_mode_groups_concurrent_hits() {
        let sink = Arc::new(Recording::default());
        let p = Pipeline::start(sink.clone(), FlushMode::Sync);
        let receipts: Vec<_> = (0..100).map(|i| p.submit(line(i))).collect();
        for r in receipts {
            r.wait().await;
        }
        let batches = sink.batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 100);
        assert!(
            batches.len() < 100,
            "queued hits share batches: {}",
            batches.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn buffered_mode_flushes_by_size_age_and_shutdown() {
        let sink = Arc::new(Recording::default());
        let p = Pipeline::start(
            sink.clone(),
            FlushMode::Buffered {
                max_events: 3,
                max_age: Duration::from_millis(500),
            },
        );
        for i in 0..4 {
            p.submit(line(i)).wait().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(sink.batches.lock().unwrap().len(), 1, "size flush at 3");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            sink.batches.lock().unwrap().len(),
            2,
            "age flush of the 4th"
        );
        p.submit(line(9)).wait().await;
        p.shutdown().await;
        let batches = sink.batches.lock().unwrap();
        assert_eq!(
            batches.concat(),
            (0..4).map(line).chain([line(9)]).collect::<Vec<_>>()
        );
        assert!(*sink.closed.lock().unwrap());
    }
}
