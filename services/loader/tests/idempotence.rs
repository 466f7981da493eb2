//! Redelivery, restarts and bad data: every event lands once, and the
//! counts equal a clean run's.

mod support;

use std::io::Write;

use earshot_domain::TrackingEvent;
use earshot_domain::{EventKind, Verdict};
use earshot_loader::{store, LoadOptions};
use earshot_platform::testing::TestDb;
use support::*;
use time::macros::datetime;

#[tokio::test]
async fn the_same_object_loaded_twice_changes_nothing() {
    let db = TestDb::new().await;
    let dir = temp_dir("twice");
    write_object(
        &dir,
        "a.ndjson",
        &ndjson(&sample(300, datetime!(2026-11-26 10:00 UTC))),
    );
    let first = load_dir(&db.pool, &dir).await;
    assert_eq!((first.objects_loaded, first.events_new), (1, 300));
    let before = totals(&db.pool, "c1").await;
    // A new process (empty memory of what it did) sees the same file again.
    let second = load_dir(&db.pool, &dir).await;
    assert_eq!(
        (
            second.objects_loaded,
            second.objects_skipped,
            second.events_new
        ),
        (0, 1, 0)
    );
    assert_eq!(totals(&db.pool, "c1").await, before);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 300);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM loaded_objects").await,
        1
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn events_repeated_in_another_object_are_kept_once() {
    let db = TestDb::new().await;
    let dir = temp_dir("overlap");
    let events = sample(200, datetime!(2026-11-26 10:00 UTC));
    write_object(&dir, "a.ndjson", &ndjson(&events[..150]));
    // A Firehose retry after a timeout: the second object repeats 50 events.
    write_object(&dir, "b.ndjson", &ndjson(&events[100..]));
    let s = load_dir(&db.pool, &dir).await;
    assert_eq!((s.objects_loaded, s.events_new, s.duplicates), (2, 200, 50));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 200);

    let clean = TestDb::new().await;
    load_events(&clean.pool, "overlap-clean", &events).await;
    assert_eq!(
        totals(&db.pool, "c1").await,
        totals(&clean.pool, "c1").await
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn one_percent_malformed_lines_are_quarantined_and_the_rest_loaded() {
    let db = TestDb::new().await;
    let dir = temp_dir("malformed");
    let events = sample(990, datetime!(2026-11-26 10:00 UTC));
    let mut data = Vec::new();
    let mut bad = Vec::new();
    for (i, e) in events.iter().enumerate() {
        e.write_ndjson(&mut data);
        if i % 99 == 0 {
            let line = match (i / 99) % 3 {
                0 => b"{\"v\":1,\"id\":\"not-a-uuid\"}".to_vec(),
                1 => b"\xff\xfe garbage".to_vec(),
                _ => e.to_ndjson()[..40].to_vec(), // truncated mid-line
            };
            data.extend_from_slice(&line);
            data.push(b'\n');
            bad.push(line);
        }
    }
    assert_eq!(bad.len(), 10);
    // Gzipped, as Firehose delivers.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&data).unwrap();
    write_object(&dir, "a.ndjson.gz", &gz.finish().unwrap());
    let s = load_dir(&db.pool, &dir).await;
    assert_eq!((s.events_new, s.quarantined), (990, 10));
    let rows: Vec<(Vec<u8>, String)> =
        sqlx::query_as("SELECT raw_line, reason FROM quarantine ORDER BY line_no")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), bad);
    assert!(
        rows.iter().all(|r| r.1.starts_with("not a v1 event")),
        "{rows:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT quarantined::bigint FROM loaded_objects").await,
        10
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_corrupt_gzip_object_is_quarantined_whole_not_retried_forever() {
    let db = TestDb::new().await;
    let dir = temp_dir("corrupt");
    write_object(&dir, "bad.gz", &[0x1f, 0x8b, 8, 0, 1, 2, 3, 4]);
    let s = load_dir(&db.pool, &dir).await;
    assert_eq!((s.objects_loaded, s.quarantined), (1, 1));
    let reason: String = sqlx::query_scalar("SELECT reason FROM quarantine")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        reason.starts_with("object is gzip but does not decompress"),
        "{reason}"
    );
}

#[tokio::test]
async fn concurrent_loaders_claiming_the_same_object_load_it_once() {
    let db = TestDb::new().await;
    let dir = temp_dir("race");
    write_object(
        &dir,
        "a.ndjson",
        &ndjson(&sample(500, datetime!(2026-11-26 10:00 UTC))),
    );
    let (a, b) = tokio::join!(load_dir(&db.pool, &dir), load_dir(&db.pool, &dir));
    assert_eq!(a.objects_loaded + b.objects_loaded, 1);
    assert_eq!(a.objects_skipped + b.objects_skipped, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 500);
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn loader_survives_its_connections_being_killed_mid_load() {
    // What a PostgreSQL restart looks like from the loader: every connection
    // dies. The object in hand is retried in a new transaction.
    let db = TestDb::new().await;
    let dir = temp_dir("killed");
    let base = datetime!(2026-11-26 10:00 UTC);
    for i in 0..20 {
        let events = sample(2000, base + time::Duration::hours(i));
        write_object(&dir, &format!("o{i:02}.ndjson"), &ndjson(&events));
    }
    let pool = db.pool.clone();
    let name = db.name.clone();
    let killer = tokio::spawn(async move {
        let admin = sqlx::PgPool::connect(
            &std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        )
        .await
        .unwrap();
        let mut kills = 0;
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid() AND query ~ '(COPY events|counting_keys|rollup_|listener_keys)') t",
            )
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
            kills += n;
        }
        kills
    });
    let s = load_dir(&pool, &dir).await;
    let kills = killer.await.unwrap();
    assert!(
        kills > 0,
        "the test must actually kill connections mid-load"
    );
    assert_eq!(s.objects_loaded, 20);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 40_000);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM loaded_objects").await,
        20
    );
    assert_books_balance(&db.pool).await;

    let clean = TestDb::new().await;
    load_dir(&clean.pool, &dir).await;
    assert_eq!(
        totals(&db.pool, "c1").await,
        totals(&clean.pool, "c1").await
    );
}

#[tokio::test]
async fn already_loaded_is_answered_from_the_ledger() {
    let db = TestDb::new().await;
    let dir = temp_dir("ledger");
    write_object(
        &dir,
        "a.ndjson",
        &ndjson(&sample(3, datetime!(2026-11-26 10:00 UTC))),
    );
    load_dir(&db.pool, &dir).await;
    let (source, key, etag): (String, String, String) =
        sqlx::query_as("SELECT source, object_key, etag FROM loaded_objects")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(source, dir_object(&dir, "a.ndjson").source);
    assert!(store::already_loaded(&db.pool, &source, &key, &etag)
        .await
        .unwrap());
    assert!(
        !store::already_loaded(&db.pool, &source, &key, "other-etag")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn concurrent_loaders_with_overlapping_objects_keep_each_event_once() {
    // A Firehose retry can put the same events in two objects, and two
    // loader replicas can load those at the same time. The second COPY of an
    // id waits for the first transaction, fails on the primary key when it
    // commits, and the object is retried without the ids now present.
    let db = TestDb::new().await;
    let (left, right) = (temp_dir("overlap-a"), temp_dir("overlap-b"));
    let base = datetime!(2026-11-26 10:00 UTC);
    for i in 0..4 {
        let events = sample(4000, base + time::Duration::hours(i));
        write_object(&left, &format!("a{i}.ndjson"), &ndjson(&events[..3000]));
        write_object(&right, &format!("b{i}.ndjson"), &ndjson(&events[1000..]));
    }
    let (a, b) = tokio::join!(load_dir(&db.pool, &left), load_dir(&db.pool, &right));
    assert_eq!(a.objects_loaded + b.objects_loaded, 8);
    assert_eq!(a.events_new + b.events_new, 16_000);
    assert_eq!(a.duplicates + b.duplicates, 8_000);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 16_000);
    assert_books_balance(&db.pool).await;

    let clean = TestDb::new().await;
    let all = temp_dir("overlap-clean");
    for i in 0..4 {
        let events = sample(4000, base + time::Duration::hours(i));
        write_object(&all, &format!("o{i}.ndjson"), &ndjson(&events));
    }
    load_dir(&clean.pool, &all).await;
    assert_eq!(
        totals(&db.pool, "c1").await,
        totals(&clean.pool, "c1").await
    );
}

#[tokio::test]
async fn one_loader_loading_objects_side_by_side_keeps_the_totals_of_one_at_a_time() {
    // Concurrency 2 splits the six objects into runs [o0 o1 o2] and
    // [o3 o4 o5]. Each object repeats the tail of the one before (a Firehose
    // retry), and o3 also repeats o0's events, so the two runs' first
    // transactions hold the same ids at once and one of them starts over.
    // Every event is kept once and the totals match; which copy of a
    // repeated counting key is the counted one follows commit order, so
    // per-hour rows are not compared (README, "Concurrency").
    let dir = temp_dir("side-by-side");
    let base = datetime!(2026-11-26 10:00 UTC);
    let fresh: Vec<Vec<TrackingEvent>> = (0..6)
        .map(|i| sample(2000, base + time::Duration::minutes(20 * i)))
        .collect();
    let mut objects = fresh.clone();
    for i in 1..6 {
        objects[i].extend_from_slice(&fresh[i - 1][1500..]);
    }
    objects[3].extend_from_slice(&fresh[0]);
    for (i, events) in objects.iter().enumerate() {
        write_object(&dir, &format!("o{i}.ndjson"), &ndjson(events));
    }
    let one_at_a_time = TestDb::new().await;
    let side_by_side = TestDb::new().await;
    let a = load_dir_with(
        &one_at_a_time.pool,
        &dir,
        LoadOptions {
            concurrency: 1,
            ..opts()
        },
    )
    .await;
    let b = load_dir_with(
        &side_by_side.pool,
        &dir,
        LoadOptions {
            concurrency: 2,
            ..opts()
        },
    )
    .await;
    assert_eq!(
        (b.objects_loaded, b.events_new, b.duplicates),
        (6, 12_000, 4_500)
    );
    assert_eq!(a, b);
    assert_eq!(
        count(&side_by_side.pool, "SELECT count(*) FROM events").await,
        12_000
    );
    assert_books_balance(&side_by_side.pool).await;
    assert_eq!(
        totals(&side_by_side.pool, "c1").await,
        totals(&one_at_a_time.pool, "c1").await
    );
    let keys =
        "SELECT string_agg(day || ':' || listener || ':' || key, ',' ORDER BY day, listener, key)
        FROM counting_keys";
    let (a_keys, b_keys): (Option<String>, Option<String>) = (
        sqlx::query_scalar(keys)
            .fetch_one(&one_at_a_time.pool)
            .await
            .unwrap(),
        sqlx::query_scalar(keys)
            .fetch_one(&side_by_side.pool)
            .await
            .unwrap(),
    );
    assert!(a_keys.is_some());
    assert_eq!(a_keys, b_keys, "the same counting keys are counted");
}

#[tokio::test]
async fn every_field_the_events_table_keeps_is_stored_as_the_edge_wrote_it() {
    // The binary COPY writes each value as it is stored: text holding COPY
    // text format's special characters, non-ASCII, NULLs, error codes and a
    // millisecond timestamp must all come back unchanged. The user agent
    // is the one field left to S3 (migration 31).
    use earshot_domain::{ListenerPeriod, Placement, RegionCode, ShowId};
    let db = TestDb::new().await;
    let dir = temp_dir("fields");
    let base = datetime!(2026-11-26 23:59:59.999 UTC);
    let mut full = ev(
        base,
        "c.1-x_Y",
        "cr",
        Some("ep-9"),
        EventKind::Error,
        7,
        Verdict::Bot,
    );
    full.show = Some(ShowId::parse("show.7").unwrap());
    full.placement = Some(Placement::Mid);
    full.error_code = Some(405);
    full.ua = Some("App/1.0 (sent, kept in S3)".into());
    full.app = Some("Tab\there \\N back\\slash \"quoted\" ünïcødé 🎧 \r\n".into());
    full.device = Some("phone".into());
    full.os = Some("android".into());
    full.region = Some(RegionCode::parse("DE-BE").unwrap());
    full.country = Some(full.region.unwrap().country());
    full.listener_period = ListenerPeriod::Day;
    full.trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
    let mut bare = ev(
        base - time::Duration::days(30),
        "c2",
        "cr",
        None,
        EventKind::Impression,
        8,
        Verdict::Invalid,
    );
    bare.ua = None;
    bare.app = None;
    bare.os = None;
    bare.listener_period = ListenerPeriod::Month;
    let sent = vec![full, bare];
    write_object(&dir, "a.ndjson", &ndjson(&sent));
    assert_eq!(load_dir(&db.pool, &dir).await.events_new, 2);

    #[derive(sqlx::FromRow, Debug, PartialEq)]
    struct Row {
        id: uuid::Uuid,
        ts: time::OffsetDateTime,
        campaign: Option<String>,
        creative: Option<String>,
        episode: Option<String>,
        show: Option<String>,
        placement: Option<String>,
        event: Option<String>,
        error_code: Option<i32>,
        listener: String,
        ua: Option<String>,
        app: Option<String>,
        device: Option<String>,
        os: Option<String>,
        country: Option<String>,
        region: Option<String>,
        verdict: String,
        reason: Option<String>,
        trace_id: Option<String>,
        listener_period: Option<String>,
    }
    let got: Vec<Row> = sqlx::query_as(
        "SELECT id, ts, campaign, creative, episode, show, placement, event, error_code, listener,
                ua, app, device, os, country, region, verdict, reason, trace_id, listener_period
         FROM events ORDER BY ts DESC",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let want: Vec<Row> = sent
        .iter()
        .map(|e| Row {
            id: e.id,
            ts: e.ts,
            campaign: e.campaign.as_ref().map(|x| x.as_str().to_owned()),
            creative: e.creative.as_ref().map(|x| x.as_str().to_owned()),
            episode: e.episode.as_ref().map(|x| x.as_str().to_owned()),
            show: e.show.as_ref().map(|x| x.as_str().to_owned()),
            placement: e.placement.map(|x| x.as_str().to_owned()),
            event: e.event.map(|x| x.as_str().to_owned()),
            error_code: e.error_code.map(i32::from),
            listener: e.listener.as_str().to_owned(),
            // The agent stays in S3 (migration 31).
            ua: None,
            app: e.app.clone(),
            device: e.device.clone(),
            os: e.os.clone(),
            country: e.country.as_ref().map(|c| c.as_str().to_owned()),
            region: e.region.as_ref().map(|r| r.as_str().to_owned()),
            verdict: e.verdict.as_str().to_owned(),
            reason: e.reason.clone(),
            // The trace id too (migration 33).
            trace_id: None,
            listener_period: Some(e.listener_period.as_str().to_owned()),
        })
        .collect();
    assert_eq!(got, want);
}

/// (counted hits, unique listeners of the campaign) on every day.
async fn counted_and_heard(pool: &sqlx::PgPool) -> (i64, i64) {
    (
        count(
            pool,
            "SELECT coalesce(sum(counted_hits), 0)::bigint FROM rollup_hourly",
        )
        .await,
        count(
            pool,
            "SELECT coalesce(sum(listeners), 0)::bigint FROM daily_uniques WHERE creative = ''",
        )
        .await,
    )
}

#[tokio::test]
async fn a_key_another_loader_counted_is_not_counted_again() {
    // Loader A counts listeners 0–99; loader B then counts 100–149; A's next
    // object repeats 100–149: the key tables say they were counted, whatever
    // A did before.
    let db = TestDb::new().await;
    let (dir_a, dir_b) = (temp_dir("other-a"), temp_dir("other-b"));
    let base = datetime!(2026-11-26 10:00 UTC);
    let mut a = loader(&db.pool, &dir_a, opts()).await;
    let (_stop, rx) = tokio::sync::watch::channel(false);

    write_impressions(&dir_a, "a1.ndjson", 0..100, base);
    assert_eq!(a.run(rx.clone()).await.unwrap().counted, 100);
    write_impressions(
        &dir_b,
        "b1.ndjson",
        50..150,
        base + time::Duration::hours(1),
    );
    assert_eq!(load_dir(&db.pool, &dir_b).await.counted, 50);
    write_impressions(
        &dir_a,
        "a2.ndjson",
        100..200,
        base + time::Duration::hours(2),
    );
    let again = a.run(rx).await.unwrap();
    assert_eq!((again.objects_loaded, again.counted), (1, 50));
    assert_eq!(counted_and_heard(&db.pool).await, (200, 200));
    assert_books_balance(&db.pool).await;
}

/// Whether `day` has its partition in both key tables.
async fn has_key_partitions(pool: &sqlx::PgPool, day: time::Date) -> bool {
    let suffix = format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    );
    sqlx::query_scalar(
        "SELECT to_regclass('counting_keys_p' || $1) IS NOT NULL
            AND to_regclass('listener_keys_p' || $1) IS NOT NULL",
    )
    .bind(suffix)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_closed_days_keys_are_dropped_and_rebuilt_from_its_events_when_an_event_comes_back() {
    use earshot_loader::counting::keys;
    let db = TestDb::new().await;
    let dir = temp_dir("closed-day");
    let today = time::OffsetDateTime::now_utc().date();
    let closed = today - time::Duration::days(keys::OPEN_DAYS + 2);
    let at = closed.with_hms(10, 0, 0).unwrap().assume_utc();
    write_impressions(&dir, "a.ndjson", 0..100, at);
    assert_eq!(load_dir(&db.pool, &dir).await.counted, 100);
    assert!(has_key_partitions(&db.pool, closed).await);

    // The upkeep drops the closed day's keys; its events stay.
    let dropped = keys::drop_closed_days(&db.pool, today).await.unwrap();
    assert!(dropped.contains(&closed), "{dropped:?}");
    assert!(!has_key_partitions(&db.pool, closed).await);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 100);

    // Late events for that day, half of them listeners already counted:
    // the day's keys come back from its events first, and only the new
    // half counts.
    write_impressions(&dir, "late.ndjson", 50..150, at + time::Duration::hours(5));
    let late = load_dir(&db.pool, &dir).await;
    assert_eq!((late.objects_loaded, late.counted), (1, 50));
    assert!(has_key_partitions(&db.pool, closed).await);
    assert_eq!(counted_and_heard(&db.pool).await, (150, 150));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM counting_keys").await,
        150
    );
    // Campaign-wide and per creative: 150 listeners each.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM listener_keys").await,
        300
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_loader_counts_against_the_database_it_finds_not_what_it_loaded_before() {
    // A database restored from a backup taken before this loader's
    // commits: their keys are gone, and the same loader goes on.
    let db = TestDb::new().await;
    let dir = temp_dir("restored");
    let base = datetime!(2026-11-26 10:00 UTC);
    let mut l = loader(&db.pool, &dir, opts()).await;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    write_impressions(&dir, "a.ndjson", 0..100, base);
    write_impressions(&dir, "b.ndjson", 100..200, base + time::Duration::hours(1));
    assert_eq!(l.run(rx.clone()).await.unwrap().counted, 200);

    // An empty database, as a restore from a backup taken before the first
    // load would leave it.
    sqlx::query(
        "TRUNCATE events, counting_keys, listener_keys, rollup_hourly, rollup_daily,
                  rollup_blocks, daily_uniques, reach_sketches, reach_sketch_blocks, frequency_sample,
                  quarantine, loaded_objects",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    // The same loader, on: every listener counts again, once.
    write_impressions(&dir, "c.ndjson", 0..150, base + time::Duration::hours(2));
    let after = l.run(rx).await.unwrap();
    assert_eq!((after.objects_loaded, after.counted), (1, 150));
    assert_eq!(counted_and_heard(&db.pool).await, (150, 150));
    assert_books_balance(&db.pool).await;
}
