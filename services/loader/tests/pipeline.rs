//! The run loop overlaps objects (the next one's events go in while the
//! previous one counts and commits); what it writes must be what loading
//! the objects strictly one after the other writes, row for row, also when
//! a half of an object's transaction fails.

mod support;

use earshot_domain::TrackingEvent;
use earshot_platform::testing::TestDb;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use support::*;
use time::macros::datetime;

/// Six objects 20 minutes apart, each repeating the tail of the one before
/// (a Firehose retry: same ids) and, through `sample`'s 50 listeners, most
/// of its counting keys: which object counts a key decides the hour, creative
/// and kind its counted hit is filed under.
fn write_overlapping_objects(tag: &str) -> earshot_testkit::TempDir {
    let dir = temp_dir(tag);
    let base = datetime!(2026-11-26 10:00 UTC);
    let fresh: Vec<Vec<TrackingEvent>> = (0..6)
        .map(|i| sample(1200, base + time::Duration::minutes(20 * i)))
        .collect();
    for (i, events) in fresh.iter().enumerate() {
        let mut object = events.clone();
        if i > 0 {
            object.extend_from_slice(&fresh[i - 1][900..]);
        }
        write_object(&dir, &format!("o{i}.ndjson"), &ndjson(&object));
    }
    dir
}

/// Loads `dir`'s objects one at a time in name order, each object's
/// transaction committed before the next begins.
async fn load_one_by_one(pool: &PgPool, dir: &std::path::Path) {
    let l = loader(pool, dir, opts()).await;
    for i in 0..6 {
        l.load_one(&dir_object(dir, &format!("o{i}.ndjson")))
            .await
            .unwrap();
    }
}

/// Everything the loads wrote, as text to compare: hourly groups (summed:
/// a merge may have folded rows), daily rows, uniques, counting and
/// listener keys, and the ledger.
async fn written(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT string_agg(g, E'\\n' ORDER BY g) FROM (
            SELECT concat_ws(' ', campaign, hour, creative, episode, show, placement, event,
                             country, app, device, region, sum(raw_hits), sum(counted_hits),
                             sum(bot_hits), sum(invalid_hits)) g
            FROM rollup_hourly GROUP BY campaign, hour, creative, episode, show, placement,
                                        event, country, app, device, region) t",
        "SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM rollup_daily r",
        "SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM daily_uniques r",
        "SELECT string_agg(day || ' ' || key, E'\\n' ORDER BY day, key) FROM counting_keys",
        "SELECT string_agg(day || ' ' || key, E'\\n' ORDER BY day, key) FROM listener_keys",
        "SELECT string_agg(concat_ws(' ', object_key, lines, events, new_events, duplicates,
                                     quarantined), E'\\n' ORDER BY object_key) FROM loaded_objects",
    ];
    let mut out = Vec::new();
    for q in queries {
        let text: Option<String> = sqlx::query_scalar(q).fetch_one(pool).await.unwrap();
        out.push(text.expect("the loads wrote rows"));
    }
    out
}

#[tokio::test]
async fn the_overlapping_run_writes_what_one_object_at_a_time_writes() {
    let dir = write_overlapping_objects("pipeline-same");
    let overlapped = TestDb::new().await;
    let one_by_one = TestDb::new().await;
    let s = load_dir(&overlapped.pool, &dir).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates),
        (6, 7200, 1500)
    );
    load_one_by_one(&one_by_one.pool, &dir).await;
    assert_books_balance(&overlapped.pool).await;
    let (got, want) = (
        written(&overlapped.pool).await,
        written(&one_by_one.pool).await,
    );
    for (table, (got, want)) in [
        "hourly",
        "daily",
        "uniques",
        "counted",
        "listeners",
        "ledger",
    ]
    .iter()
    .zip(got.iter().zip(&want))
    {
        assert_eq!(got, want, "{table} differs");
    }
    // The counted hits sit where the first object holding their key put
    // them: o0's hour holds more counted hits than all later ones together.
    let (first, later): (i64, i64) = sqlx::query_as(
        "SELECT sum(counted_hits) FILTER (WHERE hour = '2026-11-26 10:00Z')::bigint,
                sum(counted_hits) FILTER (WHERE hour > '2026-11-26 10:00Z')::bigint
         FROM rollup_hourly",
    )
    .fetch_one(&overlapped.pool)
    .await
    .unwrap();
    assert!(first > later, "{first} counted at 10:00, {later} after");
}

/// Makes `object`'s second half fail once (the ledger update, its last
/// statement before the commit) and `other`'s first half fail once (the
/// claim, its first). Sequences, not tables, count the failures: they are
/// not rolled back with the failing transaction.
async fn fail_once(pool: &PgPool, second_half: &str, first_half: &str) {
    for statement in [
        "CREATE SEQUENCE fail_finish".to_string(),
        "CREATE SEQUENCE fail_begin".to_string(),
        format!(
            "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               -- Nested: SQL does not promise to skip nextval when the
               -- key differs.
               IF TG_OP = 'UPDATE' AND NEW.object_key = '{second_half}' THEN
                 IF nextval('fail_finish') = 1 THEN
                   RAISE EXCEPTION 'injected: the second half of {second_half} fails';
                 END IF;
               END IF;
               IF TG_OP = 'INSERT' AND NEW.object_key = '{first_half}' THEN
                 IF nextval('fail_begin') = 1 THEN
                   RAISE EXCEPTION 'injected: the first half of {first_half} fails';
                 END IF;
               END IF;
               RETURN NEW;
             END $$"
        ),
        "CREATE TRIGGER fail_once BEFORE INSERT OR UPDATE ON loaded_objects
         FOR EACH ROW EXECUTE FUNCTION fail_once()"
            .to_string(),
    ] {
        sqlx::query(AssertSqlSafe(statement.as_str()))
            .execute(pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_failed_half_is_loaded_again_whole_and_the_run_writes_the_same() {
    let dir = write_overlapping_objects("pipeline-fail");
    let failing = TestDb::new().await;
    let one_by_one = TestDb::new().await;
    // o2's second half fails while o3's first half is in; o4's first half
    // fails while o3's second half runs.
    fail_once(&failing.pool, "o2.ndjson", "o4.ndjson").await;
    let s = load_dir(&failing.pool, &dir).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates),
        (6, 7200, 1500)
    );
    for sequence in ["fail_finish", "fail_begin"] {
        let calls: i64 =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT last_value FROM {sequence}")))
                .fetch_one(&failing.pool)
                .await
                .unwrap();
        assert_eq!(calls, 2, "{sequence}: failed once, then passed once");
    }
    load_one_by_one(&one_by_one.pool, &dir).await;
    assert_books_balance(&failing.pool).await;
    assert_eq!(
        written(&failing.pool).await,
        written(&one_by_one.pool).await
    );
    assert_eq!(
        count(&failing.pool, "SELECT count(*) FROM events").await,
        7200
    );
}
