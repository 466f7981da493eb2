//! The API under abuse and slow dependencies: a report held up in the
//! database, a flood of made-up keys, a rate limit without Redis.

mod support;

use std::time::{Duration, Instant};

use earshot_reporting::auth::key_cache::UNKNOWN_PREFIX_LOOKUPS_PER_SECOND;
use futures::StreamExt;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection};
use support::*;
use time::OffsetDateTime;

/// A report whose rollups another session holds locked runs into the API's
/// statement timeout: 503 problem+json with `Retry-After`, and the
/// connection is usable again at once.
#[tokio::test]
async fn a_report_held_up_by_a_lock_answers_503_with_retry_after() {
    let app = spawn_app(AppOptions {
        statement_timeout_ms: 300,
        ..AppOptions::default()
    })
    .await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let path = "/v1/campaigns/acme/report?granularity=day&group_by=creative";
    assert_eq!(app.get(path, Some(&key)).await.status(), 200);

    // Another session (a migration, a VACUUM FULL, an operator's query)
    // holds every rollup table the report could read.
    let rollups: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'rollup\\_%'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(rollups.len() >= 2, "{rollups:?}");
    let mut lock = app.db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        rollups.join(", ")
    )))
    .execute(&mut *lock)
    .await
    .unwrap();

    // A new report (another range, so not from the cache): without a
    // statement timeout it would wait for the lock as long as it is held,
    // past this client's patience.
    let slow = "/v1/campaigns/acme/report?granularity=hour&group_by=episode";
    let r = app
        .client
        .get(format!("{}{slow}", app.base))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the API answers while the lock is held");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        r.headers()["retry-after"],
        earshot_reporting::error::RETRY_AFTER_SECONDS
            .to_string()
            .as_str()
    );
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "https://earshot.dev/problems/timed-out");
    assert_eq!(problem["status"], 503);

    lock.rollback().await.unwrap();
    assert_eq!(app.get(slow, Some(&key)).await.status(), 200);
}

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
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'api_keys'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
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

/// Requests a key gets through `base` in one go: statuses in order.
async fn burst(app: &TestApp, key: &str, n: usize) -> Vec<u16> {
    // The limit is a fixed one-minute window: start well inside one.
    let second = OffsetDateTime::now_utc().second();
    if second > 50 {
        tokio::time::sleep(Duration::from_secs(61 - u64::from(second))).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..n {
        let r = app.get("/v1/campaigns", Some(key)).await;
        if r.status() == 429 {
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let ra: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&ra), "{ra}");
        }
        statuses.push(r.status().as_u16());
    }
    statuses
}

/// With Redis unreachable (nothing listens on its port), each replica
/// still limits every key, on its own: closed, not open.
#[tokio::test]
async fn with_redis_unreachable_a_replica_limits_each_key_on_its_own() {
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nothing.local_addr().unwrap().port();
    drop(nothing);
    let app = spawn_app(AppOptions {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        rate_limit_per_minute: 5,
        ..AppOptions::default()
    })
    .await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let (_b, other) = app.advertiser("Globex", &["globex"]).await;
    assert_eq!(
        burst(&app, &key, 7).await,
        vec![200, 200, 200, 200, 200, 429, 429]
    );
    assert_eq!(app.get("/v1/campaigns", Some(&other)).await.status(), 200);
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["redis"], "down");
}

/// Without Redis at all (the chart's default), the same.
#[tokio::test]
async fn without_redis_a_replica_limits_each_key_on_its_own() {
    let app = spawn_app(AppOptions {
        redis_url: None,
        rate_limit_per_minute: 5,
        ..AppOptions::default()
    })
    .await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    assert_eq!(
        burst(&app, &key, 7).await,
        vec![200, 200, 200, 200, 200, 429, 429]
    );
}
