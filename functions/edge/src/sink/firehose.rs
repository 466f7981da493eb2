//! Delivery to Kinesis Data Firehose with PutRecordBatch.
//!
//! Events are packed: many newline-terminated events per Firehose record,
//! because Firehose bills each record rounded up to 5 KB and a ~450-byte event
//! alone would pay for 5 KB. Records are grouped into calls within the API's
//! limits. When a call fails, or succeeds with `FailedPutCount > 0`, only the
//! failed records are sent again, with capped exponential backoff and full
//! jitter; after the retry budget they are dead-lettered (a structured log
//! line holding the NDJSON, plus the `DeadLetteredEvents` metric). The
//! budget is the attempts allowed, cut short by the delivery's deadline (a
//! sync hit's invocation deadline, or the shutdown window): a call still
//! running then is abandoned, and no attempt starts that could not finish.
//!
//! A call that timed out may still have been accepted, so a retry can deliver
//! a record twice. That is safe downstream: every event has a unique id, and
//! the loader keeps each id once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{dead_letter, Deadline, Deliver};
use crate::metrics::Metrics;

/// PutRecordBatch accepts at most 500 records per call (Firehose quotas).
pub const MAX_RECORDS_PER_BATCH: usize = 500;
/// PutRecordBatch accepts at most 4 MiB per call (Firehose quotas).
pub const MAX_BYTES_PER_BATCH: usize = 4 * 1024 * 1024;
/// A Firehose record holds at most 1,000 KiB before base64 (Firehose quotas).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;
/// Firehose bills ingestion per record rounded up to the next 5 KB
/// (Kinesis Data Firehose pricing, Direct PUT).
pub const BILLING_INCREMENT: usize = 5 * 1024;

/// No attempt starts with less time than this before the deadline: a
/// PutRecordBatch inside the region takes 10-30 ms, so a shorter one would
/// almost surely be cut off, a call paid for and possibly accepted twice.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// The bytes Firehose bills for a record of `len` bytes.
pub fn billed_bytes(len: usize) -> usize {
    len.div_ceil(BILLING_INCREMENT).max(1) * BILLING_INCREMENT
}

/// One Firehose record: whole NDJSON lines, concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub data: Bytes,
    pub events: usize,
}

/// Packs lines into as few records as the record size limit allows, in
/// order. A line longer than a record (impossible from this edge: an event
/// is under 2 KB) is returned apart, to be dead-lettered.
pub fn pack(lines: Vec<Vec<u8>>) -> (Vec<Record>, Vec<Vec<u8>>) {
    let mut records = Vec::new();
    let mut oversized = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut n = 0;
    for line in lines {
        if line.len() > MAX_RECORD_BYTES {
            oversized.push(line);
            continue;
        }
        if cur.len() + line.len() > MAX_RECORD_BYTES {
            records.push(Record {
                data: Bytes::from(std::mem::take(&mut cur)),
                events: n,
            });
            n = 0;
        }
        cur.extend_from_slice(&line);
        n += 1;
    }
    if n > 0 {
        records.push(Record {
            data: Bytes::from(cur),
            events: n,
        });
    }
    (records, oversized)
}

/// Splits records into calls within the per-call record and byte limits.
pub fn group(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut calls = Vec::new();
    let mut cur: Vec<Record> = Vec::new();
    let mut bytes = 0;
    for r in records {
        if !cur.is_empty()
            && (cur.len() == MAX_RECORDS_PER_BATCH || bytes + r.data.len() > MAX_BYTES_PER_BATCH)
        {
            calls.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += r.data.len();
        cur.push(r);
    }
    if !cur.is_empty() {
        calls.push(cur);
    }
    calls
}

/// Why a whole call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub message: String,
}

/// The one Firehose call the edge makes. The real client implements it; the
/// retry logic is tested against scripted implementations.
pub trait FirehoseApi: Send + Sync + 'static {
    /// Sends the records; on success returns, per record in order, `None`
    /// when accepted or `Some(error)` when it failed.
    fn put_record_batch(
        &self,
        stream: &str,
        records: Vec<Bytes>,
    ) -> impl Future<Output = Result<Vec<Option<String>>, CallError>> + Send;
}

impl FirehoseApi for aws_sdk_firehose::Client {
    async fn put_record_batch(
        &self,
        stream: &str,
        records: Vec<Bytes>,
    ) -> Result<Vec<Option<String>>, CallError> {
        use aws_sdk_firehose::primitives::Blob;
        use aws_sdk_firehose::types::Record as SdkRecord;
        let records = records
            .into_iter()
            .map(|b| SdkRecord::builder().data(Blob::new(b.to_vec())).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CallError {
                message: e.to_string(),
            })?;
        let out = self
            .put_record_batch()
            .delivery_stream_name(stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| CallError {
                message: aws_sdk_firehose::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(out
            .request_responses()
            .iter()
            .map(|r| {
                r.error_code()
                    .map(|c| format!("{c}: {}", r.error_message().unwrap_or_default()))
            })
            .collect())
    }
}

/// How hard to try before dead-lettering.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per batch, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            // 50 ms doubling to a 2 s cap: six attempts wait about 4 s at
            // worst between them. With each attempt allowed 3 s (the
            // client's timeout) the whole can outlast a Lambda invocation,
            // which is why a delivery's deadline cuts it short.
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
        }
    }

    /// Full jitter: uniform in [0, min(cap, base * 2^retry)].
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.min(16))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

pub struct FirehoseSink<A> {
    api: A,
    stream: String,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl<A: FirehoseApi> FirehoseSink<A> {
    pub fn new(
        api: A,
        stream: impl Into<String>,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api,
            stream: stream.into(),
            retry,
            metrics,
        }
    }

    /// Sends one call's records until all are accepted, the attempts are
    /// spent or the deadline is near; dead-letters what is left.
    async fn send_call(&self, mut pending: Vec<Record>, deadline: &Deadline) {
        let c = &self.metrics.counters;
        let mut last_error = String::from("none: no time was left to try");
        let mut attempts = 0;
        while attempts < self.retry.max_attempts {
            let pause = if attempts == 0 {
                Duration::ZERO
            } else {
                self.retry.backoff(attempts - 1)
            };
            if deadline
                .remaining()
                .is_some_and(|left| left < pause + MIN_ATTEMPT_TIME)
            {
                break;
            }
            if attempts > 0 {
                self.metrics.add(&c.retries, 1);
                tokio::time::sleep(pause).await;
            }
            attempts += 1;
            let started = Instant::now();
            let call = self.api.put_record_batch(
                &self.stream,
                pending.iter().map(|r| r.data.clone()).collect(),
            );
            let result = tokio::select! {
                r = call => Some(r),
                () = deadline.passed() => None,
            };
            self.metrics.add(&c.firehose_calls, 1);
            self.metrics
                .add(&c.firehose_latency_us, started.elapsed().as_micros() as u64);
            match result {
                None => {
                    // Abandoned: Firehose may still accept it, and the
                    // dead letter then holds a copy; the loader keeps one.
                    last_error = "the deadline came during the call".into();
                    tracing::warn!(attempt = attempts, "firehose call cut off by the deadline");
                    break;
                }
                Some(Ok(results)) if results.len() == pending.len() => {
                    let mut failed = Vec::new();
                    for (rec, res) in pending.into_iter().zip(results) {
                        if let Some(e) = res {
                            last_error = e;
                            failed.push(rec);
                        }
                    }
                    if failed.is_empty() {
                        return;
                    }
                    tracing::warn!(failed = failed.len(), attempt = attempts, error = %last_error, "firehose partial failure; retrying the failed records");
                    pending = failed;
                }
                Some(Ok(results)) => {
                    // Cannot tell which record failed: resend all (the loader
                    // dedupes by event id).
                    last_error =
                        format!("{} responses for {} records", results.len(), pending.len());
                    tracing::warn!(attempt = attempts, error = %last_error, "firehose answered with a mismatched response count");
                }
                Some(Err(e)) => {
                    last_error = e.message;
                    tracing::warn!(attempt = attempts, error = %last_error, "firehose call failed; retrying");
                }
            }
        }
        let why = if attempts == self.retry.max_attempts {
            format!("firehose: {attempts} attempts failed, last error: {last_error}")
        } else {
            format!(
                "firehose: the deadline came after {attempts} of {} attempts, last error: {last_error}",
                self.retry.max_attempts
            )
        };
        for rec in pending {
            let n = dead_letter(&rec.data, &why);
            self.metrics.add(&c.dead_lettered, n as u64);
        }
    }
}

impl<A: FirehoseApi> Deliver for FirehoseSink<A> {
    async fn deliver(&self, lines: Vec<Vec<u8>>, deadline: &Deadline) {
        let (records, oversized) = pack(lines);
        let c = &self.metrics.counters;
        for line in oversized {
            dead_letter(&line, "event larger than a Firehose record");
            self.metrics.add(&c.dead_lettered, 1);
        }
        for call in group(records) {
            self.metrics.add(&c.batches, 1);
            self.metrics.add(&c.batch_records, call.len() as u64);
            self.metrics
                .add(&c.batch_events, call.iter().map(|r| r.events as u64).sum());
            self.send_call(call, deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    fn lines(n: usize, size: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut l = format!("{i:08}").into_bytes();
                l.resize(size - 1, b'x');
                l.push(b'\n');
                l
            })
            .collect()
    }

    #[test]
    fn billing_rounds_up_to_5_kb() {
        assert_eq!(billed_bytes(1), 5120);
        assert_eq!(billed_bytes(450), 5120);
        assert_eq!(billed_bytes(5120), 5120);
        assert_eq!(billed_bytes(5121), 10240);
    }

    #[test]
    fn packing_fills_records_to_the_limit_in_order() {
        let input = lines(5000, 500);
        let (records, oversized) = pack(input.clone());
        assert!(oversized.is_empty());
        assert_eq!(records.len(), 3); // 2048 lines of 500 B fit in 1,000 KiB
        assert!(records.iter().all(|r| r.data.len() <= MAX_RECORD_BYTES));
        assert_eq!(records[0].events, 2048);
        assert_eq!(records.iter().map(|r| r.events).sum::<usize>(), 5000);
        let rejoined: Vec<u8> = records.iter().flat_map(|r| r.data.to_vec()).collect();
        assert_eq!(rejoined, input.concat());
        let (_, over) = pack(vec![vec![b'x'; MAX_RECORD_BYTES + 1]]);
        assert_eq!(over.len(), 1);
    }

    #[test]
    fn grouping_respects_record_and_byte_limits() {
        let small: Vec<Record> = (0..1200)
            .map(|_| Record {
                data: Bytes::from_static(b"a\n"),
                events: 1,
            })
            .collect();
        let calls = group(small);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 200]
        );
        let big: Vec<Record> = (0..10)
            .map(|_| Record {
                data: Bytes::from(vec![b'a'; MAX_RECORD_BYTES]),
                events: 1,
            })
            .collect();
        let calls = group(big);
        assert!(calls
            .iter()
            .all(|c| c.iter().map(|r| r.data.len()).sum::<usize>() <= MAX_BYTES_PER_BATCH));
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
    }

    /// A scripted Firehose: each call takes the next outcome; `Fail(set)`
    /// fails the records whose content is in the set.
    enum Outcome {
        CallError,
        /// The call takes this long, then fails as the client's attempt
        /// timeout would.
        Hang(Duration),
        FailIndexes(Vec<usize>),
        AllOk,
    }

    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<Outcome>>,
        accepted: Mutex<Vec<Bytes>>,
        calls: Mutex<Vec<usize>>,
    }

    impl FirehoseApi for Arc<Scripted> {
        async fn put_record_batch(
            &self,
            _stream: &str,
            records: Vec<Bytes>,
        ) -> Result<Vec<Option<String>>, CallError> {
            self.calls.lock().unwrap().push(records.len());
            let outcome = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Outcome::AllOk);
            match outcome {
                Outcome::CallError => Err(CallError {
                    message: "ServiceUnavailableException: slow down".into(),
                }),
                Outcome::Hang(d) => {
                    tokio::time::sleep(d).await;
                    Err(CallError {
                        message: "timeout: the attempt timed out".into(),
                    })
                }
                Outcome::AllOk => {
                    self.accepted
                        .lock()
                        .unwrap()
                        .extend(records.iter().cloned());
                    Ok(vec![None; records.len()])
                }
                Outcome::FailIndexes(idx) => Ok(records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        if idx.contains(&i) {
                            Some("ServiceUnavailableException: Slow down.".into())
                        } else {
                            self.accepted.lock().unwrap().push(r);
                            None
                        }
                    })
                    .collect()),
            }
        }
    }

    fn sink(api: Arc<Scripted>, attempts: u32) -> (FirehoseSink<Arc<Scripted>>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new("test"));
        let retry = RetryPolicy {
            max_attempts: attempts,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        };
        (
            FirehoseSink::new(api, "events", retry, metrics.clone()),
            metrics,
        )
    }

    fn records_of(n: usize) -> Vec<Vec<u8>> {
        // Lines big enough that each record holds 2 lines: easy to count.
        lines(n, 400 * 1024)
    }

    #[tokio::test]
    async fn partial_failure_resends_only_the_failed_records() {
        let api = Arc::new(Scripted::default());
        api.script.lock().unwrap().extend([
            Outcome::FailIndexes(vec![1, 3]),
            Outcome::FailIndexes(vec![0]),
        ]);
        let (s, m) = sink(api.clone(), 5);
        let input = records_of(10); // 5 records of 2 lines
        s.deliver(input.clone(), &Deadline::none()).await;
        assert_eq!(*api.calls.lock().unwrap(), vec![5, 2, 1]);
        let mut got: Vec<u8> = api
            .accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        let mut want = input.concat();
        got.sort();
        want.sort();
        assert_eq!(got, want, "every event delivered exactly once");
        assert_eq!(
            m.counters
                .retries
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            m.counters
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[tokio::test]
    async fn throttled_calls_are_retried_whole() {
        let api = Arc::new(Scripted::default());
        api.script
            .lock()
            .unwrap()
            .extend([Outcome::CallError, Outcome::CallError]);
        let (s, m) = sink(api.clone(), 5);
        s.deliver(records_of(4), &Deadline::none()).await;
        assert_eq!(*api.calls.lock().unwrap(), vec![2, 2, 2]);
        assert_eq!(api.accepted.lock().unwrap().len(), 2);
        assert_eq!(
            m.counters
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }

    #[tokio::test]
    async fn dead_letter_only_after_the_budget_and_only_what_failed() {
        let api = Arc::new(Scripted::default());
        api.script.lock().unwrap().extend([
            Outcome::FailIndexes(vec![0]),
            Outcome::FailIndexes(vec![0]),
            Outcome::FailIndexes(vec![0]),
        ]);
        let (s, m) = sink(api.clone(), 3);
        s.deliver(records_of(4), &Deadline::none()).await;
        assert_eq!(*api.calls.lock().unwrap(), vec![2, 1, 1]);
        assert_eq!(api.accepted.lock().unwrap().len(), 1);
        assert_eq!(
            m.counters
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed),
            2,
            "the two events of the failed record"
        );
    }

    fn dead_lettered(m: &Metrics) -> u64 {
        m.counters
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls that hang 4 s each under a 10 s deadline: two fail, the third
    /// is cut off at the deadline, and the events are dead-lettered then,
    /// not after the six attempts the policy allows.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_firehose_is_given_up_at_the_deadline() {
        let api = Arc::new(Scripted::default());
        api.script
            .lock()
            .unwrap()
            .extend((0..6).map(|_| Outcome::Hang(Duration::from_secs(4))));
        let (s, m) = sink(api.clone(), 6);
        let start = tokio::time::Instant::now();
        let deadline = Deadline::new(
            Some(start + Duration::from_secs(10)),
            tokio::sync::watch::channel(None).1,
        );
        s.deliver(records_of(2), &deadline).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(*api.calls.lock().unwrap(), vec![1, 1, 1]);
        assert_eq!(dead_lettered(&m), 2);
        assert!(api.accepted.lock().unwrap().is_empty());
    }

    /// No attempt starts that could not finish: with less than
    /// MIN_ATTEMPT_TIME left, the events are dead-lettered at once.
    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_too_close_to_the_deadline() {
        let api = Arc::new(Scripted::default());
        let (s, m) = sink(api.clone(), 6);
        let start = tokio::time::Instant::now();
        let deadline = Deadline::new(
            Some(start + MIN_ATTEMPT_TIME - Duration::from_millis(1)),
            tokio::sync::watch::channel(None).1,
        );
        s.deliver(records_of(2), &deadline).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(api.calls.lock().unwrap().is_empty());
        assert_eq!(dead_lettered(&m), 2);
    }

    /// A cutoff set while a call is under way (the shutdown window) ends it.
    #[tokio::test(start_paused = true)]
    async fn a_cutoff_set_during_a_call_ends_it() {
        let api = Arc::new(Scripted::default());
        api.script
            .lock()
            .unwrap()
            .push_back(Outcome::Hang(Duration::from_secs(3)));
        let (s, m) = sink(api.clone(), 6);
        let (cutoff, rx) = tokio::sync::watch::channel(None);
        let deadline = Deadline::new(None, rx);
        let start = tokio::time::Instant::now();
        let set_cutoff = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cutoff.send_replace(Some(start + Duration::from_millis(1300)));
        };
        tokio::join!(s.deliver(records_of(2), &deadline), set_cutoff);
        assert_eq!(start.elapsed(), Duration::from_millis(1300));
        assert_eq!(*api.calls.lock().unwrap(), vec![1]);
        assert_eq!(dead_lettered(&m), 2);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::new(6);
        for retry in 0..20 {
            assert!(p.backoff(retry) <= p.cap);
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(samples.len() > 1);
    }
}
