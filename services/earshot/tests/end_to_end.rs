//! The storage slice end to end with the real binaries: pixel hits over HTTP
//! to `earshot-edge`, its output (local files, or moto Firehose → S3 → SQS)
//! loaded by `earshot load --once`, and the database compared with what the
//! edge wrote and with counts computed here from the raw rows. Then losses
//! before the loader, each named exactly by `earshot audit`: an event taken
//! out of a file, a Firehose batch refused past the edge's retry budget, an
//! object deleted before the loader read it.
//!
//! `earshot-edge` is taken from the same target directory (see
//! `support::edge_bin`).

mod support;

use std::collections::BTreeSet;

use earshot_domain::{TrackingEvent, Verdict};
use earshot_platform::testing::TestDb;
use earshot_testkit::edge::{
    dead_lettered_events, decode_ndjson, decode_objects, match_events_to_hits, mixed_hits,
    send_concurrently, send_sequentially, HitSpec,
};
use earshot_testkit::s3_notify::{
    notify_queue_on_object_created, queue_depth, redrive_to_dead_letter_queue,
};
use earshot_testkit::{FirehoseFault, FirehoseFaultProxy, LocalEdge, Moto};
use support::*;

const SECRET: &str = "e2e-test-listener-secret-0123456789";

/// Starts the real edge with `env`, sends it [`hits`], and stops it with
/// SIGTERM (it finalizes its open file or flushes its buffer before
/// exiting): the hits sent.
async fn hits_through_edge(env: Vec<(String, String)>) -> Vec<HitSpec> {
    let mut edge = LocalEdge::spawn(&edge_bin(), env)
        .await
        .expect("edge starts");
    let hits = hits();
    send_concurrently(&hits, &edge.base_url())
        .await
        .expect("pixel hits");
    edge.stop().await.expect("clean exit on SIGTERM");
    hits
}

/// Hits on two campaigns, each cycling valid, bot and invalid (see
/// `mixed_hits`), plus valid hits sent again verbatim: the same listener,
/// creative, episode and event on the same day, so the edge records new
/// events that must not count again.
fn hits() -> Vec<HitSpec> {
    let mut hits = mixed_hits(30, "spring-sale");
    let mut second = mixed_hits(12, "acme-q4");
    for (i, h) in second.iter_mut().enumerate() {
        h.trace_id = format!("Root=1-00000002-{:024x}", i + 1);
    }
    let repeats: Vec<HitSpec> = hits
        .iter()
        .chain(&second)
        .filter(|h| h.verdict == Verdict::Valid)
        .take(7)
        .enumerate()
        .map(|(i, h)| HitSpec {
            trace_id: format!("Root=1-00000003-{:024x}", i + 1),
            ..h.clone()
        })
        .collect();
    hits.extend(second);
    hits.extend(repeats);
    hits
}

fn edge_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [("EARSHOT_LISTENER_SECRET", SECRET)]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (id, trace id, verdict, listener, campaign) of one event.
type EventRow = (uuid::Uuid, Option<String>, String, String, Option<String>);

/// What the edge wrote is what the database holds, and every count the
/// rollups give equals a recount from the raw rows.
async fn assert_loaded_exactly(db: &TestDb, written: &[TrackingEvent]) {
    let want_ids: BTreeSet<uuid::Uuid> = written.iter().map(|e| e.id).collect();
    assert_eq!(want_ids.len(), written.len(), "the edge wrote an id twice");
    let got_ids: BTreeSet<uuid::Uuid> = event_ids(&db.pool).await.into_iter().collect();
    assert_eq!(got_ids, want_ids);
    // Row by row: the fields counting depends on arrived unchanged.
    let rows: Vec<EventRow> =
        sqlx::query_as("SELECT id, trace_id, verdict, listener, campaign FROM events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut want: Vec<EventRow> = written
        .iter()
        .map(|e| {
            (
                e.id,
                // The trace id stays in S3 (migration 33): the edge's files
                // were matched to the hits sent by it, before loading.
                None,
                e.verdict.as_str().to_owned(),
                e.listener.as_str().to_owned(),
                e.campaign.as_ref().map(|c| c.as_str().to_owned()),
            )
        })
        .collect();
    want.sort();
    assert_eq!(rows, want);

    assert_books_balance(&db.pool).await;
    let from_rollups = totals_from_rollups(&db.pool).await;
    assert_eq!(totals_from_events(&db.pool).await, from_rollups);
    assert_eq!(totals_of(written), from_rollups);
    // And the numbers the hits were built to give: 10 + 4 distinct valid
    // hits counted once each though 7 were repeated; invalid hits carry no
    // usable campaign. (Only on one UTC day: listener ids rotate at
    // midnight, and a run across it would rightly count a repeat again.)
    let days: BTreeSet<time::Date> = written.iter().map(|e| e.day()).collect();
    if days.len() == 1 {
        let expected: Totals = [
            ("".to_owned(), (14, 0, 0, 14)),
            ("acme-q4".to_owned(), (8, 4, 4, 0)),
            ("spring-sale".to_owned(), (27, 10, 10, 0)),
        ]
        .into_iter()
        .collect();
        assert_eq!(from_rollups, expected);
    }
}

#[tokio::test]
async fn edge_files_loaded_from_a_directory_hold_exactly_the_hits_sent() {
    let db = TestDb::new().await;
    let sink = temp_dir("e2e-dir");
    let sink_spec = format!("dir:{}", sink.display());
    let hits = hits_through_edge(edge_env(&[("EARSHOT_SINK", &sink_spec)])).await;

    let files = ndjson_files(&sink);
    assert!(!files.is_empty(), "the edge wrote no file");
    let mut written = Vec::new();
    for f in &files {
        written.extend(decode_ndjson(&std::fs::read(f).unwrap()).unwrap());
    }
    match_events_to_hits(&hits, &written).expect("the edge recorded each hit once");

    let s = load_once(&db.url, &sink_spec, &[]).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates, s.quarantined),
        (files.len() as u64, hits.len() as u64, 0, 0)
    );
    assert_loaded_exactly(&db, &written).await;
}

/// The sequence audit end to end: a real edge's files, one event line
/// taken out before loading (a loss between the edge and the loader), and
/// `earshot audit` names exactly that number and exits 1; with the line
/// put back in another object, it finds nothing missing and exits 0.
#[tokio::test]
async fn earshot_audit_names_the_one_event_taken_out_of_an_edge_file() {
    let db = TestDb::new().await;
    let sink = temp_dir("e2e-audit");
    let taken = temp_dir("e2e-audit-taken");
    let sink_spec = format!("dir:{}", sink.display());
    let hits = hits_through_edge(edge_env(&[("EARSHOT_SINK", &sink_spec)])).await;

    // Take the 10th numbered event out of whichever file holds it.
    let mut removed = None;
    for f in ndjson_files(&sink) {
        let text = std::fs::read_to_string(&f).unwrap();
        let (keep, out): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| !l.contains("\"seq\":10}"));
        if let [line] = out[..] {
            std::fs::write(
                &f,
                keep.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .unwrap();
            std::fs::write(taken.join("late.ndjson"), format!("{line}\n")).unwrap();
            removed = Some(TrackingEvent::decode(line.as_bytes()).unwrap());
        }
    }
    let removed = removed.expect("the edge numbered a 10th event");
    let edge_id = removed.sequence.unwrap().edge;
    load_once(&db.url, &sink_spec, &[]).await;

    let (code, audit) = audit_cli(&db.url, &["--in-flight-minutes", "0"]).await;
    assert_eq!(code, 1, "{audit:#}");
    let n = hits.len() as u64;
    assert_eq!(
        (
            &audit["total"]["numbered"],
            &audit["total"]["stored"],
            &audit["total"]["lost"]
        ),
        (&n.into(), &(n - 1).into(), &1.into())
    );
    assert_eq!(
        audit["missing"],
        serde_json::json!([{
            "edge": edge_id.as_str(),
            "lo": 10,
            "hi": 10,
            "proven_at": audit["missing"][0]["proven_at"],
            "lost": true
        }])
    );
    assert_eq!(audit["edges"][0]["tail"], "known", "the shutdown heartbeat");
    assert_eq!(audit["edges"][0]["last_heartbeat"], n);

    // The line turns up (replayed from wherever it was): nothing missing.
    load_once(&db.url, &format!("dir:{}", taken.display()), &[]).await;
    let (code, audit) = audit_cli(&db.url, &["--in-flight-minutes", "0"]).await;
    assert_eq!(code, 0, "{audit:#}");
    assert_eq!(
        (&audit["total"]["stored"], &audit["total"]["lost"]),
        (&n.into(), &0.into())
    );
    assert_eq!(audit["missing"], serde_json::json!([]));
}

#[tokio::test]
async fn edge_through_firehose_s3_and_sqs_loads_exactly_the_hits_sent() {
    const STREAM: &str = "earshot-events";
    const BUCKET: &str = "earshot-raw";
    let moto = Moto::start().await.expect("moto");
    moto.create_firehose_to_s3(STREAM, BUCKET, "events/")
        .await
        .expect("delivery stream");
    let url = notify_queue_on_object_created(&moto, BUCKET, "earshot-loader", 30)
        .await
        .expect("bucket notifications");
    let db = TestDb::new().await;
    let mut env = moto.aws_env();
    env.extend(edge_env(&[
        ("EARSHOT_SINK", "firehose"),
        ("EARSHOT_FIREHOSE_STREAM", STREAM),
    ]));
    let hits = hits_through_edge(env).await;

    let objects = moto.read_all_objects(BUCKET, "events/").await.unwrap();
    let written = decode_objects(&objects).expect("every object is NDJSON events");
    match_events_to_hits(&hits, &written).expect("the edge recorded each hit once");

    let s = load_once(&db.url, &format!("sqs:{url}"), &moto.aws_env()).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates, s.quarantined),
        (objects.len() as u64, hits.len() as u64, 0, 0)
    );
    assert_eq!(
        loaded_keys(&db.pool).await,
        objects.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));
    assert_loaded_exactly(&db, &written).await;
}

// ------------------------------------------- losses before the loader

/// How many events the edges below put in one Firehose batch: buffered
/// mode flushes at this count, and the age limit is far beyond the test, so
/// the batches are the numbers 1-5, 6-10, 11-15, 16-20 (and the shutdown
/// heartbeat on its own). The edges in the tests below stop long before
/// their first minute heartbeat is due (`HEARTBEAT_INTERVAL`, 60 s).
const BATCH: usize = 5;
const LOSS_HITS: usize = 4 * BATCH;
/// The numbers of the second batch: the one each test below loses.
const SECOND_BATCH: std::ops::RangeInclusive<u64> = (BATCH as u64 + 1)..=(2 * BATCH as u64);

const LOSS_STREAM: &str = "earshot-events";
const LOSS_BUCKET: &str = "earshot-raw";
const LOSS_PREFIX: &str = "events/";

/// The edge's environment for the loss tests: Firehose through `aws`
/// (moto, or the fault proxy in front of it), buffered in batches of
/// [`BATCH`], two attempts per batch.
fn batching_edge_env(aws: Vec<(String, String)>) -> Vec<(String, String)> {
    let batch = BATCH.to_string();
    let mut env = aws;
    env.extend(edge_env(&[
        ("EARSHOT_SINK", "firehose"),
        ("EARSHOT_FIREHOSE_STREAM", LOSS_STREAM),
        ("EARSHOT_FLUSH", "buffered"),
        ("EARSHOT_BUFFER_MAX_EVENTS", &batch),
        ("EARSHOT_BUFFER_MAX_AGE_MS", "600000"),
        ("EARSHOT_FIREHOSE_MAX_ATTEMPTS", "2"),
    ]));
    env
}

/// Starts the edge with `env`, sends it [`LOSS_HITS`] hits one after the
/// other (so the batches are in numbering order), and stops it: its stderr.
async fn numbered_hits_through_edge(env: Vec<(String, String)>) -> Vec<String> {
    let mut edge = LocalEdge::spawn(&edge_bin(), env)
        .await
        .expect("edge starts");
    send_sequentially(&mixed_hits(LOSS_HITS, "lossy-campaign"), &edge.base_url())
        .await
        .expect("a pixel never fails, even when Firehose does");
    edge.stop().await.expect("clean exit on SIGTERM");
    edge.process.stderr_lines()
}

/// The (edge, number) pairs of some events.
fn seqs_of(events: &[TrackingEvent]) -> BTreeSet<(String, u64)> {
    events
        .iter()
        .map(|e| {
            let s = e.sequence.expect("the edge numbers every event");
            (s.edge.as_str().to_owned(), s.seq)
        })
        .collect()
}

/// Every missing number `earshot audit --json` names, each with whether it
/// is lost (or in flight).
fn missing_in(audit: &serde_json::Value) -> BTreeSet<(String, u64, bool)> {
    let mut out = BTreeSet::new();
    for m in audit["missing"].as_array().expect("missing is a list") {
        let edge = m["edge"].as_str().expect("edge").to_owned();
        let lost = m["lost"].as_bool().expect("lost");
        let (lo, hi) = (m["lo"].as_u64().unwrap(), m["hi"].as_u64().unwrap());
        for seq in lo..=hi {
            assert!(
                out.insert((edge.clone(), seq, lost)),
                "{edge} {seq} named twice: {audit:#}"
            );
        }
    }
    out
}

/// `earshot audit` with the default in-flight window (15 min) just after a
/// load finds the `gone` numbers in flight, and none lost (exit 0); with no
/// window it finds exactly them lost (exit 1): no more, no less. The edge's
/// shutdown heartbeat counts all its numbers, so its tail is known.
async fn assert_audit_names_exactly(db_url: &str, gone: &BTreeSet<(String, u64)>) {
    let n = LOSS_HITS as u64;
    let k = gone.len() as u64;
    let with = |lost: bool| -> BTreeSet<(String, u64, bool)> {
        gone.iter().map(|(e, s)| (e.clone(), *s, lost)).collect()
    };
    let (code, audit) = audit_cli(db_url, &[]).await;
    assert_eq!(code, 0, "nothing is lost yet: {audit:#}");
    assert_eq!(missing_in(&audit), with(false), "{audit:#}");
    assert_eq!(
        (&audit["total"]["in_flight"], &audit["total"]["lost"]),
        (&k.into(), &0.into()),
        "{audit:#}"
    );

    let (code, audit) = audit_cli(db_url, &["--in-flight-minutes", "0"]).await;
    assert_eq!(code, 1, "{audit:#}");
    assert_eq!(missing_in(&audit), with(true), "{audit:#}");
    assert_eq!(
        audit["total"],
        serde_json::json!({
            "numbered": n, "stored": n - k, "duplicates": 0, "quarantined": 0,
            "in_flight": 0, "lost": k
        }),
        "{audit:#}"
    );
    let edge = &gone.first().expect("something is gone").0;
    assert_eq!(
        audit["edges"],
        serde_json::json!([{
            "edge": edge, "numbered": n, "last_heartbeat": n, "tail": "known"
        }]),
        "{audit:#}"
    );
}

/// A Firehose batch that fails past the edge's retry budget (two attempts,
/// both throttled, injected between the edge's real SDK client and moto):
/// the edge dead-letters it to its log, the rest lands in S3 and is loaded
/// from its notifications, and `earshot audit` names as missing exactly
/// the numbers of the dead-letter lines.
#[tokio::test]
async fn earshot_audit_names_exactly_the_numbers_of_a_batch_firehose_refused() {
    let moto = Moto::start().await.expect("moto");
    moto.create_firehose_to_s3(LOSS_STREAM, LOSS_BUCKET, LOSS_PREFIX)
        .await
        .expect("delivery stream");
    let url = notify_queue_on_object_created(&moto, LOSS_BUCKET, "earshot-loader", 30)
        .await
        .expect("bucket notifications");
    let proxy = FirehoseFaultProxy::start(moto.endpoint())
        .await
        .expect("proxy");
    // The first batch passes, the second is throttled on both its
    // attempts; every later call passes.
    proxy.push_all([
        FirehoseFault::Pass,
        FirehoseFault::Throttle,
        FirehoseFault::Throttle,
    ]);
    let db = TestDb::new().await;
    let stderr = numbered_hits_through_edge(batching_edge_env(proxy.aws_env())).await;

    assert_eq!(proxy.script_left(), 0);
    let stats = proxy.stats();
    assert_eq!(
        (stats.put_record_batch_calls, stats.records_forwarded),
        (1 + 2 + 2 + 1, 3 + 1),
        "4 batches, one of them tried twice, and the heartbeat: {stats:?}"
    );
    let dead = seqs_of(&dead_lettered_events(&stderr).expect("dead-letter lines"));
    let edge = dead.first().expect("a batch was dead-lettered").0.clone();
    assert_eq!(
        dead,
        SECOND_BATCH.map(|s| (edge.clone(), s)).collect(),
        "the second batch's numbers, in its dead-letter line"
    );

    let objects = moto
        .read_all_objects(LOSS_BUCKET, LOSS_PREFIX)
        .await
        .unwrap();
    let landed = seqs_of(&decode_objects(&objects).unwrap());
    assert_eq!(landed.len(), LOSS_HITS - BATCH);
    assert!(landed.is_disjoint(&dead), "both landed and dead-lettered");
    let s = load_once(&db.url, &format!("sqs:{url}"), &moto.aws_env()).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates, s.quarantined),
        (objects.len() as u64, landed.len() as u64, 0, 0)
    );
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));

    assert_audit_names_exactly(&db.url, &dead).await;
}

/// An object deleted after its notification was sent and before the loader
/// read it (a lifecycle rule, an operator): the loader cannot fetch it
/// (NoSuchKey) and leaves its notification for the dead-letter queue, the
/// rest loads, and `earshot audit` names exactly the object's numbers.
#[tokio::test]
async fn earshot_audit_names_exactly_the_numbers_of_an_object_deleted_before_loading() {
    const MAX_RECEIVES: u32 = 2;
    let moto = Moto::start().await.expect("moto");
    moto.create_firehose_to_s3(LOSS_STREAM, LOSS_BUCKET, LOSS_PREFIX)
        .await
        .expect("delivery stream");
    // Messages reappear 2 s after a receive that did not delete them.
    let url = notify_queue_on_object_created(&moto, LOSS_BUCKET, "earshot-loader", 2)
        .await
        .expect("bucket notifications");
    let dlq = redrive_to_dead_letter_queue(&moto, &url, "earshot-loader-dlq", MAX_RECEIVES)
        .await
        .expect("dead-letter queue");
    let db = TestDb::new().await;
    let stderr = numbered_hits_through_edge(batching_edge_env(moto.aws_env())).await;
    assert_eq!(dead_lettered_events(&stderr).unwrap().len(), 0);

    // The object holding the second batch: its numbers, read from it, then
    // it is deleted.
    let objects = moto
        .read_all_objects(LOSS_BUCKET, LOSS_PREFIX)
        .await
        .unwrap();
    let (gone_key, gone_bytes) = objects
        .iter()
        .find(|(_, bytes)| {
            let events = decode_ndjson(bytes).unwrap();
            events
                .iter()
                .any(|e| e.sequence.map(|s| s.seq) == Some(BATCH as u64 + 1))
        })
        .expect("an object holds the second batch");
    let gone = seqs_of(&decode_ndjson(gone_bytes).unwrap());
    let edge = gone.first().expect("numbers").0.clone();
    assert_eq!(gone, SECOND_BATCH.map(|s| (edge.clone(), s)).collect());
    eventually("the object notifications", String::new, || async {
        // Counted without receiving: a receive would count toward the redrive.
        (queue_depth(&moto, &url).await.unwrap() == (objects.len() as u64 + 1, 0)).then_some(())
    })
    .await;
    moto.s3()
        .delete_object()
        .bucket(LOSS_BUCKET)
        .key(gone_key)
        .send()
        .await
        .unwrap();

    let source = format!("sqs:{url}");
    let mut total = Summary::default();
    for run in 0.. {
        assert!(run < 10, "the queue never emptied");
        let s = load_once(&db.url, &source, &moto.aws_env()).await;
        total.objects_loaded += s.objects_loaded;
        total.events_new += s.events_new;
        if queue_depth(&moto, &url).await.unwrap() == (0, 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    }
    assert_eq!(
        (total.objects_loaded, total.events_new),
        (objects.len() as u64 - 1, (LOSS_HITS - BATCH) as u64)
    );
    assert_eq!(queue_depth(&moto, &dlq).await.unwrap(), (1, 0));

    assert_audit_names_exactly(&db.url, &gone).await;
}
