//! Raw events are kept for the retention period, then dropped a whole day
//! partition at a time: the rollups stay, and `verify` recounts the days
//! still kept.

mod support;

use earshot_loader::LoadOptions;
use earshot_platform::testing::TestDb;
use support::*;
use time::{Duration, OffsetDateTime};

fn partition(day: time::Date) -> String {
    format!(
        "events_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

async fn exists(pool: &sqlx::PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn days_past_the_retention_period_are_dropped_whole_and_the_rollups_stay() {
    let db = TestDb::new().await;
    let dir = temp_dir("retention");
    let noon = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT) + Duration::hours(12);
    // 30 events on each of three days: ten, four and one day ago.
    let days = [10, 4, 1].map(|ago| noon - Duration::days(ago));
    // Each day's events numbered by an edge of its own, which heartbeats.
    for (i, &at) in days.iter().enumerate() {
        let edge = earshot_domain::EdgeId::generate();
        let mut events = sample(30, at);
        for (n, e) in events.iter_mut().enumerate() {
            e.sequence = Some(earshot_domain::EdgeSeq {
                edge,
                seq: n as u64 + 1,
            });
        }
        let mut bytes = ndjson(&events);
        bytes.extend_from_slice(
            &earshot_domain::Heartbeat {
                edge,
                seq: 30,
                ts: at + Duration::minutes(1),
            }
            .to_ndjson(),
        );
        write_object(&dir, &format!("{i}.ndjson"), &bytes);
    }
    let ledger = "SELECT count(DISTINCT edge) FROM edge_seq_ranges";
    let beats = "SELECT count(*) FROM edge_heartbeats";
    let keep_all = LoadOptions {
        retention_days: 30,
        ..opts()
    };
    assert_eq!(load_dir_with(&db.pool, &dir, keep_all).await.events_new, 90);
    let rolled = totals(&db.pool, "c1").await;
    assert_eq!(rolled.0, 90);
    // Reach sketches: each day's campaign, its four creatives, its one
    // show (''), episode, country (''), app and device ('').
    let sketches = "SELECT count(*) FROM reach_sketches";
    assert_eq!(count(&db.pool, sketches).await, 30);
    for at in days {
        assert!(exists(&db.pool, &partition(at.date())).await);
    }
    assert_eq!(
        (count(&db.pool, ledger).await, count(&db.pool, beats).await),
        (3, 3)
    );

    // A loader keeping five days: its upkeep drops the day ten days ago.
    let keep_five = LoadOptions {
        retention_days: 5,
        ..opts()
    };
    let again = load_dir_with(&db.pool, &dir, keep_five).await;
    assert_eq!((again.objects_loaded, again.objects_skipped), (0, 3));
    assert!(!exists(&db.pool, &partition(days[0].date())).await);
    assert!(exists(&db.pool, &partition(days[1].date())).await);
    assert!(exists(&db.pool, &partition(days[2].date())).await);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 60);
    // The sequence ledger of that day goes with it.
    assert_eq!(
        (count(&db.pool, ledger).await, count(&db.pool, beats).await),
        (2, 2)
    );
    // The rollups and reach sketches keep every day; verify recounts the
    // days still kept.
    assert_eq!(totals(&db.pool, "c1").await, rolled);
    assert_eq!(count(&db.pool, sketches).await, 30);
    assert_books_balance(&db.pool).await;

    // A day's rollups that disagree with its kept raw events still show.
    exec(
        &db.pool,
        "UPDATE rollup_hourly SET raw_hits = raw_hits + 1
         WHERE ctid = (SELECT ctid FROM rollup_hourly ORDER BY hour DESC LIMIT 1)",
    )
    .await;
    let found = verify(&db.pool, None).await;
    assert_eq!(
        found.iter().filter(|m| m.what == "raw_hits").count(),
        1,
        "{found:#?}"
    );
}
