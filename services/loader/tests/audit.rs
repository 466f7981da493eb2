//! The sequence ledger and `earshot audit` (issue 30): what the edges
//! numbered against what the loader stored, with losses injected between
//! the edge and the loader. Real PostgreSQL, the real loader, a directory
//! source.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use earshot_domain::{EdgeId, EdgeSeq, EventKind, Heartbeat, TrackingEvent, Verdict};
use earshot_platform::audit::{audit, Audit, AuditOptions, Figures, Tail, DEFAULT_IN_FLIGHT};
use earshot_platform::testing::TestDb;
use sqlx::PgPool;
use support::*;
use time::macros::datetime;
use time::OffsetDateTime;

const BASE: OffsetDateTime = datetime!(2026-11-27 10:00 UTC);

/// Events `seqs` of `edge`, the event numbered n at BASE + n seconds.
fn numbered(edge: EdgeId, seqs: impl IntoIterator<Item = u64>) -> Vec<TrackingEvent> {
    seqs.into_iter()
        .map(|n| {
            let mut e = ev(
                BASE + time::Duration::seconds(n as i64),
                "c1",
                "cr1",
                Some("e1"),
                EventKind::Impression,
                n as u32,
                Verdict::Valid,
            );
            e.sequence = Some(EdgeSeq { edge, seq: n });
            e
        })
        .collect()
}

fn heartbeat(edge: EdgeId, seq: u64) -> Vec<u8> {
    Heartbeat {
        edge,
        seq,
        ts: BASE + time::Duration::seconds(seq as i64) + time::Duration::milliseconds(500),
    }
    .to_ndjson()
}

/// An object of `events`, then the `beats` lines.
fn object(events: &[TrackingEvent], beats: &[Vec<u8>]) -> Vec<u8> {
    let mut out = ndjson(events);
    for b in beats {
        out.extend_from_slice(b);
    }
    out
}

/// The audit of the hours from BASE to BASE + 3 h, `now` minutes after BASE.
async fn audit_at(pool: &PgPool, minutes_after: i64) -> Audit {
    audit(
        pool,
        AuditOptions {
            from: BASE,
            to: BASE + time::Duration::hours(3),
            now: BASE + time::Duration::minutes(minutes_after),
            in_flight: DEFAULT_IN_FLIGHT,
        },
    )
    .await
    .expect("the audit runs")
}

fn tail_of(a: &Audit, edge: EdgeId) -> Tail {
    a.edges
        .iter()
        .find(|e| e.edge == edge.as_str())
        .expect("the edge is audited")
        .tail
}

#[tokio::test]
async fn a_normal_run_has_nothing_missing_and_every_tail_known() {
    let db = TestDb::new().await;
    let dir = temp_dir("audit-normal");
    let (a, b) = (EdgeId::generate(), EdgeId::generate());
    // Edge a's numbers across two objects and an hour boundary (3599 s).
    write_object(
        &dir,
        "o1.ndjson",
        &object(&numbered(a, 1..=3000), &[heartbeat(a, 2500)]),
    );
    write_object(
        &dir,
        "o2.ndjson",
        &object(
            &[numbered(a, 3001..=4000), numbered(b, 1..=50)].concat(),
            &[heartbeat(a, 4000), heartbeat(b, 50)],
        ),
    );
    let run = load_dir(&db.pool, &dir).await;
    assert_eq!(
        (run.objects_loaded, run.events_new, run.quarantined),
        (2, 4050, 0)
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM edge_heartbeats").await,
        3
    );

    let report = audit_at(&db.pool, 180).await;
    assert_eq!(
        report.total,
        Figures {
            numbered: 4050,
            stored: 4050,
            ..Figures::default()
        }
    );
    assert!(!report.any_lost());
    assert_eq!(report.missing, vec![]);
    assert_eq!(
        (tail_of(&report, a), tail_of(&report, b)),
        (Tail::Known, Tail::Known)
    );
    // Per hour: 10:00 holds a's 1–3599 and b's 1–50, 11:00 a's 3600–4000.
    let hours: Vec<(u8, u64)> = report
        .hours
        .iter()
        .map(|h| (h.hour.hour(), h.total.stored))
        .collect();
    assert_eq!(hours, vec![(10, 3599 + 50), (11, 401)]);
    assert_eq!(report.hours[1].edges[a.as_str()].stored, 401);
    // Compact: a run per edge, object and hour, not a row per event.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM edge_seq_ranges").await,
        4
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn events_removed_from_an_object_before_loading_are_exactly_the_missing_set() {
    let db = TestDb::new().await;
    let dir = temp_dir("audit-removed");
    let edge = EdgeId::generate();
    let removed: BTreeSet<u64> = [1, 7, 8, 9, 1200, 3599, 3600, 4999].into();
    let kept =
        |r: std::ops::RangeInclusive<u64>| numbered(edge, r.filter(|n| !removed.contains(n)));
    write_object(&dir, "o1.ndjson", &object(&kept(1..=2500), &[]));
    write_object(
        &dir,
        "o2.ndjson",
        &object(&kept(2501..=4999), &[heartbeat(edge, 5000)]),
    );
    // 5000 is numbered (the heartbeat says so) but never arrives either.
    let removed: Vec<u64> = removed.into_iter().chain([5000]).collect();
    load_dir(&db.pool, &dir).await;

    // Long after: all of them lost, exactly those.
    let report = audit_at(&db.pool, 180).await;
    assert_eq!(report.lost_seqs(edge.as_str()), removed);
    assert_eq!(
        report.total,
        Figures {
            numbered: 5000,
            stored: 5000 - 9,
            lost: 9,
            ..Figures::default()
        }
    );
    assert!(report.any_lost());
    assert_eq!(tail_of(&report, edge), Tail::Known);
    // Right after the last of them was numbered: the ones proven within
    // the in-flight window are still in flight, the others lost.
    let early = audit_at(&db.pool, 83 + 10).await; // 4999 s ≈ 83 min
    assert_eq!(
        early
            .missing
            .iter()
            .filter(|m| !m.lost)
            .flat_map(|m| m.lo..=m.hi)
            .collect::<Vec<_>>(),
        vec![4999, 5000]
    );
    assert_eq!((early.total.in_flight, early.total.lost), (2, 7));
}

#[tokio::test]
async fn duplicates_are_counted_apart_never_hide_a_gap_and_a_replay_adds_nothing() {
    let db = TestDb::new().await;
    let dir = temp_dir("audit-duplicates");
    let edge = EdgeId::generate();
    let all = numbered(edge, 1..=110);
    // o1: 1–100. o2, a Firehose retry: 90–100 again (same ids), then
    // 102–110 with 105 twice; 101 never arrives.
    write_object(&dir, "o1.ndjson", &object(&all[..100], &[]));
    let mut retry = all[89..100].to_vec();
    retry.extend_from_slice(&all[101..110]);
    retry.push(all[104].clone());
    write_object(&dir, "o2.ndjson", &object(&retry, &[heartbeat(edge, 110)]));
    let run = load_dir(&db.pool, &dir).await;
    assert_eq!((run.events_new, run.duplicates), (109, 12));

    let report = audit_at(&db.pool, 180).await;
    assert_eq!(
        report.total,
        Figures {
            numbered: 110,
            stored: 109,
            duplicates: 12,
            lost: 1,
            ..Figures::default()
        }
    );
    assert_eq!(report.lost_seqs(edge.as_str()), vec![101]);

    // The same objects delivered again (an SQS redelivery, a replay):
    // skipped whole, the ledger unchanged.
    let ledger = "SELECT count(*) FROM edge_seq_ranges";
    let ranges = count(&db.pool, ledger).await;
    let replay = load_dir(&db.pool, &dir).await;
    assert_eq!((replay.objects_loaded, replay.objects_skipped), (0, 2));
    assert_eq!(count(&db.pool, ledger).await, ranges);
    assert_eq!(audit_at(&db.pool, 180).await, report);
    // A copy under another key (Firehose delivering a batch twice): every
    // line a duplicate, the gap still there.
    std::fs::copy(dir.join("o2.ndjson"), dir.join("o2-again.ndjson")).unwrap();
    let again = load_dir(&db.pool, &dir).await;
    assert_eq!((again.objects_loaded, again.events_new), (1, 0));
    let after = audit_at(&db.pool, 180).await;
    assert_eq!(after.lost_seqs(edge.as_str()), vec![101]);
    assert_eq!((after.total.stored, after.total.duplicates), (109, 12 + 21));
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_restarted_edge_is_a_new_edge_and_a_tail_without_heartbeat_is_unknown_not_lost() {
    let db = TestDb::new().await;
    let dir = temp_dir("audit-restart");
    let (killed, restarted, cut) = (EdgeId::generate(), EdgeId::generate(), EdgeId::generate());
    // `killed` numbered 1–50, its last heartbeat at 40: whatever it
    // numbered after 50 is unknown. Its restart is another edge, from 1.
    // `cut` said 30 at its shutdown, but only 1–25 arrived.
    write_object(
        &dir,
        "o1.ndjson",
        &object(
            &[
                numbered(killed, 1..=50),
                numbered(restarted, 1..=20),
                numbered(cut, 1..=25),
            ]
            .concat(),
            &[
                heartbeat(killed, 40),
                heartbeat(restarted, 20),
                heartbeat(cut, 30),
            ],
        ),
    );
    load_dir(&db.pool, &dir).await;
    let report = audit_at(&db.pool, 180).await;
    assert_eq!(
        (
            tail_of(&report, killed),
            tail_of(&report, restarted),
            tail_of(&report, cut)
        ),
        (Tail::Unknown, Tail::Known, Tail::Known)
    );
    assert_eq!(report.lost_seqs(killed.as_str()), Vec::<u64>::new());
    assert_eq!(report.lost_seqs(restarted.as_str()), Vec::<u64>::new());
    assert_eq!(report.lost_seqs(cut.as_str()), vec![26, 27, 28, 29, 30]);
    assert_eq!(report.total.numbered, 50 + 20 + 30);
    // While the killed edge's last event is young, its tail is open.
    let young = audit(
        &db.pool,
        AuditOptions {
            from: BASE,
            to: BASE + time::Duration::hours(1),
            now: BASE + time::Duration::seconds(50 + 60),
            in_flight: Duration::from_secs(15 * 60),
        },
    )
    .await
    .unwrap();
    assert_eq!(tail_of(&young, killed), Tail::Open);
}

#[tokio::test]
async fn a_numbered_line_that_is_quarantined_arrived_and_is_not_missing() {
    let db = TestDb::new().await;
    let dir = temp_dir("audit-quarantine");
    let edge = EdgeId::generate();
    let events = numbered(edge, 1..=10);
    let mut bytes = ndjson(&events[..4]);
    let bad = String::from_utf8(events[4].to_ndjson())
        .unwrap()
        .replace("\"verdict\":\"valid\"", "\"verdict\":\"perhaps\"");
    bytes.extend_from_slice(bad.as_bytes());
    bytes.extend_from_slice(&object(&events[5..], &[heartbeat(edge, 10)]));
    bytes.extend_from_slice(b"not json at all\n");
    write_object(&dir, "o1.ndjson", &bytes);
    let run = load_dir(&db.pool, &dir).await;
    assert_eq!((run.events_new, run.quarantined), (9, 2));
    let report = audit_at(&db.pool, 180).await;
    assert_eq!(
        report.total,
        Figures {
            numbered: 10,
            stored: 9,
            quarantined: 1,
            ..Figures::default()
        }
    );
    assert!(!report.any_lost());
}
