//! The batching pipeline between the handler and the sink.
//!
//! Hits append their NDJSON lines to one inbox under a short lock, and one
//! worker task delivers them, oldest first. In `sync` mode a hit then waits
//! until the worker has handled its line: the worker sends whatever has
//! queued up when it wakes as one batch (group commit): one event per call
//! when traffic is light, many when it is not, and never a wait for a
//! timer. In `buffered` mode a hit returns at once; the worker flushes at
//! `max_events`, at `max_age` and on `shutdown()`.
//!
//! A sync hit waits on a count, not on a channel of its own: the inbox
//! numbers lines as they arrive and counts the lines handled (delivered or
//! dead-lettered, always a prefix), and a waiting hit leaves its task's
//! waker. A batch's end wakes the waiters once. Before, each sync hit
//! allocated a oneshot channel and went through an mpsc queue
//! (docs/BENCHMARKS.md, "Ninth machine").

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
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

/// What `submit` gives back: wait on it to know the event is delivered (or
/// dead-lettered) in sync mode; in buffered mode it is ready at once.
pub struct Receipt(Option<Handled>);

impl Receipt {
    pub async fn wait(self) {
        if let Some(h) = self.0 {
            h.await;
        }
    }
}

#[derive(Clone)]
pub struct Pipeline {
    inbox: Arc<Inbox>,
    /// Shutdown requests, each answered once everything is delivered.
    shutdown: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

/// The lines waiting for the worker, and what sync hits wait on.
struct Inbox {
    state: Mutex<InboxState>,
    /// Wakes the worker: at a batch's first line (sync: to deliver it;
    /// buffered: to start the age clock) and, buffered, when `max_events`
    /// are waiting. Not once per hit, as a channel send would.
    wake: Notify,
    /// Most lines in one delivery; buffered mode delivers only full
    /// batches until the age or the shutdown says otherwise.
    max_events: usize,
    /// Whether `submit` hands out receipts to wait on.
    sync: bool,
}

#[derive(Default)]
struct InboxState {
    lines: Vec<Vec<u8>>,
    /// Lines ever submitted; a line's number is the count before it.
    submitted: u64,
    /// Lines handled (delivered or dead-lettered). Batches go out in order,
    /// so these are always the first `handled` lines submitted.
    handled: u64,
    /// Wakers of sync hits whose lines are not handled yet. Emptied (and
    /// every one woken) at the end of each batch; `round` counts that.
    waiters: Vec<Waker>,
    round: u64,
    closed: bool,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_empty(&self) -> bool {
        self.lock().lines.is_empty()
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
            std::mem::replace(&mut g.lines, Vec::with_capacity(n))
        })
    }

    /// Counts `n` more lines as handled and wakes every waiting hit; those
    /// whose lines are still queued wait again. `woken` is the worker's
    /// spare list, swapped in so no round allocates.
    fn mark_handled(&self, n: usize, woken: &mut Vec<Waker>) {
        {
            let mut g = self.lock();
            g.handled += n as u64;
            if g.waiters.is_empty() {
                return;
            }
            g.round += 1;
            std::mem::swap(&mut g.waiters, woken);
        }
        for w in woken.drain(..) {
            w.wake();
        }
    }

    /// Delivers every line when `all`, else only full batches.
    async fn deliver<D: Deliver>(&self, sink: &D, all: bool, woken: &mut Vec<Waker>) {
        while let Some(batch) = self.take_batch(all) {
            let n = batch.len();
            sink.deliver(batch).await;
            self.mark_handled(n, woken);
        }
    }

    /// No more lines are taken; those still queued are dead-lettered and
    /// every waiter is released. Runs when the worker ends, however it ends
    /// (its task dropped with the runtime, or a panic in a sink): a sync hit
    /// never waits forever and no line is dropped silently.
    fn abandon(&self, why: &str) {
        let (lines, waiters) = {
            let mut g = self.lock();
            g.closed = true;
            g.handled = g.submitted;
            g.round += 1;
            (std::mem::take(&mut g.lines), std::mem::take(&mut g.waiters))
        };
        for line in &lines {
            crate::sink::dead_letter(line, why);
        }
        for w in waiters {
            w.wake();
        }
    }
}

/// Waits until the inbox has handled line number `seq`.
struct Handled {
    inbox: Arc<Inbox>,
    seq: u64,
    /// Where this hit's waker sits: (round, index) in the waiters list.
    slot: Option<(u64, usize)>,
}

impl Future for Handled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut g = this.inbox.lock();
        if g.handled > this.seq {
            return Poll::Ready(());
        }
        match this.slot {
            // Polled again in the same round: keep one entry, the newest waker.
            Some((round, i)) if round == g.round => {
                if !g.waiters[i].will_wake(cx.waker()) {
                    g.waiters[i] = cx.waker().clone();
                }
            }
            _ => {
                this.slot = Some((g.round, g.waiters.len()));
                g.waiters.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Ends the inbox when the worker ends, on every path out of it.
struct AbandonOnDrop(Arc<Inbox>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0
            .abandon("the pipeline's worker stopped before delivering them");
    }
}

impl Pipeline {
    pub fn start<D: Deliver>(sink: Arc<D>, mode: FlushMode) -> Self {
        let (shutdown, rx) = mpsc::unbounded_channel();
        let (max_events, sync) = match mode {
            FlushMode::Sync => (MAX_SYNC_BATCH, true),
            FlushMode::Buffered { max_events, .. } => (max_events.max(1), false),
        };
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState::default()),
            wake: Notify::new(),
            max_events,
            sync,
        });
        let guard = AbandonOnDrop(inbox.clone());
        match mode {
            FlushMode::Sync => tokio::spawn(sync_worker(sink, guard, rx)),
            FlushMode::Buffered { max_age, .. } => {
                tokio::spawn(buffered_worker(sink, guard, max_age, rx))
            }
        };
        Self { inbox, shutdown }
    }

    /// Queues one NDJSON line.
    pub fn submit(&self, line: Vec<u8>) -> Receipt {
        let inbox = &self.inbox;
        let mut g = inbox.lock();
        if g.closed {
            drop(g);
            // Only after shutdown: the event is written to the log, never dropped.
            crate::sink::dead_letter(&line, "pipeline already shut down");
            return Receipt(None);
        }
        g.lines.push(line);
        let n = g.lines.len();
        let seq = g.submitted;
        g.submitted += 1;
        drop(g);
        if n == 1 || n == inbox.max_events {
            inbox.wake.notify_one();
        }
        Receipt(inbox.sync.then(|| Handled {
            inbox: inbox.clone(),
            seq,
            slot: None,
        }))
    }

    /// Delivers everything, closes the sink, and stops the worker.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.shutdown.send(done).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The last delivery: no more lines are accepted, what is queued goes out,
/// the sink closes, and the shutdown request (if any: `None` when every
/// `Pipeline` was dropped) is answered.
async fn close<D: Deliver>(
    sink: &D,
    inbox: &Inbox,
    woken: &mut Vec<Waker>,
    done: Option<oneshot::Sender<()>>,
) {
    inbox.lock().closed = true;
    inbox.deliver(sink, true, woken).await;
    sink.maintain(true).await;
    if let Some(done) = done {
        let _ = done.send(());
    }
}

async fn sync_worker<D: Deliver>(
    sink: Arc<D>,
    guard: AbandonOnDrop,
    mut shutdown: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let inbox = &*guard.0;
    let mut woken = Vec::new();
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Group commit: everything waiting when the worker runs goes
            // out together (in batches of at most MAX_SYNC_BATCH).
            () = inbox.wake.notified() => inbox.deliver(&*sink, true, &mut woken).await,
            _ = tick.tick() => sink.maintain(false).await,
            done = shutdown.recv() => {
                close(&*sink, inbox, &mut woken, done).await;
                return;
            }
        }
    }
}

async fn buffered_worker<D: Deliver>(
    sink: Arc<D>,
    guard: AbandonOnDrop,
    max_age: Duration,
    mut shutdown: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let inbox = &*guard.0;
    let mut woken = Vec::new();
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the worker learnt that the oldest line now waiting arrived: its
    // age is counted from there (later by at most a delivery in progress).
    let mut since: Option<Instant> = None;
    loop {
        let deadline = since.map(|t| t + max_age);
        tokio::select! {
            () = inbox.wake.notified() => {
                inbox.deliver(&*sink, false, &mut woken).await;
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {
                inbox.deliver(&*sink, true, &mut woken).await;
                since = None;
            }
            _ = tick.tick() => sink.maintain(false).await,
            done = shutdown.recv() => {
                close(&*sink, inbox, &mut woken, done).await;
                return;
            }
        }
        if inbox.is_empty() {
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
        // All 100 were queued before the worker first ran: one batch.
        assert_eq!(
            *sink.batches.lock().unwrap(),
            vec![(0..100).map(line).collect::<Vec<_>>()]
        );
    }

    /// A sink that delivers one batch per permit the test hands it.
    struct Gated {
        gate: tokio::sync::Semaphore,
        inner: Recording,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                gate: tokio::sync::Semaphore::new(0),
                inner: Recording::default(),
            }
        }
    }

    impl Deliver for Gated {
        async fn deliver(&self, lines: Vec<Vec<u8>>) {
            self.gate.acquire().await.unwrap().forget();
            self.inner.deliver(lines).await;
        }
    }

    /// Lets every ready task on this (current-thread) runtime run.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn sync_hits_wait_for_the_batch_that_carries_their_line() {
        let sink = Arc::new(Gated::default());
        let p = Pipeline::start(sink.clone(), FlushMode::Sync);
        let wait = |r: Receipt| tokio::spawn(r.wait());
        let first = wait(p.submit(line(0)));
        settle().await; // the worker takes [0] and waits at the gate
        let later = [wait(p.submit(line(1))), wait(p.submit(line(2)))];
        settle().await;
        assert!(!first.is_finished());
        assert!(later.iter().all(|h| !h.is_finished()));

        sink.gate.add_permits(1);
        settle().await;
        assert!(first.is_finished(), "its batch is delivered");
        assert!(
            later.iter().all(|h| !h.is_finished()),
            "queued during that delivery: they wait for the next"
        );

        sink.gate.add_permits(1);
        settle().await;
        assert!(later.iter().all(|h| h.is_finished()));
        assert_eq!(
            *sink.inner.batches.lock().unwrap(),
            vec![vec![line(0)], vec![line(1), line(2)]]
        );
        sink.gate.add_permits(1);
        p.shutdown().await;
    }

    /// A waker that counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(Default::default()));
        (c.clone(), Waker::from(c))
    }

    fn wakes(c: &Counter) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_hit_polled_again_leaves_one_waker_the_newest() {
        let sink = Arc::new(Gated::default());
        let p = Pipeline::start(sink.clone(), FlushMode::Sync);
        let Receipt(Some(mut handled)) = p.submit(line(0)) else {
            panic!("sync mode hands out a receipt to wait on");
        };
        let (old, old_waker) = counter();
        let (new, new_waker) = counter();
        let mut poll = |w: &Waker| Pin::new(&mut handled).poll(&mut Context::from_waker(w));
        assert!(poll(&old_waker).is_pending());
        assert!(poll(&old_waker).is_pending());
        assert_eq!(p.inbox.lock().waiters.len(), 1, "not one entry per poll");
        assert!(poll(&new_waker).is_pending());
        assert_eq!(p.inbox.lock().waiters.len(), 1);

        sink.gate.add_permits(1);
        settle().await;
        assert_eq!(
            (wakes(&old), wakes(&new)),
            (0, 1),
            "the newest waker is woken"
        );
        assert!(poll(&new_waker).is_ready());
        p.shutdown().await;
    }

    /// A log writer the test reads back.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_queued_when_the_runtime_goes_away_are_dead_lettered() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let p = tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let p = rt.block_on(async {
                let p = Pipeline::start(
                    Arc::new(Recording::default()),
                    FlushMode::Buffered {
                        max_events: 100,
                        max_age: Duration::from_secs(3600),
                    },
                );
                for i in 0..3 {
                    p.submit(line(i)).wait().await;
                }
                settle().await; // the worker is waiting for more
                p
            });
            drop(rt); // no shutdown: the worker task is dropped
            p
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let dead: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["dead_letter"] == serde_json::Value::Bool(true))
            .map(|v| v["ndjson"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..3)
            .map(|i| String::from_utf8(line(i)).unwrap())
            .collect();
        assert_eq!(dead, expected);
        assert!(p.submit(line(9)).0.is_none(), "closed: nothing to wait for");
    }

    /// A sink that fails its first delivery in the worst way.
    struct Panics;

    impl Deliver for Panics {
        async fn deliver(&self, _: Vec<Vec<u8>>) {
            panic!("a sink bug (this panic is the test's)");
        }
    }

    #[tokio::test]
    async fn a_stopped_worker_releases_its_waiters_and_takes_no_more_lines() {
        let p = Pipeline::start(Arc::new(Panics), FlushMode::Sync);
        let waiting = tokio::spawn(p.submit(line(0)).wait());
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the hit is released, not left waiting forever")
            .unwrap();
        let r = p.submit(line(1));
        assert!(r.0.is_none(), "dead-lettered at once, nothing to wait for");
        let g = p.inbox.lock();
        assert!(g.closed && g.lines.is_empty());
        assert_eq!((g.submitted, g.handled), (1, 1));
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
