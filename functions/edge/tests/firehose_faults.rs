//! Throttling and partial PutRecordBatch failures, injected by a proxy
//! between the edge's real AWS SDK client and moto: retried events land
//! exactly once; events that exhaust the retry budget are dead-lettered to
//! the log, and exactly those.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use earshot_domain::{ListenerHasher, ListenerSecret, TrackingEvent, UaClassifier};
use earshot_edge::config::{SigningConfig, TrustConfig};
use earshot_edge::hit::{HitRequest, Recorder};
use earshot_edge::metrics::Metrics;
use earshot_edge::sink::firehose::{FirehoseSink, RetryPolicy, MAX_RECORD_BYTES};
use earshot_edge::sink::{Deadline, Deliver};
use earshot_testkit::edge::{
    dead_lettered_events, decode_objects, match_events_to_hits, mixed_hits, send_sequentially,
    HitSpec,
};
use earshot_testkit::{FirehoseFault, FirehoseFaultProxy, LocalEdge};
use serde_json::Value;

mod support;
use support::{emf_sum, moto_and_proxy, BUCKET, PREFIX, STREAM};

const SECRET: &str = "fault-test-listener-secret-0123456789";

async fn edge_via(proxy: &FirehoseFaultProxy, extra: &[(&str, &str)]) -> LocalEdge {
    let mut env = proxy.aws_env();
    for (k, v) in [
        ("EARSHOT_SINK", "firehose"),
        ("EARSHOT_FIREHOSE_STREAM", STREAM),
        ("EARSHOT_LISTENER_SECRET", SECRET),
        ("EARSHOT_FLUSH", "sync"),
    ]
    .iter()
    .chain(extra)
    {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    LocalEdge::spawn(Path::new(env!("CARGO_BIN_EXE_earshot-edge")), env)
        .await
        .expect("edge starts")
}

#[tokio::test]
async fn throttled_and_partially_failed_calls_still_deliver_every_event_exactly_once() {
    let (moto, proxy) = moto_and_proxy().await;
    // Sync mode and hits sent one at a time: one record per call, so the
    // script maps onto hits exactly.
    proxy.push_all([
        // hit 1: throttled, then its record fails, then accepted
        FirehoseFault::Throttle,
        FirehoseFault::FailAllRecords,
        FirehoseFault::Pass,
        // hit 2: throttled twice, then accepted
        FirehoseFault::Throttle,
        FirehoseFault::Throttle,
        FirehoseFault::Pass,
        // hit 3: its record fails once
        FirehoseFault::FailRecords(vec![0]),
    ]);
    let mut edge = edge_via(&proxy, &[]).await;
    let hits = mixed_hits(9, "retry-campaign");
    send_sequentially(&hits, &edge.base_url())
        .await
        .expect("every hit answered with the GIF");
    edge.stop().await.expect("clean exit");

    // The last call is the shutdown's heartbeat.
    let stats = proxy.stats();
    assert_eq!(proxy.script_left(), 0);
    assert_eq!(stats.put_record_batch_calls, 3 + 3 + 2 + 6 + 1);
    assert_eq!(stats.throttled_calls, 3);
    assert_eq!(stats.records_failed, 2);
    assert_eq!(stats.records_forwarded, 9 + 1);
    assert_eq!(
        stats.records_received,
        14 + 1,
        "throttled calls carried their record too"
    );

    let objects = moto.read_all_objects(BUCKET, PREFIX).await.unwrap();
    assert_eq!(objects.len(), 9 + 1, "one accepted call per hit");
    let events = decode_objects(&objects).unwrap();
    match_events_to_hits(&hits, &events).expect("each event exactly once");
    let beats: Vec<_> = objects
        .iter()
        .flat_map(|(_, o)| earshot_testkit::edge::decode_lines(o).unwrap().1)
        .collect();
    assert_eq!(beats.len(), 1, "the shutdown's heartbeat");
    assert_eq!(beats[0].seq, 9, "it counts the nine hits");
    let mut seqs: Vec<(earshot_domain::EdgeId, u64)> = events
        .iter()
        .map(|e| e.sequence.map(|s| (s.edge, s.seq)).unwrap())
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=9).map(|n| (beats[0].edge, n)).collect::<Vec<_>>(),
        "one edge numbered its hits 1 to 9, each once"
    );

    let stdout = edge.process.stdout_lines();
    assert_eq!(emf_sum(&stdout, "FirehoseRetries"), 5);
    assert_eq!(emf_sum(&stdout, "DeadLetteredEvents"), 0);
    assert_eq!(
        dead_lettered_events(&edge.process.stderr_lines())
            .unwrap()
            .len(),
        0
    );
}

/// The request of `hit`, as a player sends it.
fn raw_request(hit: &HitSpec, host: &str) -> String {
    let mut head = format!(
        "GET /v1/t?{} HTTP/1.1\r\nHost: {host}\r\nX-Amzn-Trace-Id: {}\r\n",
        hit.query, hit.trace_id
    );
    if let Some(ua) = &hit.user_agent {
        head.push_str(&format!("User-Agent: {ua}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Players that give up: each hit on a connection of its own, the request
/// written and the connection closed at once, the answer never read. All
/// connections are open before the first request goes, so requests and
/// hang-ups arrive together at connections the edge already holds.
async fn send_and_hang_up(hits: &[HitSpec], base_url: &str) {
    use tokio::io::AsyncWriteExt;
    let addr = base_url
        .strip_prefix("http://")
        .expect("an http:// base URL");
    let mut conns = Vec::new();
    for _ in hits {
        conns.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    for (hit, mut s) in hits.iter().zip(conns) {
        s.write_all(raw_request(hit, addr).as_bytes())
            .await
            .expect("send the request");
        drop(s);
    }
}

/// Players that fire a hit and hang up without waiting for the answer are
/// counted like any other: the local server once dropped nearly all of them
/// (hyper saw the EOF and dropped the handler before it ran).
#[tokio::test]
async fn hits_whose_players_hang_up_at_once_are_delivered_once() {
    let (moto, proxy) = moto_and_proxy().await;
    // Throttled calls: hits also wait out the backoff (sync mode) while
    // their players are already gone.
    proxy.push_all([
        FirehoseFault::Throttle,
        FirehoseFault::Throttle,
        FirehoseFault::Throttle,
    ]);
    let mut edge = edge_via(&proxy, &[]).await;
    let hits = mixed_hits(31, "hangup-campaign");
    let (gone, last) = hits.split_at(30);
    send_and_hang_up(gone, &edge.base_url()).await;
    // The edge still serves, and answers a hit only once it is delivered:
    // its batch goes out after those of the hits before it.
    send_sequentially(last, &edge.base_url())
        .await
        .expect("answered with the GIF");
    edge.stop().await.expect("clean exit");

    assert_eq!(proxy.script_left(), 0);
    assert_eq!(proxy.stats().throttled_calls, 3);
    let objects = moto.read_all_objects(BUCKET, PREFIX).await.unwrap();
    let events = decode_objects(&objects).unwrap();
    match_events_to_hits(&hits, &events).expect("each event exactly once");
    assert_eq!(
        dead_lettered_events(&edge.process.stderr_lines())
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn exhausted_retries_dead_letter_exactly_the_undelivered_events_to_the_log() {
    let (moto, proxy) = moto_and_proxy().await;
    // Hits 1-3 go through; hit 4 is throttled on both attempts; every
    // later attempt has all its records failed.
    proxy.push_all([
        FirehoseFault::Pass,
        FirehoseFault::Pass,
        FirehoseFault::Pass,
        FirehoseFault::Throttle,
        FirehoseFault::Throttle,
    ]);
    proxy.set_default(FirehoseFault::FailAllRecords);
    let mut edge = edge_via(&proxy, &[("EARSHOT_FIREHOSE_MAX_ATTEMPTS", "2")]).await;
    let hits = mixed_hits(9, "doomed-campaign");
    send_sequentially(&hits, &edge.base_url())
        .await
        .expect("a pixel never fails, even when Firehose does");
    edge.stop().await.expect("clean exit");

    // The last two calls are the shutdown's heartbeat, dead-lettered too.
    let stats = proxy.stats();
    assert_eq!(stats.put_record_batch_calls, 3 + 6 * 2 + 2);
    assert_eq!(stats.records_forwarded, 3);
    assert_eq!(stats.throttled_calls, 2);
    assert_eq!(stats.records_failed, 5 * 2 + 2);

    let delivered = decode_objects(&moto.read_all_objects(BUCKET, PREFIX).await.unwrap()).unwrap();
    match_events_to_hits(&hits[..3], &delivered).expect("the first three landed");

    let stderr = edge.process.stderr_lines();
    let dead = dead_lettered_events(&stderr).unwrap();
    match_events_to_hits(&hits[3..], &dead).expect("exactly the other six are in the log");
    let dead_lines: Vec<Value> = stderr
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["dead_letter"] == Value::Bool(true))
        .collect();
    assert_eq!(
        dead_lines.len(),
        6 + 1,
        "one record per hit (and the heartbeat), one log line per record"
    );
    // The dead letters are exactly the numbers missing from S3, and the
    // heartbeat in the log says how far the edge numbered.
    let mut dead_seqs: Vec<u64> = dead.iter().map(|e| e.sequence.unwrap().seq).collect();
    dead_seqs.sort();
    assert_eq!(dead_seqs, (4..=9).collect::<Vec<_>>());
    let mut landed_seqs: Vec<u64> = delivered.iter().map(|e| e.sequence.unwrap().seq).collect();
    landed_seqs.sort();
    assert_eq!(landed_seqs, vec![1, 2, 3]);
    for line in &dead_lines {
        assert_eq!(line["level"], "ERROR");
        let reason = line["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("firehose: 2 attempts failed, last error: "),
            "{reason}"
        );
        assert!(reason.contains("ServiceUnavailableException"), "{reason}");
    }
    let ids: HashSet<_> = delivered.iter().chain(&dead).map(|e| e.id).collect();
    assert_eq!(ids.len(), 9, "nothing both delivered and dead-lettered");
    assert_eq!(
        emf_sum(&edge.process.stdout_lines(), "DeadLetteredEvents"),
        6 + 1
    );
}

/// Events big enough (512-byte user agents, long trace ids) that a few
/// thousand fill several 1,000 KiB Firehose records.
fn big_events(n: usize) -> Vec<TrackingEvent> {
    let rec = Recorder {
        listener: ListenerHasher::new(
            ListenerSecret::new(SECRET).unwrap(),
            earshot_edge::config::DEFAULT_LISTENER_PERIOD,
        ),
        signing: SigningConfig::default(),
        ua: UaClassifier::builtin(),
        trust: TrustConfig::default(),
        geo: earshot_edge::geo::Geo::builtin(),
        sequencer: earshot_edge::sequence::Sequencer::new(),
    };
    let now = time::OffsetDateTime::now_utc();
    (0..n)
        .map(|i| {
            let mut h = http::HeaderMap::new();
            let ua = format!("Overcast/3.0 (iOS podcast app; {i:06}) {}", "x".repeat(480));
            h.insert("user-agent", ua.parse().unwrap());
            h.insert(
                "x-amzn-trace-id",
                format!("Root=1-00000000-{i:024x};{}", "p".repeat(80))
                    .parse()
                    .unwrap(),
            );
            let q = format!("c=big-campaign&cr=cr_30s&ep=ep{i}&sh=show&pos=mid&ev=impression");
            rec.record(
                &HitRequest {
                    method: &http::Method::GET,
                    path: "/v1/t",
                    query: Some(&q),
                    headers: &h,
                    source_ip: Some("192.0.2.10".parse().unwrap()),
                    runtime_trace_id: None,
                    deadline: None,
                },
                now,
            )
        })
        .collect()
}

#[tokio::test]
async fn partial_failures_resend_only_the_failed_records_through_the_real_sdk_client() {
    let (moto, proxy) = moto_and_proxy().await;
    // About 1,110 bytes a line: 2,700 lines need a third record, and fit in it.
    let events = big_events(2700);
    let lines: Vec<Vec<u8>> = events.iter().map(TrackingEvent::to_ndjson).collect();
    let total: usize = lines.iter().map(Vec::len).sum();
    let (records, _) = earshot_edge::sink::firehose::pack(lines.clone());
    assert_eq!(records.len(), 3, "{total} bytes pack into three records");
    assert!(total > 2 * MAX_RECORD_BYTES);

    // Call 1: records 0 and 2 fail; call 2 (those two): the second fails
    // again; call 3: the last one is accepted.
    proxy.push_all([
        FirehoseFault::FailRecords(vec![0, 2]),
        FirehoseFault::FailRecords(vec![1]),
        FirehoseFault::Pass,
    ]);
    // The edge's client: the SDK's own retries off, ours only.
    let client = earshot_testkit::moto::firehose_client(&proxy.endpoint());
    let client = aws_sdk_firehose::Client::from_conf(
        client
            .config()
            .to_builder()
            .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
            .build(),
    );
    let metrics = Arc::new(Metrics::new("fault-test"));
    let sink = FirehoseSink::new(
        client,
        STREAM,
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
        },
        metrics.clone(),
    );
    sink.deliver(lines, &Deadline::none()).await;

    let stats = proxy.stats();
    assert_eq!(
        stats.calls.iter().map(|c| c.records).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(stats.records_forwarded, 3);
    assert_eq!(stats.records_failed, 3);
    let mut sizes = stats.forwarded_record_sizes.clone();
    sizes.sort();
    let mut want: Vec<usize> = records.iter().map(|r| r.data.len()).collect();
    want.sort();
    assert_eq!(sizes, want, "each record reached moto whole, once");

    let objects = moto.read_all_objects(BUCKET, PREFIX).await.unwrap();
    assert_eq!(objects.len(), 3);
    let landed = decode_objects(&objects).unwrap();
    assert_eq!(landed.len(), 2700);
    let mut got: Vec<_> = landed.iter().map(|e| e.id).collect();
    got.sort();
    let mut sent: Vec<_> = events.iter().map(|e| e.id).collect();
    sent.sort();
    assert_eq!(got, sent, "every event exactly once");
    let retries = metrics
        .counters
        .retries
        .load(std::sync::atomic::Ordering::Relaxed);
    let dead = metrics
        .counters
        .dead_lettered
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((retries, dead), (2, 0));
}
