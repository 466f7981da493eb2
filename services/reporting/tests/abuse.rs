//! The API under abuse and slow dependencies: a report held up in the
//! database, a rate limit without Redis (a flood of made-up keys:
//! `made_up_keys.rs`).

mod support;

use std::time::Duration;

use serde_json::Value;
use sqlx::AssertSqlSafe;
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
