//! The real binary in local mode, `EARSHOT_SINK=firehose`, against moto's
//! Firehose (ExtendedS3 to a bucket): hits over HTTP, SIGTERM, then every
//! S3 object is read back and decoded.

use std::path::Path;

use earshot_domain::{ListenerHasher, ListenerSecret, TrackingEvent, Verdict};
use earshot_testkit::edge::{decode_objects, match_events_to_hits, mixed_hits, send_concurrently};
use earshot_testkit::LocalEdge;

mod support;
use support::{emf_sum, moto_with_stream, BUCKET, PREFIX, STREAM};

const SECRET: &str = "moto-test-listener-secret-0123456789";
const HITS: usize = 30;

fn edge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_earshot-edge"))
}

fn env(moto_endpoint: &str, flush: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = earshot_testkit::moto::aws_env(moto_endpoint);
    v.extend(
        [
            ("EARSHOT_SINK", "firehose"),
            ("EARSHOT_FIREHOSE_STREAM", STREAM),
            ("EARSHOT_LISTENER_SECRET", SECRET),
        ]
        .iter()
        .chain(flush)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    v
}

fn check_listeners(events: &[TrackingEvent]) {
    let hasher = ListenerHasher::new(
        ListenerSecret::new(SECRET).unwrap(),
        earshot_edge::config::DEFAULT_LISTENER_PERIOD,
    );
    for ev in events {
        let ua = ev.ua.as_deref().unwrap_or("");
        let want = hasher.listener_id(ev.day(), "127.0.0.1".parse().unwrap(), ua);
        assert_eq!(ev.listener, want, "listener of {}", ev.id);
    }
}

async fn run(flush: &[(&str, &str)]) -> (Vec<(String, Vec<u8>)>, Vec<TrackingEvent>, Vec<String>) {
    let moto = moto_with_stream().await;
    let mut edge = LocalEdge::spawn(edge_bin(), env(moto.endpoint(), flush))
        .await
        .expect("edge starts");
    let hits = mixed_hits(HITS, "spring-sale");
    send_concurrently(&hits, &edge.base_url())
        .await
        .expect("pixel hits");
    edge.stop().await.expect("clean exit on SIGTERM");
    let objects = moto
        .read_all_objects(BUCKET, PREFIX)
        .await
        .expect("objects");
    let events = decode_objects(&objects).expect("every object is NDJSON events");
    match_events_to_hits(&hits, &events).expect("exactly the events sent");
    check_listeners(&events);
    let stdout = edge.process.stdout_lines();
    assert_eq!(
        (
            emf_sum(&stdout, "HitsValid"),
            emf_sum(&stdout, "HitsBot"),
            emf_sum(&stdout, "HitsInvalid"),
            emf_sum(&stdout, "DeadLetteredEvents"),
        ),
        (10, 10, 10, 0)
    );
    // Lines handed to Firehose: the hits' and the shutdown's heartbeat,
    // which counts every hit.
    assert_eq!(emf_sum(&stdout, "BatchEvents"), HITS as u64 + 1);
    let beats: Vec<_> = objects
        .iter()
        .flat_map(|(_, o)| earshot_testkit::edge::decode_lines(o).unwrap().1)
        .collect();
    assert_eq!(
        beats.iter().map(|b| b.seq).collect::<Vec<_>>(),
        vec![HITS as u64]
    );
    let mut seqs: Vec<_> = events.iter().map(|e| e.sequence.unwrap()).collect();
    seqs.sort_by_key(|s| s.seq);
    assert!(seqs.iter().all(|s| s.edge == beats[0].edge));
    assert_eq!(
        seqs.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=HITS as u64).collect::<Vec<_>>()
    );
    (objects, events, stdout)
}

#[tokio::test]
async fn sync_mode_lands_exactly_the_sent_events_in_s3() {
    let (objects, events, stdout) = run(&[("EARSHOT_FLUSH", "sync")]).await;
    assert_eq!(events.len(), HITS);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.verdict == Verdict::Valid)
            .count(),
        10
    );
    // moto writes one object per call, and sync mode makes one call per
    // batch of whatever queued up meanwhile.
    assert_eq!(objects.len() as u64, emf_sum(&stdout, "Batches"));
    assert!(objects.iter().all(|(k, _)| k.starts_with(PREFIX)));
}

#[tokio::test]
async fn buffered_mode_packs_all_events_into_one_object_flushed_at_sigterm() {
    // Limits far above the test's size and duration: only SIGTERM flushes.
    let (objects, events, stdout) = run(&[
        ("EARSHOT_FLUSH", "buffered"),
        ("EARSHOT_BUFFER_MAX_EVENTS", "1000"),
        ("EARSHOT_BUFFER_MAX_AGE_MS", "600000"),
    ])
    .await;
    assert_eq!(events.len(), HITS);
    assert_eq!(objects.len(), 1, "one call, one record, one object");
    assert_eq!(emf_sum(&stdout, "Batches"), 1);
    assert_eq!(emf_sum(&stdout, "BatchRecords"), 1);
}
