//! Through every tier: earshot-traffic → earshot-edge (local mode) → moto
//! Firehose → S3 → SQS → `earshot load` → PostgreSQL → `earshot serve`,
//! and the API's report equals the report the generator expects, row by row.
//!
//! Each test runs its own moto, database, edge, loader and API. Waits poll
//! for exact conditions (see `support::PATIENCE`); nothing asserts a time.

mod support;

use earshot_testkit::FirehoseFault;
use earshot_traffic::{Amount, Burst, CampaignSpec, Generator, Hit, Mix, Plan, SendOptions};
use support::{expected_for, match_hits, Flush, Stack, StackOptions};

fn campaigns() -> Vec<CampaignSpec> {
    vec![
        CampaignSpec {
            id: "spring-sale".into(),
            creatives: vec!["cr_15s".into(), "cr_30s".into(), "cr_60s".into()],
            weight: 3,
        },
        CampaignSpec {
            id: "podco-launch".into(),
            creatives: vec!["host-read".into()],
            weight: 1,
        },
    ]
}

fn plan(seed: u64, rate: f64, amount: Amount) -> Plan {
    Plan {
        seed,
        campaigns: campaigns(),
        listeners: 400,
        bots: 30,
        mix: Mix {
            bot_share: 0.06,
            forged_share: 0.03,
            duplicate_share: 0.06,
            ..Mix::default()
        },
        rate,
        amount,
        ..Plan::default()
    }
}

fn hits_of(plan: &Plan) -> Vec<Hit> {
    let keys = earshot_domain::SigningKeys::parse(support::SIGNING_KEYS).unwrap();
    Generator::all(plan, &keys).unwrap()
}

/// Sends `hits` to the stack's edge; every one must get the GIF.
async fn send(stack: &Stack, hits: &[Hit], concurrency: usize) {
    let opts = SendOptions {
        concurrency,
        ..SendOptions::new(stack.pixel_url())
    };
    let report = earshot_traffic::send(hits, &opts).await.unwrap();
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} hits got no GIF, e.g. {:?}\n{}",
        failures.len(),
        hits.len(),
        &failures[..failures.len().min(5)],
        stack.logs()
    );
}

/// After the traffic: the edge stops (delivering what it holds), its
/// metrics and S3 both hold exactly one event per hit, the loader drains,
/// and the API reports exactly what the generator expects. Returns the
/// number of S3 objects.
async fn settle_and_compare(stack: &mut Stack, hits: &[Hit]) -> usize {
    let tally = stack.stop_edge().await.unwrap();
    assert_eq!(
        (tally.hits(), tally.dead_lettered, tally.dead_letters.len()),
        (hits.len() as u64, 0, 0),
        "the edge's metrics: {tally:?}\n{}",
        stack.logs()
    );
    let (objects, events) = stack.events_in_s3().await.unwrap();
    let days = match_hits(hits, &events).unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack
        .wait_drained(objects, hits.len())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(quarantined, 0, "{}", stack.logs());
    let expected = expected_for(hits, &days);
    stack
        .assert_reports_equal(&expected)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let verify = stack.earshot(&["verify"]).await.unwrap();
    assert!(verify.starts_with("ok:"), "earshot verify: {verify}");
    // Every number the edge gave out is stored, none missing even with no
    // in-flight window (exit 0), and the heartbeats count them all.
    let audit = stack
        .earshot(&["audit", "--in-flight-minutes", "0"])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let n = hits.len();
    assert!(
        audit.contains(&format!(
            ": numbered {n} stored {n} duplicates 0 quarantined 0 in_flight 0 lost 0 "
        )),
        "earshot audit: {audit}"
    );
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_reports_exactly_what_the_generator_sent() {
    let plan = plan(20261127, 300.0, Amount::Total(2000));
    let hits = hits_of(&plan);
    let mut stack = Stack::start(
        &plan,
        StackOptions {
            flush: Flush::Sync,
            firehose_proxy: false,
        },
    )
    .await
    .unwrap();
    send(&stack, &hits, 16).await;
    settle_and_compare(&mut stack, &hits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10x_peak_loses_nothing_and_counts_exactly() {
    // 100 hits/s for 3 s, 1,000 hits/s for 2 s, 100 hits/s for 3 s.
    let plan = Plan {
        burst: Some(Burst {
            at: 3.0,
            seconds: 2.0,
            factor: 10.0,
        }),
        ..plan(7, 100.0, Amount::Seconds(8.0))
    };
    let hits = hits_of(&plan);
    assert_eq!(hits.len(), 300 + 2000 + 300);
    let mut stack = Stack::start(
        &plan,
        StackOptions {
            flush: Flush::Buffered {
                max_events: 500,
                max_age_ms: 500,
            },
            firehose_proxy: false,
        },
    )
    .await
    .unwrap();
    send(&stack, &hits, 64).await;
    let objects = settle_and_compare(&mut stack, &hits).await;
    // Buffered mode packs many events into each record (and moto writes
    // one object per call): fewer objects than events.
    assert!(
        objects < hits.len(),
        "{objects} objects for {} events: nothing was packed",
        hits.len()
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(events, hits.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_restart_and_a_firehose_partial_failure_episode_keep_counts_exact() {
    let plan = plan(99, 300.0, Amount::Total(2400));
    let hits = hits_of(&plan);
    let mut stack = Stack::start(
        &plan,
        StackOptions {
            flush: Flush::Sync,
            firehose_proxy: true,
        },
    )
    .await
    .unwrap();
    let (first, rest) = hits.split_at(800);
    let (second, third) = rest.split_at(800);

    send(&stack, first, 16).await;
    // Kill the loader once it is at work: whatever it holds is neither
    // committed nor acknowledged, or committed but not acknowledged.
    let deadline = tokio::time::Instant::now() + support::PATIENCE;
    while stack.ledger_count().await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loader never loaded anything\n{}",
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stack.kill_loader().await.unwrap();

    // A Firehose episode while the loader is down: partial failures and
    // throttling, each followed by a success so no batch runs out of
    // attempts (the edge makes 6).
    let proxy = stack.proxy.as_ref().unwrap();
    for _ in 0..15 {
        proxy.push_all([
            FirehoseFault::FailRecords(vec![0]),
            FirehoseFault::Pass,
            FirehoseFault::Throttle,
            FirehoseFault::Pass,
            FirehoseFault::FailAllRecords,
            FirehoseFault::Pass,
        ]);
    }
    send(&stack, second, 16).await;
    stack.start_loader().unwrap();
    send(&stack, third, 16).await;

    let stats = stack.proxy.as_ref().unwrap().stats();
    assert_eq!(
        stack.proxy.as_ref().unwrap().script_left(),
        0,
        "the fault episode did not play out: {stats:?}"
    );
    assert!(
        stats.throttled_calls >= 15 && stats.records_failed >= 30,
        "{stats:?}"
    );
    settle_and_compare(&mut stack, &hits).await;
}
