//! The batching pipeline between the handler and the sink.
//!
//! One worker task delivers. In `sync` mode a hit waits for its receipt, and
//! the worker sends whatever has queued up at that moment as one batch
//! (group commit): one event per call when traffic is light, many when it is
//! not, and never a wait for a timer. In `buffered` mode a hit appends its
//! line to an inbox and returns at once; the worker flushes at `max_events`,
//! at `max_age`, on `flush()` and on `shutdown()`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
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
    /// Buffered mode's lines; `None` in sync mode, where lines go through `tx`.
    inbox: Option<Arc<Inbox>>,
}

/// Buffered mode's lines, appended by `submit` under a short lock. The
/// worker is woken twice per batch (by its first line, to start the age
/// clock, and when `max_events` are waiting), not once per hit as a channel
/// send would.
struct Inbox {
    state: Mutex<InboxState>,
    wake: Notify,
    max_events: usize,
}

#[derive(Default)]
struct InboxState {
    lines: Vec<Vec<u8>>,
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Takes up to `max_events` lines, oldest first: a full batch, or with
    /// `all` whatever is waiting; `None` when there is nothing to take.
    fn take_batch(&self, all: bool) -> Option<Vec<Vec<u8>>> {
        let mut g = self.lock();
        let n = g.lines.len();
        if n == 0 || (!all && n < self.max_events) {
            return None;
        }
        Some(if n > self.max_events {
            let rest = g.lines.split_off(self.max_events);
            std::mem::replace(&mut g.lines, rest)
        } else {
            std::mem::take(&mut g.lines)
        })
    }

    /// Delivers every line when `all`, else only full batches.
    async fn deliver<D: Deliver>(&self, sink: &D, all: bool) {
        while let Some(batch) = self.take_batch(all) {
            sink.deliver(batch).await;
        }
    }
}

impl Pipeline {
    pub fn start<D: Deliver>(sink: Arc<D>, mode: FlushMode) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = match mode {
            FlushMode::Sync => {
                tokio::spawn(sync_worker(sink, rx));
                None
            }
            FlushMode::Buffered {
                max_events,
                max_age,
            } => {
                let inbox = Arc::new(Inbox {
                    state: Mutex::new(InboxState::default()),
                    wake: Notify::new(),
                    max_events: max_events.max(1),
                });
                tokio::spawn(buffered_worker(sink, inbox.clone(), max_age, rx));
                Some(inbox)
            }
        };
        Self { tx, inbox }
    }

    /// Queues one NDJSON line.
    pub fn submit(&self, line: Vec<u8>) -> Receipt {
        if let Some(inbox) = &self.inbox {
            let mut g = inbox.lock();
            if g.closed {
                drop(g);
                crate::sink::dead_letter(&line, "pipeline already shut down");
                return Receipt(None);
            }
            g.lines.push(line);
            let n = g.lines.len();
            drop(g);
            if n == 1 || n == inbox.max_events {
                inbox.wake.notify_one();
            }
            return Receipt(None);
        }
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Msg::Line(line, _))) =
            self.tx.send(Msg::Line(line, Some(ack)))
        {
            // Only after shutdown: the event is written to the log, never dropped.
            crate::sink::dead_letter(&line, "pipeline already shut down");
        }
        Receipt(Some(rx))
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
}

impl Buffer {
    fn push(&mut self, line: Vec<u8>, ack: Option<oneshot::Sender<()>>) {
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
    }
}

async fn sync_worker<D: Deliver>(sink: Arc<D>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut buf = Buffer {
        lines: Vec::new(),
        acks: Vec::new(),
    };
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control: Option<Msg> = None;
    loop {
        let msg = match control.take() {
            Some(m) => Some(m),
            None => tokio::select! {
                m = rx.recv() => m,
                _ = tick.tick() => {
                    sink.maintain(false).await;
                    continue;
                }
            },
        };
        match msg {
            Some(Msg::Line(line, ack)) => {
                buf.push(line, ack);
                // Group commit: take whatever else is already waiting.
                while buf.lines.len() < MAX_SYNC_BATCH {
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

async fn buffered_worker<D: Deliver>(
    sink: Arc<D>,
    inbox: Arc<Inbox>,
    max_age: Duration,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) {
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the worker learnt that the oldest line now waiting arrived: its
    // age is counted from there (later by at most a delivery in progress).
    let mut since: Option<Instant> = None;
    loop {
        let deadline = since.map(|t| t + max_age);
        tokio::select! {
            () = inbox.wake.notified() => {
                inbox.deliver(&*sink, false).await;
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {
                inbox.deliver(&*sink, true).await;
                since = None;
            }
            _ = tick.tick() => sink.maintain(false).await,
            m = rx.recv() => match m {
                Some(Msg::Flush(done)) => {
                    inbox.deliver(&*sink, true).await;
                    since = None;
                    let _ = done.send(());
                }
                Some(Msg::Line(line, ack)) => {
                    // Not sent in buffered mode; delivered all the same.
                    sink.deliver(vec![line]).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
                Some(Msg::Shutdown(_)) | None => {
                    inbox.lock().closed = true;
                    inbox.deliver(&*sink, true).await;
                    sink.maintain(true).await;
                    if let Some(Msg::Shutdown(done)) = m {
                        let _ = done.send(());
                    }
                    return;
                }
            },
        }
        if inbox.len() == 0 {
            since = None;
        } else if since.is_none() {
            since = Some(Instant::now());
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

    #[tokio::test(start_paused = true)]
    async fn buffered_bursts_arrive_in_order_in_batches_of_at_most_max_events() {
        let sink = Arc::new(Recording::default());
        let p = Pipeline::start(
            sink.clone(),
            FlushMode::Buffered {
                max_events: 10,
                max_age: Duration::from_secs(1),
            },
        );
        for i in 0..95 {
            p.submit(line(i)).wait().await;
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        {
            let b = sink.batches.lock().unwrap();
            assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![10; 9]);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        {
            let b = sink.batches.lock().unwrap();
            assert_eq!(b.len(), 10, "the last 5 by age");
            assert_eq!(b.concat(), (0..95).map(line).collect::<Vec<_>>());
        }
        p.shutdown().await;
        assert!(*sink.closed.lock().unwrap());
    }
}
