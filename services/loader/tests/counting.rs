//! The counting rules, table-driven, against a real PostgreSQL.

mod support;

use earshot_domain::{EventKind, TrackingEvent, Verdict};
use earshot_loader::daily;
use earshot_platform::testing::TestDb;
use support::*;
use time::macros::datetime;

struct Case {
    name: &'static str,
    /// Objects, each a list of events, loaded in order.
    objects: Vec<Vec<earshot_domain::TrackingEvent>>,
    /// (raw, counted, bot, invalid) for campaign "c1".
    want: (i64, i64, i64, i64),
}

#[tokio::test]
async fn counting_rules_hold_for_every_case() {
    use EventKind::*;
    use Verdict::*;
    let t = datetime!(2026-11-26 10:00 UTC);
    let late = datetime!(2026-11-26 23:59:59.999 UTC);
    let next_day = datetime!(2026-11-27 00:00:00.000 UTC);
    // Listener `who`'s hit on campaign c1, creative cr1, episode e1: the
    // cases vary the one field they are about.
    let hit = |ts, who, verdict| ev(ts, "c1", "cr1", Some("e1"), Impression, who, verdict);
    let cases = vec![
        Case {
            name: "one valid impression counts once",
            objects: vec![vec![hit(t, 1, Valid)]],
            want: (1, 1, 0, 0),
        },
        Case {
            name: "the same listener twice on one day counts once",
            objects: vec![vec![
                hit(t, 1, Valid),
                hit(t + time::Duration::hours(5), 1, Valid),
            ]],
            want: (2, 1, 0, 0),
        },
        Case {
            name: "duplicates across objects count once",
            objects: vec![
                vec![hit(t, 1, Valid)],
                vec![hit(t + time::Duration::minutes(1), 1, Valid)],
            ],
            want: (2, 1, 0, 0),
        },
        Case {
            name: "across the UTC day boundary the listener counts again",
            objects: vec![vec![hit(late, 1, Valid), hit(next_day, 1, Valid)]],
            want: (2, 2, 0, 0),
        },
        Case {
            name: "another episode, creative or event kind is another count",
            objects: vec![vec![
                hit(t, 1, Valid),
                ev(t, "c1", "cr1", Some("e2"), Impression, 1, Valid),
                ev(t, "c1", "cr2", Some("e1"), Impression, 1, Valid),
                ev(t, "c1", "cr1", Some("e1"), Start, 1, Valid),
                ev(t, "c1", "cr1", None, Impression, 1, Valid),
            ]],
            want: (5, 5, 0, 0),
        },
        Case {
            name: "other listeners count separately",
            objects: vec![vec![hit(t, 1, Valid), hit(t, 2, Valid), hit(t, 3, Valid)]],
            want: (3, 3, 0, 0),
        },
        Case {
            name: "bots are recorded and never counted",
            objects: vec![vec![hit(t, 1, Bot), hit(t, 1, Bot), hit(t, 2, Valid)]],
            want: (3, 1, 2, 0),
        },
        Case {
            name: "forged signatures are recorded as invalid and never counted",
            objects: vec![vec![
                ev(t, "c1", "cr1", Some("e1"), Complete, 1, Invalid),
                hit(t, 1, Invalid),
            ]],
            want: (2, 0, 0, 2),
        },
        Case {
            name: "a bot hit does not use up the listener's count",
            objects: vec![vec![hit(t, 1, Bot)], vec![hit(t, 1, Valid)]],
            want: (2, 1, 1, 0),
        },
    ];

    for case in cases {
        let db = TestDb::new().await;
        let dir = temp_dir("counting");
        for (i, events) in case.objects.iter().enumerate() {
            // One object per load, in order, as separate deliveries would come.
            write_object(&dir, &format!("events-{i:03}.ndjson"), &ndjson(events));
            load_dir(&db.pool, &dir).await;
        }
        assert_eq!(totals(&db.pool, "c1").await, case.want, "{}", case.name);
        assert_books_balance(&db.pool).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn unknown_campaigns_are_kept_and_counted() {
    let db = TestDb::new().await;
    let t = datetime!(2026-11-26 10:00 UTC);
    let hit = ev(
        t,
        "not-registered",
        "cr1",
        None,
        EventKind::Impression,
        1,
        Verdict::Valid,
    );
    load_events(&db.pool, "unknown", &[hit]).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM campaigns").await, 0);
    assert_eq!(totals(&db.pool, "not-registered").await, (1, 1, 0, 0));
    assert_eq!(
        count(&db.pool, "SELECT listeners FROM daily_uniques WHERE campaign = 'not-registered' AND creative = ''").await,
        1
    );
}

/// Invalid hits are recorded as sent, under the campaign they claim, but
/// their creative, episode and show are claims nobody vouched for: they
/// roll up under the campaign alone. 10,000 forged creative (and episode
/// and show) ids add one hourly row and one daily row, not 10,000 of each.
#[tokio::test]
async fn ten_thousand_forged_creative_ids_add_one_rollup_row_not_ten_thousand() {
    const FORGED: u32 = 10_000;
    let db = TestDb::new().await;
    let t = datetime!(2026-11-26 10:00 UTC);
    let mut events = vec![ev(
        t,
        "c1",
        "cr1",
        Some("e1"),
        EventKind::Impression,
        1,
        Verdict::Valid,
    )];
    events.extend((0..FORGED).map(|i| {
        event()
            .at(t + time::Duration::milliseconds(i64::from(i)))
            .campaign("c1")
            .creative(&format!("forged-cr-{i}"))
            .episode(Some(&format!("forged-ep-{i}")))
            .show(&format!("forged-sh-{i}"))
            .kind(EventKind::Impression)
            .listener(i)
            .verdict(Verdict::Invalid)
            .build()
    }));
    load_events(&db.pool, "forged", &events).await;

    // Every hit is recorded, with the ids it claimed.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT (creative, episode, show)) FROM events WHERE verdict = 'invalid'"
        )
        .await,
        i64::from(FORGED)
    );
    assert_eq!(
        totals(&db.pool, "c1").await,
        (i64::from(FORGED) + 1, 1, 0, i64::from(FORGED))
    );
    // The valid hit's row, and one row for all the forged ones.
    let rows = |table| format!("SELECT count(*) FROM {table} WHERE campaign = 'c1'");
    assert_eq!(count(&db.pool, &rows("rollup_hourly")).await, 2);
    assert_eq!(count(&db.pool, &rows("rollup_daily")).await, 2);
    let hourly: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT creative, episode, show, invalid_hits FROM rollup_hourly WHERE campaign = 'c1' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        hourly,
        vec![
            ("".into(), "".into(), "".into(), i64::from(FORGED)),
            ("cr1".into(), "e1".into(), "".into(), 0),
        ]
    );
    let daily: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT creative, raw_hits, invalid_hits FROM rollup_daily WHERE campaign = 'c1' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        daily,
        vec![
            ("".into(), i64::from(FORGED), i64::from(FORGED)),
            ("cr1".into(), 1, 0),
        ]
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn daily_uniques_count_listeners_with_a_valid_impression_per_campaign_and_creative() {
    let db = TestDb::new().await;
    let t = datetime!(2026-11-26 10:00 UTC);
    use EventKind::*;
    use Verdict::*;
    let events = [
        ev(t, "c1", "cr1", Some("e1"), Impression, 1, Valid),
        ev(t, "c1", "cr2", Some("e1"), Impression, 1, Valid), // same listener, other creative
        ev(t, "c1", "cr1", Some("e2"), Impression, 2, Valid),
        ev(t, "c1", "cr1", Some("e1"), Start, 3, Valid), // no impression: not a unique
        ev(t, "c1", "cr1", Some("e1"), Impression, 4, Bot), // bot: not a unique
    ];
    load_events(&db.pool, "uniques", &events).await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT creative, listeners FROM daily_uniques WHERE campaign = 'c1' ORDER BY creative",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("".into(), 2), ("cr1".into(), 2), ("cr2".into(), 1)]
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn day_blocks_hold_the_sum_of_their_days_and_verify_catches_any_drift() {
    let db = TestDb::new().await;
    let dir = temp_dir("blocks");
    use EventKind::*;
    use Verdict::*;
    // Three days, 2026-11-25 .. 27, one object per day, loaded out of order.
    for (name, day, listeners) in [
        ("b.ndjson", 26, 3),
        ("a.ndjson", 25, 2),
        ("c.ndjson", 27, 4),
    ] {
        let t = time::Date::from_calendar_date(2026, time::Month::November, day)
            .unwrap()
            .with_hms(12, 0, 0)
            .unwrap()
            .assume_utc();
        let events: Vec<_> = (0..listeners)
            .map(|l| ev(t, "c1", "cr1", Some("e1"), Impression, l, Valid))
            .collect();
        write_object(&dir, name, &ndjson(&events));
    }
    load_dir(&db.pool, &dir).await;
    // The days join their blocks when folded (at once if they already
    // were, the day after tomorrow otherwise: the loader folds days that
    // ended two days ago).
    let d = |day| time::Date::from_calendar_date(2026, time::Month::November, day).unwrap();
    daily::fold_blocks(&db.pool, d(27)).await.unwrap();
    // 2026-11-25 is day 20,782 since 1970-01-01: a multiple of 2 but not of
    // 4, so the 25th and 26th share a 2-day block and the 27th starts the
    // next; the 4-day block of the 23rd holds the 25th and 26th.
    let blocks: Vec<(i32, time::Date, i64)> = sqlx::query_as(
        "SELECT span_days, first_day, impressions FROM rollup_blocks
         WHERE campaign = 'c1' AND span_days <= 4 ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        blocks,
        vec![(2, d(25), 5), (2, d(27), 4), (4, d(23), 5), (4, d(27), 4)],
        "blocks of 2 and 4 days"
    );
    let in_128: i64 = count(
        &db.pool,
        "SELECT sum(impressions)::bigint FROM rollup_blocks WHERE campaign = 'c1' AND span_days = 128",
    )
    .await;
    assert_eq!(in_128, 9);
    assert_books_balance(&db.pool).await;

    // One block off by one is reported, naming it.
    exec(
        &db.pool,
        "UPDATE rollup_blocks SET impressions = impressions + 1
         WHERE campaign = 'c1' AND span_days = 2 AND first_day = '2026-11-27'",
    )
    .await;
    let found = verify(&db.pool, Some("c1")).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].what, "day_blocks");
    assert_eq!(found[0].key, "c1/cr1//2026-11-27/2d");
}

/// Raw hits in the 2-day blocks of campaign c1 (each day is in exactly one).
async fn raw_in_two_day_blocks(pool: &sqlx::PgPool) -> i64 {
    count(
        pool,
        "SELECT coalesce(sum(raw_hits), 0)::bigint FROM rollup_blocks WHERE campaign = 'c1' AND span_days = 2",
    )
    .await
}

/// Today, ten days ago (folded before a load: the loader's upkeep folds
/// the days up to two days ago) and yesterday (not yet).
fn today_old_yesterday() -> (time::Date, time::Date, time::Date) {
    let today = time::OffsetDateTime::now_utc().date();
    (
        today,
        today - time::Duration::days(10),
        today - time::Duration::days(1),
    )
}

/// Valid impressions of c1 by the listeners `who`, from noon on `day`.
fn heard(day: time::Date, who: std::ops::Range<u32>) -> Vec<earshot_domain::TrackingEvent> {
    impressions(who, day.with_hms(12, 0, 0).unwrap().assume_utc())
}

#[tokio::test]
async fn days_reach_their_blocks_once_whether_loaded_before_or_after_their_fold() {
    let db = TestDb::new().await;
    let (today, old, yesterday) = today_old_yesterday();
    let first = [heard(old, 0..3), heard(yesterday, 0..5)].concat();
    let dir = load_events(&db.pool, "fold", &first).await;
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM rollup_daily WHERE campaign = 'c1'"
        )
        .await,
        2
    );
    assert_eq!(
        raw_in_two_day_blocks(&db.pool).await,
        3,
        "only the folded day is in its blocks"
    );
    assert_books_balance(&db.pool).await;

    // Folding yesterday adds it, once.
    let folded = daily::fold_blocks(&db.pool, yesterday).await.unwrap();
    assert_eq!(
        folded.map(|f| (f.from, f.through, f.rows)),
        Some((daily::fold_through(today), yesterday, 7)),
        "one daily row into its seven blocks"
    );
    assert_eq!(daily::fold_blocks(&db.pool, yesterday).await.unwrap(), None);
    assert_eq!(raw_in_two_day_blocks(&db.pool).await, 8);
    // With nothing to fold, the fold does not wait for a load in flight
    // (it answers while the load still shares the mark's row).
    let mut load = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM counting_state FOR SHARE")
        .execute(&mut *load)
        .await
        .unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        daily::fold_blocks(&db.pool, yesterday),
    )
    .await
    .expect("a fold with nothing to do waited for a load");
    assert_eq!(waited.unwrap(), None);
    load.rollback().await.unwrap();
    assert_books_balance(&db.pool).await;

    // A late object for the folded day adds to its blocks itself.
    let late = heard(yesterday, 5..7);
    write_object(&dir, "b.ndjson", &ndjson(&late));
    load_dir(&db.pool, &dir).await;
    assert_eq!(raw_in_two_day_blocks(&db.pool).await, 10);
    let in_128 = count(
        &db.pool,
        "SELECT sum(impressions)::bigint FROM rollup_blocks WHERE campaign = 'c1' AND span_days = 128",
    )
    .await;
    assert_eq!(in_128, 10, "both days, every impression counted once");
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn rebuilding_the_blocks_repairs_them_and_marks_every_day_loaded() {
    let db = TestDb::new().await;
    let (today, old, yesterday) = today_old_yesterday();
    let events = [heard(old, 0..4), heard(yesterday, 0..6)].concat();
    load_events(&db.pool, "rebuild", &events).await;
    // Blocks off, as a loader that does not know the mark leaves them: it
    // adds yesterday, after the mark, to its blocks all the same.
    exec(
        &db.pool,
        "UPDATE rollup_blocks SET raw_hits = raw_hits + 6, impressions = impressions + 6",
    )
    .await;
    let drift = verify(&db.pool, None).await;
    assert!(
        drift.iter().all(|m| m.what == "day_blocks") && !drift.is_empty(),
        "{drift:#?}"
    );

    let r = daily::rebuild_blocks(&db.pool, None).await.unwrap();
    assert_eq!((r.was, r.through), (daily::fold_through(today), yesterday));
    let first = |d: time::Date, span: i64| {
        let n = (d - time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap())
            .whole_days();
        n - n.rem_euclid(span)
    };
    let blocks: u64 = [2, 4, 8, 16, 32, 64, 128]
        .iter()
        .map(|&span| {
            if first(old, span) == first(yesterday, span) {
                1
            } else {
                2
            }
        })
        .sum();
    assert_eq!(r.rows, blocks, "the blocks of both days");
    assert_eq!(raw_in_two_day_blocks(&db.pool).await, 10);
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn loads_share_the_blocks_mark_and_a_fold_waits_for_every_load_in_flight() {
    let db = TestDb::new().await;
    // What a load takes to read the mark (store::share_mark), held to its
    // commit. Two loads hold it at once: neither waits for the other.
    let share = "SELECT blocks_through FROM counting_state FOR SHARE";
    let mut load_a = db.pool.begin().await.unwrap();
    sqlx::query(share).execute(&mut *load_a).await.unwrap();
    let mut load_b = db.pool.begin().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sqlx::query(share).execute(&mut *load_b),
    )
    .await
    .expect("a second load does not wait for the first")
    .unwrap();
    let through = time::OffsetDateTime::now_utc().date();
    let fold = tokio::spawn({
        let pool = db.pool.clone();
        async move { daily::fold_blocks(&pool, through).await }
    });
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND query LIKE 'SELECT blocks_through%'";
    let started = std::time::Instant::now();
    while count(&db.pool, waiting).await == 0 {
        assert!(!fold.is_finished(), "the fold ran during the loads");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the fold never waited on the loads"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    load_a.commit().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!fold.is_finished(), "the fold waits for the last load too");
    load_b.commit().await.unwrap();
    let folded = fold.await.unwrap().unwrap().expect("the mark moves");
    assert_eq!(folded.through, through);
}

#[tokio::test]
async fn verify_reports_a_day_whose_keys_are_not_the_keys_of_its_events() {
    let db = TestDb::new().await;
    let events = impressions(0..3, datetime!(2026-11-26 12:00 UTC));
    load_events(&db.pool, "keys-off", &events).await;
    assert_books_balance(&db.pool).await;

    // A counting key no event gives, and a listener key gone.
    exec(
        &db.pool,
        "INSERT INTO counting_keys (day, listener, key) VALUES ('2026-11-26', 1, 2)",
    )
    .await;
    exec(
        &db.pool,
        "DELETE FROM listener_keys WHERE (listener, key) =
            (SELECT listener, key FROM listener_keys ORDER BY listener, key LIMIT 1)",
    )
    .await;
    let found = verify(&db.pool, None).await;
    let off: Vec<(&str, &str, i64, i64)> = found
        .iter()
        .map(|m| {
            (
                m.what.as_str(),
                m.key.as_str(),
                m.from_events,
                m.from_rollups,
            )
        })
        .collect();
    assert_eq!(
        off,
        vec![
            ("counting_keys", "2026-11-26", 3, 4),
            // Three listeners, campaign-wide and for their creative.
            ("listener_keys", "2026-11-26", 6, 5),
        ]
    );
    // Scoped to one campaign, the check cannot tell keys apart: not run.
    assert!(verify(&db.pool, Some("c1")).await.is_empty());
}

#[tokio::test]
async fn a_loader_older_than_the_key_tables_cannot_append_to_the_old_key_logs() {
    // Migration 11: a loader of the previous version, still running during
    // a rollout, appended its keys to counted_keys and daily_listeners by
    // COPY. It must not count beside the key tables: its appends fail, so
    // its load rolls back and is retried until it is replaced.
    let db = TestDb::new().await;
    for table in ["counted_keys", "daily_listeners"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table}_p20261126 PARTITION OF {table}
             FOR VALUES FROM ('2026-11-26') TO ('2026-11-27')"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        let copy = async {
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table} (day, key, epoch) FROM STDIN"))
                .await?;
            copy.send(&b"2026-11-26\t6f1c2f5e-0000-4000-8000-000000000001\t7\n"[..])
                .await?;
            copy.finish().await
        };
        let err = copy.await.expect_err("the append is refused");
        assert!(
            err.to_string()
                .contains("counting keys live in counting_keys and listener_keys"),
            "{table}: {err}"
        );
        assert_eq!(
            count(&db.pool, &format!("SELECT count(*) FROM {table}")).await,
            0
        );
    }
}

#[tokio::test]
async fn a_loader_older_than_listener_led_keys_cannot_insert_its_keys() {
    // Migration 32: a loader of the previous version, still running during
    // a rollout, inserted 16-byte keys as uuids. Keys of the two layouts
    // never match, so it must not count beside the new loaders: its insert
    // fails, its load rolls back and is retried until it is replaced.
    let db = TestDb::new().await;
    load_events(
        &db.pool,
        "today",
        &impressions(0..1, datetime!(2026-11-26 12:00 UTC)),
    )
    .await;
    for table in ["counting_keys", "listener_keys"] {
        let before = count(&db.pool, &format!("SELECT count(*) FROM {table}")).await;
        let err = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (day, key) SELECT * FROM UNNEST($1::date[], $2::uuid[])
             ON CONFLICT DO NOTHING RETURNING day, key"
        )))
        .bind(vec![time::macros::date!(2026 - 11 - 26)])
        .bind(vec![uuid::Uuid::from_u128(7)])
        .execute(&db.pool)
        .await
        .expect_err("the old layout's insert is refused");
        assert!(
            err.to_string()
                .contains("column \"key\" is of type bigint but expression is of type uuid"),
            "{table}: {err}"
        );
        assert_eq!(
            count(&db.pool, &format!("SELECT count(*) FROM {table}")).await,
            before,
            "{table}"
        );
    }
}

/// Each reach sketch row of `c1`: (dim, value, the row's xmin, its
/// sketch's compression).
async fn sketch_rows(pool: &sqlx::PgPool) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT dim, value, xmin::text, pg_column_compression(sketch)
         FROM reach_sketches WHERE campaign = 'c1' ORDER BY dim, value",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_load_rewrites_only_the_day_sketches_it_adds_listeners_to() {
    let db = TestDb::new().await;
    let t = datetime!(2026-11-26 10:00 UTC);
    // 3,000 listeners: dense sketches (past the sparse form's 2,048).
    load_events(&db.pool, "sketch-first", &impressions(0..3_000, t)).await;
    let before = sketch_rows(&db.pool).await;
    assert!(!before.is_empty());
    for (dim, value, _, compression) in &before {
        assert_eq!(
            compression.as_deref(),
            Some("lz4"),
            "{dim}={value}: 16 KiB of registers, compressed with lz4 (migration 30)"
        );
    }

    // Ten of them again, counted (another episode), so every sketch but
    // the new episode's already holds them.
    let again: Vec<_> = (0..10)
        .map(|n| {
            ev(
                t + time::Duration::hours(1),
                "c1",
                "cr1",
                Some("e2"),
                EventKind::Impression,
                n,
                Verdict::Valid,
            )
        })
        .collect();
    load_events(&db.pool, "sketch-again", &again).await;
    assert_eq!(totals(&db.pool, "c1").await.1, 3_010, "the ten counted");
    let after = sketch_rows(&db.pool).await;
    let rewritten: Vec<&(String, String, String, Option<String>)> =
        after.iter().filter(|row| !before.contains(row)).collect();
    let names: Vec<(&str, &str)> = rewritten
        .iter()
        .map(|(dim, value, _, _)| (dim.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        names,
        [("episode", "e2")],
        "only the new episode's row is written"
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_load_touching_more_sketches_than_a_batch_merges_every_one() {
    let db = TestDb::new().await;
    let t = datetime!(2026-11-26 10:00 UTC);
    // 200 episodes: more day sketches than one round merges (128 keys).
    let on_episodes = |who: std::ops::Range<u32>, at| -> Vec<TrackingEvent> {
        who.map(|n| {
            let episode = format!("e{}", n % 200);
            ev(
                at,
                "c1",
                "cr1",
                Some(episode.as_str()),
                EventKind::Impression,
                n,
                Verdict::Valid,
            )
        })
        .collect()
    };
    load_events(&db.pool, "batches-first", &on_episodes(0..400, t)).await;
    let rows = sketch_rows(&db.pool).await;
    assert!(
        rows.len() > 200,
        "one sketch per episode and more: {}",
        rows.len()
    );
    // New listeners on every episode: each of those rows is locked, united
    // and written back, over two rounds.
    let later = t + time::Duration::hours(1);
    load_events(&db.pool, "batches-again", &on_episodes(400..800, later)).await;
    let after = sketch_rows(&db.pool).await;
    let rewritten = after
        .iter()
        .filter(|(dim, _, _, _)| dim == "episode")
        .filter(|row| !rows.contains(row))
        .count();
    assert_eq!(
        rewritten, 200,
        "every episode's sketch took its new listeners"
    );
    // Each stored sketch is the one its raw events give.
    assert_books_balance(&db.pool).await;
}
