//! A flood of made-up API keys costs the database a bounded number of
//! queries. Alone in its test binary: it compares the scans PostgreSQL
//! counted with the API's lookup counter, and the metrics recorder is
//! process-wide, so another test's lookups in the same process would count.

mod support;

use std::time::{Duration, Instant};

use earshot_reporting::auth::key_cache::UNKNOWN_PREFIX_LOOKUPS_PER_SECOND;
use futures::StreamExt;
use sqlx::Connection;
use support::*;

/// `earshot_api_key_lookups_total` as the API's /metrics says.
async fn key_lookups_metric(app: &TestApp) -> u64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("earshot_api_key_lookups_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Scans of `api_keys` PostgreSQL counted for this database, once every
/// session but the API's change listener has ended, which flushes their
/// statistics; the pools open new ones as they need them.
async fn api_keys_scans(app: &TestApp) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
         AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for pid in &pids {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&pids)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sessions did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A backend leaves pg_stat_activity before its exit hooks flush its
    // table counters, so the count is read until it stops moving.
    let mut last = None;
    loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut conn)
            .await
            .unwrap();
        let scans: i64 = sqlx::query_scalar(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'api_keys'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if last == Some(scans) {
            return scans;
        }
        assert!(Instant::now() < deadline, "the counters did not settle");
        last = Some(scans);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn made_up_key(rng: &mut fastrand::Rng) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let secret: String = (0..43).map(|_| B64[rng.usize(..64)] as char).collect();
    format!("esk_{:08x}_{secret}", rng.u32(..))
}

/// Every well-formed made-up key is refused; the database sees a few of
/// them (the per-replica budget for keys created a moment ago), not one
/// query each.
#[tokio::test]
async fn ten_thousand_made_up_keys_cost_a_bounded_number_of_queries() {
    const KEYS: usize = 10_000;
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    // The change listener is up once the gauge says so; the real key works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app
        .get("/metrics", None)
        .await
        .text()
        .await
        .unwrap()
        .contains("earshot_api_change_listener_up 1")
    {
        assert!(
            Instant::now() < deadline,
            "the change listener never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);

    let scans_before = api_keys_scans(&app).await;
    let metric_before = key_lookups_metric(&app).await;
    let mut rng = fastrand::Rng::with_seed(26);
    let keys: Vec<String> = (0..KEYS).map(|_| made_up_key(&mut rng)).collect();
    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(&keys)
        .map(|k| async { app.get("/v1/campaigns", Some(k)).await.status().as_u16() })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(statuses, vec![401; KEYS]);
    // The real key still works, from memory.
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);

    let queries = api_keys_scans(&app).await - scans_before;
    let lookups = key_lookups_metric(&app).await - metric_before;
    // What PostgreSQL counted is what the API says it asked.
    assert_eq!(
        queries as u64, lookups,
        "scans of api_keys against the metric"
    );
    let budget = u64::from(UNKNOWN_PREFIX_LOOKUPS_PER_SECOND) * (elapsed.as_secs() + 2);
    assert!(
        lookups <= budget,
        "{lookups} lookups for {KEYS} made-up keys in {elapsed:?} (budget {budget})"
    );
}
