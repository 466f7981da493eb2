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
//! waker. A batch's end wakes the waiters once: no allocation per hit.
//!
//! Time limits. A sync hit may carry a deadline (its Lambda invocation's,
//! less a margin): its batch must be delivered or dead-lettered by the
//! earliest deadline among its lines. `shutdown` may set a cutoff that
//! ends every delivery, the one under way included. The buffered inbox
//! holds at most [`INBOX_BATCHES`] batches: a hit that finds it full waits
//! for room until its deadline, then dead-letters its own line, so memory
//! stays bounded and no hit outlives its invocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use super::{earliest, sleep_until_opt, Deadline, Deliver};
use crate::config::FlushMode;
use crate::metrics::Metrics;

/// Most lines handed to the sink at once in sync mode. The Firehose sink
/// splits further by its own limits; this only bounds one batch's latency.
pub const MAX_SYNC_BATCH: usize = 4000;
/// How often the sink's `maintain` runs (the directory sink rotates files).
pub const MAINTAIN_INTERVAL: Duration = Duration::from_millis(250);
/// Buffered mode: the inbox holds at most this many batches of
/// `max_events` lines. Room for the batches that arrive while one is being
/// delivered (a Firehose round trip is 10-30 ms); only a Firehose that
/// stalls fills it, and then hits wait rather than memory grow.
pub const INBOX_BATCHES: usize = 4;

/// What `submit` gives back: wait on it to know the event is queued, or in
/// sync mode delivered (or dead-lettered).
pub struct Receipt(Waiting);

enum Waiting {
    /// Nothing to wait for.
    Done,
    /// Sync mode: until the line is handled.
    Handled(Handled),
    /// Buffered mode with a full inbox: until there is room for the line.
    Room(Room),
}

impl Receipt {
    pub async fn wait(self) {
        match self.0 {
            Waiting::Done => {}
            Waiting::Handled(h) => h.await,
            Waiting::Room(r) => r.wait().await,
        }
    }

    /// True when there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        matches!(self.0, Waiting::Done)
    }
}

#[derive(Clone)]
pub struct Pipeline {
    inbox: Arc<Inbox>,
    /// Shutdown requests, each answered once everything is delivered.
    shutdown: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// The instant by which every delivery must be over (set at shutdown).
    cutoff: Arc<watch::Sender<Option<Instant>>>,
}

/// The lines waiting for the worker, and what sync hits wait on.
struct Inbox {
    state: Mutex<InboxState>,
    /// Wakes the worker: at a batch's first line (sync: to deliver it;
    /// buffered: to start the age clock) and, buffered, when `max_events`
    /// are waiting. Not once per hit, as a channel send would.
    wake: Notify,
    /// Tells hits waiting for room that the worker took a batch (or closed).
    room: Notify,
    /// Most lines in one delivery; buffered mode delivers only full
    /// batches until the age or the shutdown says otherwise.
    max_events: usize,
    /// Most lines waiting (buffered mode; sync hits each wait on their own).
    capacity: usize,
    /// Whether `submit` hands out receipts to wait on.
    sync: bool,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct InboxState {
    lines: Vec<Vec<u8>>,
    /// The earliest deadline of the lines waiting.
    deadline: Option<Instant>,
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

    /// Writes lines that will not be delivered to the log, and counts them.
    fn dead_letter(&self, line: &[u8], why: &str) {
        let n = crate::sink::dead_letter(line, why);
        self.metrics
            .add(&self.metrics.counters.dead_lettered, n as u64);
    }

    /// Queues `line` (the caller checked there is room) and returns its
    /// number; wakes the worker when it has something new to do.
    fn push(&self, g: &mut InboxState, line: Vec<u8>, deadline: Option<Instant>) -> u64 {
        g.lines.push(line);
        g.deadline = earliest(g.deadline, deadline);
        let n = g.lines.len();
        let seq = g.submitted;
        g.submitted += 1;
        if n == 1 || n == self.max_events {
            self.wake.notify_one();
        }
        seq
    }

    /// Takes up to `max_events` lines, oldest first, with the deadline they
    /// must go out by: a full batch, or with `all` whatever is waiting;
    /// `None` when there is nothing to take.
    fn take_batch(&self, all: bool) -> Option<(Vec<Vec<u8>>, Option<Instant>)> {
        let mut g = self.lock();
        let n = g.lines.len();
        if n == 0 || (!all && n < self.max_events) {
            return None;
        }
        let batch = if n > self.max_events {
            let rest = g.lines.split_off(self.max_events);
            std::mem::replace(&mut g.lines, rest)
        } else {
            std::mem::replace(&mut g.lines, Vec::with_capacity(n))
        };
        // What stays keeps the earliest deadline: never later than its own.
        let deadline = if g.lines.is_empty() {
            g.deadline.take()
        } else {
            g.deadline
        };
        drop(g);
        self.room.notify_waiters();
        Some((batch, deadline))
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

    /// Delivers every line when `all`, else only full batches, each by its
    /// deadline or the pipeline's cutoff.
    async fn deliver<D: Deliver>(
        &self,
        sink: &D,
        all: bool,
        woken: &mut Vec<Waker>,
        cutoff: &watch::Receiver<Option<Instant>>,
    ) {
        while let Some((batch, deadline)) = self.take_batch(all) {
            let n = batch.len();
            sink.deliver(batch, &Deadline::new(deadline, cutoff.clone()))
                .await;
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
        self.room.notify_waiters();
        for line in &lines {
            self.dead_letter(line, why);
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

/// A line that found the buffered inbox full, waiting for room. Dropped
/// before it got in (its hit's task cancelled), it dead-letters the line.
struct Room {
    inbox: Arc<Inbox>,
    line: Option<Vec<u8>>,
    deadline: Option<Instant>,
}

impl Room {
    async fn wait(mut self) {
        let inbox = self.inbox.clone();
        loop {
            let room = inbox.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut g = inbox.lock();
                if g.closed {
                    drop(g);
                    self.give_up("pipeline already shut down");
                    return;
                }
                if g.lines.len() < inbox.capacity {
                    let line = self.line.take().expect("held until queued");
                    inbox.push(&mut g, line, None);
                    return;
                }
            }
            tokio::select! {
                () = room => {}
                () = sleep_until_opt(self.deadline) => {
                    self.give_up("the inbox stayed full until the hit's deadline (Firehose too slow)");
                    return;
                }
            }
        }
    }

    fn give_up(&mut self, why: &str) {
        if let Some(line) = self.line.take() {
            self.inbox.dead_letter(&line, why);
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.give_up("the hit was cancelled while the inbox was full");
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
    pub fn start<D: Deliver>(sink: Arc<D>, mode: FlushMode, metrics: Arc<Metrics>) -> Self {
        let (shutdown, rx) = mpsc::unbounded_channel();
        let (cutoff, cutoff_rx) = watch::channel(None);
        let (max_events, capacity, max_age) = match mode {
            FlushMode::Sync => (MAX_SYNC_BATCH, usize::MAX, None),
            FlushMode::Buffered {
                max_events,
                max_age,
            } => {
                let max_events = max_events.max(1);
                let capacity = max_events.saturating_mul(INBOX_BATCHES);
                (max_events, capacity, Some(max_age))
            }
        };
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState::default()),
            wake: Notify::new(),
            room: Notify::new(),
            max_events,
            capacity,
            sync: max_age.is_none(),
            metrics,
        });
        let guard = AbandonOnDrop(inbox.clone());
        tokio::spawn(worker(sink, guard, max_age, rx, cutoff_rx));
        Self {
            inbox,
            shutdown,
            cutoff: Arc::new(cutoff),
        }
    }

    /// Queues one NDJSON line. `deadline`: when the hit must be answered;
    /// a sync hit's line is delivered or dead-lettered by then, a buffered
    /// hit that finds the inbox full waits for room until then.
    pub fn submit(&self, line: Vec<u8>, deadline: Option<Instant>) -> Receipt {
        let inbox = &self.inbox;
        let mut g = inbox.lock();
        if g.closed {
            drop(g);
            // Only after shutdown: the event is written to the log, never dropped.
            inbox.dead_letter(&line, "pipeline already shut down");
            return Receipt(Waiting::Done);
        }
        if g.lines.len() >= inbox.capacity {
            drop(g);
            return Receipt(Waiting::Room(Room {
                inbox: inbox.clone(),
                line: Some(line),
                deadline,
            }));
        }
        let seq = inbox.push(&mut g, line, deadline.filter(|_| inbox.sync));
        drop(g);
        Receipt(if inbox.sync {
            Waiting::Handled(Handled {
                inbox: inbox.clone(),
                seq,
                slot: None,
            })
        } else {
            Waiting::Done
        })
    }

    /// Delivers everything, closes the sink, and stops the worker. With a
    /// `budget`, every delivery (the one under way included) ends by then,
    /// and what is not delivered by then is dead-lettered.
    pub async fn shutdown(&self, budget: Option<Duration>) {
        if let Some(b) = budget {
            let by = Instant::now() + b;
            self.cutoff.send_modify(|c| *c = earliest(*c, Some(by)));
        }
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
    cutoff: &watch::Receiver<Option<Instant>>,
    done: Option<oneshot::Sender<()>>,
) {
    inbox.lock().closed = true;
    inbox.room.notify_waiters();
    inbox.deliver(sink, true, woken, cutoff).await;
    sink.maintain(true).await;
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// The worker behind a pipeline. `max_age`: `None` in sync mode, where
/// every wake is a group commit; in buffered mode, how long the oldest
/// waiting line may wait for a full batch.
async fn worker<D: Deliver>(
    sink: Arc<D>,
    guard: AbandonOnDrop,
    max_age: Option<Duration>,
    mut shutdown: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    cutoff: watch::Receiver<Option<Instant>>,
) {
    let inbox = &*guard.0;
    let mut woken = Vec::new();
    let mut tick = tokio::time::interval(MAINTAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Buffered: when the worker learnt that the oldest line now waiting
    // arrived: its age is counted from there (later by at most a delivery
    // in progress).
    let mut since: Option<Instant> = None;
    loop {
        let deadline = since.zip(max_age).map(|(t, age)| t + age);
        tokio::select! {
            // Sync: group commit, everything waiting when the worker runs
            // goes out together (in batches of at most MAX_SYNC_BATCH).
            // Buffered: only full batches.
            () = inbox.wake.notified() => {
                inbox.deliver(&*sink, max_age.is_none(), &mut woken, &cutoff).await;
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {
                inbox.deliver(&*sink, true, &mut woken, &cutoff).await;
                since = None;
            }
            _ = tick.tick() => sink.maintain(false).await,
            done = shutdown.recv() => {
                close(&*sink, inbox, &mut woken, &cutoff, done).await;
                return;
            }
        }
        if max_age.is_some() {
            if inbox.is_empty() {
                since = None;
            } else if since.is_none() {
                since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recording {
        batches: Mutex<Vec<Vec<Vec<u8>>>>,
        /// The deadline each batch was handed.
        deadlines: Mutex<Vec<Option<Instant>>>,
        closed: Mutex<bool>,
    }

    fn start<D: Deliver>(sink: Arc<D>, mode: FlushMode) -> (Pipeline, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new("test"));
        (Pipeline::start(sink, mode, metrics.clone()), metrics)
    }

    fn buffered(max_events: usize, max_age: Duration) -> FlushMode {
        FlushMode::Buffered {
            max_events,
            max_age,
        }
    }

    fn dead_lettered(m: &Metrics) -> u64 {
        m.counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    impl Deliver for Recording {
        async fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) {
            self.deadlines.lock().unwrap().push(deadline.get());
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
        let (p, _) = start(sink.clone(), FlushMode::Sync);
        p.submit(line(1), None).wait().await;
        assert_eq!(sink.batches.lock().unwrap().concat(), vec![line(1)]);
        p.shutdown(None).await;
        assert!(*sink.closed.lock().unwrap());
    }

    #[tokio::test]
    async fn sync_mode_groups_concurrent_hits() {
        let sink = Arc::new(Recording::default());
        let (p, _) = start(sink.clone(), FlushMode::Sync);
        let receipts: Vec<_> = (0..100).map(|i| p.submit(line(i), None)).collect();
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
        async fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) {
            self.gate.acquire().await.unwrap().forget();
            self.inner.deliver(lines, deadline).await;
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
        let (p, _) = start(sink.clone(), FlushMode::Sync);
        let wait = |r: Receipt| tokio::spawn(r.wait());
        let first = wait(p.submit(line(0), None));
        settle().await; // the worker takes [0] and waits at the gate
        let later = [wait(p.submit(line(1), None)), wait(p.submit(line(2), None))];
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
        p.shutdown(None).await;
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
        let (p, _) = start(sink.clone(), FlushMode::Sync);
        let Receipt(Waiting::Handled(mut handled)) = p.submit(line(0), None) else {
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
        p.shutdown(None).await;
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
                let (p, _) = start(
                    Arc::new(Recording::default()),
                    buffered(100, Duration::from_secs(3600)),
                );
                for i in 0..3 {
                    p.submit(line(i), None).wait().await;
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
        assert!(
            p.submit(line(9), None).is_done(),
            "closed: nothing to wait for"
        );
    }

    /// A sink that fails its first delivery in the worst way.
    struct Panics;

    impl Deliver for Panics {
        async fn deliver(&self, _: Vec<Vec<u8>>, _: &Deadline) {
            panic!("a sink bug (this panic is the test's)");
        }
    }

    #[tokio::test]
    async fn a_stopped_worker_releases_its_waiters_and_takes_no_more_lines() {
        let (p, _) = start(Arc::new(Panics), FlushMode::Sync);
        let waiting = tokio::spawn(p.submit(line(0), None).wait());
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the hit is released, not left waiting forever")
            .unwrap();
        let r = p.submit(line(1), None);
        assert!(r.is_done(), "dead-lettered at once, nothing to wait for");
        let g = p.inbox.lock();
        assert!(g.closed && g.lines.is_empty());
        assert_eq!((g.submitted, g.handled), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn buffered_mode_flushes_by_size_age_and_shutdown() {
        let sink = Arc::new(Recording::default());
        let (p, _) = start(sink.clone(), buffered(3, Duration::from_millis(500)));
        for i in 0..4 {
            p.submit(line(i), None).wait().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(sink.batches.lock().unwrap().len(), 1, "size flush at 3");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            sink.batches.lock().unwrap().len(),
            2,
            "age flush of the 4th"
        );
        p.submit(line(9), None).wait().await;
        p.shutdown(None).await;
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
        let (p, _) = start(sink.clone(), buffered(10, Duration::from_secs(1)));
        for i in 0..95 {
            p.submit(line(i), None).wait().await;
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
        p.shutdown(None).await;
        assert!(*sink.closed.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_batch_is_handed_the_earliest_deadline_of_its_lines() {
        let sink = Arc::new(Gated::default());
        let (p, _) = start(sink.clone(), FlushMode::Sync);
        let now = Instant::now();
        let first = tokio::spawn(p.submit(line(0), Some(now + Duration::from_secs(9))).wait());
        settle().await; // the worker holds [0] at the gate
        let later = [
            tokio::spawn(p.submit(line(1), Some(now + Duration::from_secs(7))).wait()),
            tokio::spawn(p.submit(line(2), None).wait()),
            tokio::spawn(p.submit(line(3), Some(now + Duration::from_secs(8))).wait()),
        ];
        sink.gate.add_permits(2);
        first.await.unwrap();
        for h in later {
            h.await.unwrap();
        }
        assert_eq!(
            *sink.inner.deadlines.lock().unwrap(),
            vec![
                Some(now + Duration::from_secs(9)),
                Some(now + Duration::from_secs(7))
            ]
        );
        assert_eq!(
            *sink.inner.batches.lock().unwrap(),
            vec![vec![line(0)], vec![line(1), line(2), line(3)]]
        );
        sink.gate.add_permits(1);
        p.shutdown(None).await;
    }

    /// A Firehose that stalls fills the buffered inbox: it never holds more
    /// than INBOX_BATCHES batches; a hit that finds it full waits for room
    /// until its deadline and then dead-letters its own line.
    #[tokio::test(start_paused = true)]
    async fn a_full_buffered_inbox_makes_hits_wait_for_room_until_their_deadline() {
        let sink = Arc::new(Gated::default());
        let max_events = 2;
        let (p, metrics) = start(
            sink.clone(),
            buffered(max_events, Duration::from_secs(3600)),
        );
        let capacity = max_events * INBOX_BATCHES;
        // The first batch goes to the (stalled) sink; then the inbox fills.
        for i in 0..max_events + capacity {
            let r = p.submit(line(i), None);
            assert!(r.is_done(), "line {i} is queued at once");
            settle().await;
        }
        assert_eq!(p.inbox.lock().lines.len(), capacity);
        let deadline = Instant::now() + Duration::from_secs(2);
        let late = p.submit(line(100), Some(deadline));
        assert!(!late.is_done(), "a full inbox: the hit waits");
        let started = Instant::now();
        late.wait().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "gave up at its deadline"
        );
        assert_eq!(dead_lettered(&metrics), 1);
        assert_eq!(
            p.inbox.lock().lines.len(),
            capacity,
            "never more than capacity"
        );

        // Without a deadline a hit waits until the sink takes a batch.
        let patient = tokio::spawn(p.submit(line(101), None).wait());
        settle().await;
        assert!(!patient.is_finished());
        sink.gate.add_permits(1);
        patient.await.unwrap();
        assert_eq!(p.inbox.lock().lines.len(), capacity - max_events + 1);
        sink.gate.add_permits(100);
        p.shutdown(None).await;
        let delivered = sink.inner.batches.lock().unwrap().concat();
        let want: Vec<Vec<u8>> = (0..max_events + capacity)
            .map(line)
            .chain([line(101)])
            .collect();
        assert_eq!(delivered, want, "all but the one dead-lettered, in order");
        assert_eq!(dead_lettered(&metrics), 1);
    }

    /// A hit cancelled while waiting for room still accounts for its line.
    #[tokio::test(start_paused = true)]
    async fn a_line_waiting_for_room_is_dead_lettered_if_its_hit_is_dropped() {
        let sink = Arc::new(Gated::default());
        let (p, metrics) = start(sink.clone(), buffered(1, Duration::from_secs(3600)));
        for i in 0..1 + INBOX_BATCHES {
            p.submit(line(i), None);
            settle().await;
        }
        let waiting = tokio::spawn(p.submit(line(50), None).wait());
        settle().await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(dead_lettered(&metrics), 1);
        sink.gate.add_permits(100);
        p.shutdown(None).await;
        assert_eq!(
            sink.inner.batches.lock().unwrap().concat(),
            (0..1 + INBOX_BATCHES).map(line).collect::<Vec<_>>()
        );
    }

    /// A sink that holds every batch until its deadline, then reports it cut
    /// off (as the Firehose sink does when Firehose hangs).
    #[derive(Default)]
    struct Stalled {
        cut: Mutex<Vec<(Vec<Vec<u8>>, Duration)>>,
        started: Mutex<Option<Instant>>,
    }

    impl Deliver for Stalled {
        async fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) {
            deadline.passed().await;
            let t0 = self
                .started
                .lock()
                .unwrap()
                .expect("the test set the start");
            self.cut.lock().unwrap().push((lines, t0.elapsed()));
        }
    }

    /// Shutdown with a budget: the delivery under way and the batches still
    /// queued all end when the budget does.
    #[tokio::test(start_paused = true)]
    async fn a_shutdown_budget_ends_the_delivery_under_way_and_the_rest() {
        let sink = Arc::new(Stalled::default());
        *sink.started.lock().unwrap() = Some(Instant::now());
        let (p, _) = start(sink.clone(), buffered(2, Duration::from_secs(3600)));
        for i in 0..5 {
            p.submit(line(i), None);
            settle().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.shutdown(Some(Duration::from_millis(300))).await;
        let cut = sink.cut.lock().unwrap();
        let at = Duration::from_millis(1300);
        assert_eq!(
            *cut,
            vec![
                (vec![line(0), line(1)], at),
                (vec![line(2), line(3)], at),
                (vec![line(4)], at)
            ]
        );
    }
}
