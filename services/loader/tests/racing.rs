//! Loaders side by side on one database: objects that share events (a
//! Firehose retry repeats lines of the previous object), counting keys
//! (the same listener again) and whole deliveries (an object announced to
//! two loaders) count exactly what one clean load counts.

mod support;

use std::path::Path;

use earshot_domain::{EventKind, TrackingEvent, Verdict};
use earshot_platform::testing::TestDb;
use sqlx::PgPool;
use support::*;
use time::macros::datetime;

/// Objects in the race.
const OBJECTS: usize = 8;
/// Fresh events per object, and lines each repeats of the one before it.
const FRESH: u32 = 1_200;
const RETRIED: usize = 100;

/// The objects: listeners of neighbouring objects overlap (so do their
/// counting and listener keys), and each object after the first repeats
/// the last lines of the one before it verbatim.
fn objects() -> Vec<Vec<TrackingEvent>> {
    let base = datetime!(2026-11-26 08:00 UTC);
    let mut out: Vec<Vec<TrackingEvent>> = Vec::new();
    for i in 0..OBJECTS as u32 {
        let mut events: Vec<TrackingEvent> = out
            .last()
            .map(|prev: &Vec<TrackingEvent>| prev[prev.len() - RETRIED..].to_vec())
            .unwrap_or_default();
        for j in 0..FRESH {
            let kind =
                [EventKind::Impression, EventKind::Start, EventKind::Complete][(j % 3) as usize];
            let verdict = if j % 23 == 0 {
                Verdict::Bot
            } else {
                Verdict::Valid
            };
            events.push(ev(
                base + time::Duration::minutes(10 * i as i64) + time::Duration::seconds(j as i64),
                "c1",
                &format!("cr{}", j % 3),
                Some("e1"),
                kind,
                (i * 300 + j / 2) % 1_000,
                verdict,
            ));
        }
        out.push(events);
    }
    out
}

/// Writes object `i` as `o{i}.ndjson` into `dir`.
fn write(dir: &Path, i: usize, events: &[TrackingEvent]) {
    write_object(dir, &format!("o{i:02}.ndjson"), &ndjson(events));
}

/// What must not depend on how the objects were loaded: events, totals,
/// the daily rows, uniques, reach sketches, frequency sample and both key
/// sets.
async fn outcome(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT count(*)::text FROM events",
        "SELECT concat_ws(' ', sum(raw_hits), sum(counted_hits), sum(bot_hits), sum(invalid_hits)) FROM rollup_hourly",
        "SELECT string_agg(r, E'\\n' ORDER BY r) FROM (
            SELECT concat_ws(' ', campaign, day, creative, country, sum(raw_hits), sum(impressions),
                             sum(starts), sum(completes), sum(bot_hits)) r
            FROM rollup_daily GROUP BY campaign, day, creative, country) t",
        "SELECT string_agg(concat_ws(' ', campaign, day, creative, listeners), E'\\n'
                           ORDER BY campaign, day, creative) FROM daily_uniques",
        "SELECT md5(string_agg(s::text, ',' ORDER BY campaign, day, dim, value)) FROM reach_sketches s",
        "SELECT coalesce(md5(string_agg(f::text, ',' ORDER BY campaign, day, listener)), 'none') FROM frequency_sample f",
        "SELECT md5(string_agg(day || ' ' || listener || ' ' || key, ',' ORDER BY day, listener, key))
         FROM counting_keys",
        "SELECT md5(string_agg(day || ' ' || listener || ' ' || key, ',' ORDER BY day, listener, key))
         FROM listener_keys",
    ];
    let mut out = Vec::new();
    for q in queries {
        let text: Option<String> = sqlx::query_scalar(q).fetch_one(pool).await.unwrap();
        out.push(text.expect("the loads wrote rows"));
    }
    out
}

/// `n` loaders, each on a pool of its own, loading a directory each at the
/// same time: object i is in directory i mod n, and every third object is
/// announced again to the next loader.
async fn race(n: usize, objects: &[Vec<TrackingEvent>]) -> TestDb {
    let db = TestDb::new().await;
    let dirs: Vec<earshot_testkit::TempDir> =
        (0..n).map(|k| temp_dir(&format!("race-{n}-{k}"))).collect();
    for (i, events) in objects.iter().enumerate() {
        write(&dirs[i % n], i, events);
        if i % 3 == 0 {
            write(&dirs[(i + 1) % n], i, events);
        }
    }
    let mut loaders = Vec::new();
    for dir in &dirs {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .unwrap();
        loaders.push(loader(&pool, dir, opts()).await);
    }
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let runs = loaders.iter_mut().map(|l| l.run(rx.clone()));
    let summaries = futures::future::join_all(runs).await;
    let loaded: u64 = summaries
        .into_iter()
        .map(|s| s.expect("every loader finishes").objects_loaded)
        .sum();
    assert_eq!(
        loaded as usize,
        OBJECTS + OBJECTS.div_ceil(3),
        "{n} loaders"
    );
    for dir in dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db
}

async fn racing_loaders_count_what_one_clean_load_counts(n: usize) {
    let objects = objects();
    let clean = TestDb::new().await;
    let dir = temp_dir("race-clean");
    for (i, events) in objects.iter().enumerate() {
        write(&dir, i, events);
    }
    let one = load_dir(&clean.pool, &dir).await;
    assert_eq!(one.objects_loaded as usize, OBJECTS);
    assert_eq!(one.events_new, u64::from(FRESH) * OBJECTS as u64);
    let want = outcome(&clean.pool).await;
    assert_books_balance(&clean.pool).await;

    let raced = race(n, &objects).await;
    assert_eq!(outcome(&raced.pool).await, want, "{n} loaders");
    assert_books_balance(&raced.pool).await;
}

#[tokio::test]
async fn two_loaders_racing_over_shared_events_count_what_one_clean_load_counts() {
    racing_loaders_count_what_one_clean_load_counts(2).await;
}

#[tokio::test]
async fn four_loaders_racing_over_shared_events_count_what_one_clean_load_counts() {
    racing_loaders_count_what_one_clean_load_counts(4).await;
}

/// An object of `events` as the loader stages it.
fn prepared(key: &str, events: &[TrackingEvent]) -> earshot_loader::store::Prepared {
    let bytes = ndjson(events);
    let parsed = earshot_loader::parse::parse(
        &bytes,
        time::OffsetDateTime::now_utc(),
        datetime!(2026-01-01 00:00 UTC).date(),
    );
    earshot_loader::store::Prepared::new(
        earshot_loader::store::ObjectId {
            source: "test:".into(),
            key: key.into(),
            etag: key.into(),
            bytes: bytes.len() as u64,
        },
        parsed,
    )
}

#[tokio::test]
async fn a_load_whose_events_another_load_commits_first_goes_on_without_them() {
    use earshot_loader::store::{self, Preceding};
    let db = TestDb::new().await;
    let base = datetime!(2026-11-26 09:00 UTC);
    let first = impressions(0..100, base);
    // The second object repeats the first's last 30 events (same ids), then
    // has 50 of its own.
    let mut second = first[70..].to_vec();
    second.extend(impressions(100..150, base + time::Duration::minutes(5)));
    let (x, y) = (prepared("x", &first), prepared("y", &second));
    earshot_loader::partitions::Partitions::default()
        .ensure(&db.pool, [base.date()])
        .await
        .unwrap();
    earshot_loader::counting::keys::ensure_days(&db.pool, [base.date()])
        .await
        .unwrap();

    let x_begun = store::begin(&db.pool, &x, &Preceding::default())
        .await
        .unwrap();
    // The second load's COPY meets the first's uncommitted ids and waits.
    let y_load = tokio::spawn({
        let pool = db.pool.clone();
        async move {
            let begun = store::begin(&pool, &y, &Preceding::default()).await?;
            store::finish(&y, begun).await.map(|(stats, _)| stats)
        }
    });
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE 'COPY events%'";
    let started = std::time::Instant::now();
    while count(&db.pool, waiting).await == 0 {
        assert!(!y_load.is_finished(), "the second COPY did not wait");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (x_stats, _) = store::finish(&x, x_begun).await.unwrap();
    let y_stats = y_load
        .await
        .unwrap()
        .expect("the second load goes on after the first commits");
    assert_eq!((x_stats.new_events, x_stats.counted), (100, 100));
    assert_eq!(
        (y_stats.new_events, y_stats.duplicates, y_stats.counted),
        (50, 30, 50)
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 150);
    assert_eq!(totals(&db.pool, "c1").await, (150, 150, 0, 0));
    assert_books_balance(&db.pool).await;
}
