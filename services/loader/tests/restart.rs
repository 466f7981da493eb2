//! A loader that starts on a day already loaded reads none of the day's
//! keys: what it reads does not grow with the day.

mod support;

use earshot_platform::testing::TestDb;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use support::*;

/// A pool whose sessions carry `name`, to tell them apart in
/// `pg_stat_activity`.
async fn pool_named(url: &str, name: &str) -> PgPool {
    let opts: PgConnectOptions = url.parse().unwrap();
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts.application_name(name))
        .await
        .unwrap()
}

/// Closes `pool` and waits until its sessions are gone: a backend writes
/// its table statistics when it exits, before it leaves `pg_stat_activity`.
async fn close_and_wait(pool: PgPool, admin: &PgPool, name: &str) {
    pool.close().await;
    let started = std::time::Instant::now();
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(name)
                .fetch_one(admin)
                .await
                .unwrap();
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "sessions of {name} did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Rows read from any key table's partitions so far (the key tables, and
/// the key logs of migration 8): by sequential scans, and fetched through
/// indexes.
async fn key_rows_read(admin: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(seq_tup_read), 0)::bigint, coalesce(sum(idx_tup_fetch), 0)::bigint
         FROM pg_stat_user_tables
         WHERE relname ~ '^(counting_keys|listener_keys|counted_keys|daily_listeners)_p'",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_restart_on_a_day_already_loaded_reads_none_of_its_keys() {
    let db = TestDb::new().await;
    let dir = temp_dir("restart");
    // Today's traffic: 20,000 listeners in five objects, so 20,000 counting
    // keys and 40,000 listener keys (campaign-wide and per creative).
    let start = time::OffsetDateTime::now_utc()
        .replace_time(time::Time::MIDNIGHT)
        .checked_add(time::Duration::minutes(1))
        .unwrap();
    for i in 0..5u32 {
        write_impressions(
            &dir,
            &format!("day-{i}.ndjson"),
            i * 4_000..(i + 1) * 4_000,
            start + time::Duration::seconds(i64::from(i)),
        );
    }
    let first = pool_named(&db.url, "loader-day").await;
    assert_eq!(load_dir(&first, &dir).await.counted, 20_000);
    close_and_wait(first, &db.pool, "loader-day").await;
    // (This test's own session reads no key table until the end: its
    // statistics would land in the figures below.)
    let before = key_rows_read(&db.pool).await;

    // A new loader (a restart) with one more object: five listeners heard
    // before, five new. Ten counting keys and twenty listener keys are
    // its candidates.
    let mut more = impressions(0..5, start + time::Duration::minutes(30));
    more.extend(impressions(
        90_000..90_005,
        start + time::Duration::minutes(31),
    ));
    write_object(&dir, "more.ndjson", &ndjson(&more));
    let restarted = pool_named(&db.url, "loader-restart").await;
    let summary = load_dir(&restarted, &dir).await;
    close_and_wait(restarted, &db.pool, "loader-restart").await;
    assert_eq!((summary.objects_loaded, summary.counted), (1, 5));

    let after = key_rows_read(&db.pool).await;
    let (scanned, fetched) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(scanned, 0, "no sequential scan of a key table");
    assert!(
        fetched <= 30,
        "at most the 30 candidate keys fetched, not the day's 60,000: {fetched}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM counting_keys").await,
        20_005
    );
    assert_books_balance(&db.pool).await;
}
