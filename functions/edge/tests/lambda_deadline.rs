//! The real binary under the Lambda Runtime API emulator, with a fault
//! proxy between its AWS SDK client and moto: Firehose that hangs, that
//! accepts and then never answers, and that is slow at shutdown. Lambda's
//! limits hold (the GIF before the invocation's deadline, the flush inside
//! the 500 ms shutdown window) and every hit ends in S3 or in a
//! dead-letter log line, none in neither.

use std::collections::HashMap;
use std::time::Duration;

use earshot_domain::TrackingEvent;
use earshot_testkit::edge::{dead_lettered_events, decode_objects};
use earshot_testkit::lambda::LAMBDA_SHUTDOWN_WINDOW;
use earshot_testkit::{FirehoseFault, FirehoseFaultProxy, InvokeOptions, LambdaFunction, Moto};
use serde_json::Value;

mod support;
use support::{fixture, lambda_function, moto_and_proxy, BUCKET, PREFIX};

const SECRET: &str = "deadline-test-listener-secret-0123456789";
/// The template's function timeout.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the edge's 3 s per-attempt timeout.
const HANG: Duration = Duration::from_secs(4);

struct Stack {
    moto: Moto,
    proxy: FirehoseFaultProxy,
    function: LambdaFunction,
}

async fn start(extra: &[(&str, &str)]) -> Stack {
    let (moto, proxy) = moto_and_proxy().await;
    let function = lambda_function(proxy.aws_env(), SECRET, extra).await;
    Stack {
        moto,
        proxy,
        function,
    }
}

/// A Function URL GET for hit `i` (its own cache buster and trace id).
fn hit_event(i: usize) -> Value {
    let mut e = fixture("function-url-get.json");
    let q = format!("c=spring-sale&cr=cr_30s&ep=ep{i}&ev=impression&cb={i}");
    e["rawQueryString"] = Value::String(q.clone());
    e["queryStringParameters"] = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    e
}

fn trace_of(i: usize) -> String {
    format!("Root=1-6745d2a0-{i:024x}")
}

impl Stack {
    /// Invokes hit `i` with the template's timeout; fails unless the GIF
    /// came back before the deadline (the emulator answers a late one with
    /// a `Sandbox.Timedout` error).
    async fn hit(&mut self, i: usize) {
        let resp = self
            .function
            .invoke_with(
                &hit_event(i),
                InvokeOptions {
                    trace_id: Some(trace_of(i)),
                    timeout: Some(FUNCTION_TIMEOUT),
                },
            )
            .await
            .expect("answered before the invocation's deadline");
        assert_eq!(resp["statusCode"], 200, "{resp}");
        assert_eq!(resp["headers"]["content-type"], "image/gif", "{resp}");
    }

    /// Every line in S3, by event id.
    async fn in_s3(&self) -> HashMap<uuid::Uuid, Vec<TrackingEvent>> {
        let objects = self.moto.read_all_objects(BUCKET, PREFIX).await.unwrap();
        let mut by_id: HashMap<_, Vec<_>> = HashMap::new();
        for ev in decode_objects(&objects).unwrap() {
            by_id.entry(ev.id).or_default().push(ev);
        }
        by_id
    }

    fn dead_lettered(&self) -> Vec<TrackingEvent> {
        dead_lettered_events(&self.function.process().stderr_lines()).unwrap()
    }
}

/// The trace ids of `events`, sorted.
fn traces<'a>(events: impl IntoIterator<Item = &'a TrackingEvent>) -> Vec<String> {
    let mut v: Vec<String> = events
        .into_iter()
        .map(|e| e.trace_id.clone().unwrap())
        .collect();
    v.sort();
    v
}

/// Every call hangs 4 s under a 10 s function timeout: the six attempts
/// allowed would take over 18 s; the edge stops at its deadline, writes the
/// event to the dead-letter log and answers in time.
#[tokio::test]
async fn a_hanging_firehose_is_dead_lettered_before_the_deadline_and_the_gif_is_in_time() {
    let mut stack = start(&[]).await;
    stack.proxy.set_default(FirehoseFault::Hang(HANG));
    stack.hit(1).await;

    let stats = stack.proxy.stats();
    assert_eq!(stats.records_forwarded, 0);
    // 3 attempts of 3 s, and a fourth when the backoffs' jitter left time
    // for one before the deadline.
    assert!((3..=4).contains(&stats.put_record_batch_calls), "{stats:?}");
    assert!(stack.in_s3().await.is_empty());
    let dead = stack.dead_lettered();
    assert_eq!(traces(&dead), vec![trace_of(1)]);
    let line = stack
        .function
        .process()
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("\"dead_letter\":true"))
        .unwrap();
    assert!(
        line.contains("firehose: the deadline came after "),
        "{line}"
    );
}

/// Firehose accepts every call and never answers in time: each attempt
/// lands a copy in S3 and times out, until the deadline dead-letters the
/// event too. Every copy is the same event (one id), so the loader counts
/// it once whichever copies it reads, the dead letter's included.
#[tokio::test]
async fn a_firehose_that_accepts_then_times_out_leaves_copies_of_one_event_only() {
    let mut stack = start(&[]).await;
    stack.proxy.set_default(FirehoseFault::AcceptThenHang(HANG));
    stack.hit(1).await;
    stack.proxy.set_default(FirehoseFault::Pass);
    stack.hit(2).await;

    let stats = stack.proxy.stats();
    let s3 = stack.in_s3().await;
    assert_eq!(s3.len(), 2, "two events, however many copies");
    let dead = stack.dead_lettered();
    assert_eq!(traces(&dead), vec![trace_of(1)]);
    let copies = &s3[&dead[0].id];
    assert_eq!(
        copies.len(),
        stats.records_forwarded - 1,
        "one copy per accepted attempt of hit 1"
    );
    assert!(copies.len() >= 3, "{stats:?}");
    assert!(copies.iter().all(|c| c.to_ndjson() == dead[0].to_ndjson()));
    let second: Vec<_> = s3.values().filter(|v| v[0].id != dead[0].id).collect();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].len(), 1, "hit 2 went through once");
    assert_eq!(traces(second[0]), vec![trace_of(2)]);
}

/// Buffered mode: hits 1-3 fill a batch and go out; Firehose then stalls,
/// and hits 4-5 are still buffered when Lambda shuts the environment down.
/// The hook flushes within Lambda's 500 ms window: what Firehose did not
/// take by then is in the dead-letter log, and the process exits before
/// SIGKILL.
#[tokio::test]
async fn buffered_shutdown_with_a_slow_firehose_ends_inside_lambdas_window() {
    let mut stack = start(&[
        ("EARSHOT_FLUSH", "buffered"),
        ("EARSHOT_BUFFER_MAX_EVENTS", "3"),
        ("EARSHOT_BUFFER_MAX_AGE_MS", "600000"),
    ])
    .await;
    for i in 1..=3 {
        stack.hit(i).await;
    }
    // The size flush runs after the third answer: wait for its object.
    let mut waited = Duration::ZERO;
    while stack.in_s3().await.len() < 3 {
        assert!(
            waited < Duration::from_secs(30),
            "the first batch never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    stack.proxy.set_default(FirehoseFault::Hang(HANG));
    for i in 4..=5 {
        stack.hit(i).await;
    }

    let report = stack
        .function
        .shutdown_within(LAMBDA_SHUTDOWN_WINDOW)
        .await
        .unwrap();
    assert!(report.sigterm);
    assert!(
        !report.killed_after_grace,
        "finished inside Lambda's window"
    );
    assert!(report.status.success(), "{:?}", report.status);

    let s3 = stack.in_s3().await;
    assert!(s3.values().all(|copies| copies.len() == 1));
    assert_eq!(
        traces(s3.values().flatten()),
        (1..=3).map(trace_of).collect::<Vec<_>>()
    );
    assert_eq!(
        traces(&stack.dead_lettered()),
        (4..=5).map(trace_of).collect::<Vec<_>>()
    );
}
