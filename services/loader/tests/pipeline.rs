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
        "SELECT string_agg(day || ' ' || listener || ' ' || key, E'\\n' ORDER BY day, listener, key)
         FROM counting_keys",
        "SELECT string_agg(day || ' ' || listener || ' ' || key, E'\\n' ORDER BY day, listener, key)
         FROM listener_keys",
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

/// Runs each of `statements` (test fixtures: sequences, functions,
/// triggers) on `pool`.
async fn run_all(pool: &PgPool, statements: impl IntoIterator<Item = String>) {
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement.as_str()))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Makes `object`'s second half fail once (the ledger update, its last
/// statement before the commit) and `other`'s first half fail once (the
/// claim, its first). Sequences, not tables, count the failures: they are
/// not rolled back with the failing transaction.
async fn fail_once(pool: &PgPool, second_half: &str, first_half: &str) {
    run_all(
        pool,
        [
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
        ],
    )
    .await;
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

/// Two objects: o0 of 1,500 events, then o1 of 5,500 (three parts' worth)
/// holding 500 of o0's (a Firehose retry), a line repeating one of its own
/// events, and a line that is not JSON. o1's lines run backwards in time
/// (lines come in arrival order, not time order), over two hours, so a
/// part that held a key's later hits without its earliest would count
/// another hour's.
fn write_objects_for_parts(tag: &str) -> earshot_testkit::TempDir {
    let dir = temp_dir(tag);
    let base = datetime!(2026-11-26 10:00 UTC);
    let first = sample(1500, base);
    // The next day: its keys are its own to count.
    let mut second = sample(
        5000,
        base + time::Duration::hours(24) + time::Duration::minutes(30),
    );
    second.reverse();
    second.extend_from_slice(&first[1000..]);
    let mut text = ndjson(&second);
    text.extend_from_slice(&ndjson(&second[7..8]));
    text.extend_from_slice(b"not an event\n");
    write_object(&dir, "o0.ndjson", &ndjson(&first));
    write_object(&dir, "o1.ndjson", &text);
    dir
}

/// Makes the insert of `o1.ndjson`'s part `part` fail once, and logs every
/// part that goes in (`parts_seen`: the parts' own rows go when the object
/// is whole).
async fn watch_parts(pool: &PgPool, fail_part: i16) {
    run_all(
        pool,
        [
            "CREATE SEQUENCE fail_part".to_string(),
            "CREATE TABLE parts_seen (part smallint, parts smallint, object_id bigint)".to_string(),
            format!(
                "CREATE FUNCTION watch_parts() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.object_key = 'o1.ndjson' AND NEW.part = {fail_part} THEN
                 IF nextval('fail_part') = 1 THEN
                   RAISE EXCEPTION 'injected: part {fail_part} of o1.ndjson fails';
                 END IF;
               END IF;
               INSERT INTO parts_seen VALUES (NEW.part, NEW.parts, NEW.object_id);
               RETURN NEW;
             END $$"
            ),
            "CREATE TRIGGER watch_parts BEFORE INSERT ON loaded_object_parts
         FOR EACH ROW EXECUTE FUNCTION watch_parts()"
                .to_string(),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_object_that_failed_loads_again_in_parts_and_writes_what_a_whole_load_writes() {
    let dir = write_objects_for_parts("pipeline-parts");
    let in_parts = TestDb::new().await;
    let whole = TestDb::new().await;
    // o1's first try fails at its claim; its second loads it in parts, of
    // which the second fails once after the first committed.
    fail_once(&in_parts.pool, "none", "o1.ndjson").await;
    watch_parts(&in_parts.pool, 1).await;
    let s = load_dir(&in_parts.pool, &dir).await;
    let w = load_dir(&whole.pool, &dir).await;
    assert_eq!(
        (s.objects_loaded, s.events_new, s.duplicates, s.quarantined),
        (2, 6500, 501, 1)
    );
    assert_eq!(s, w);

    let seen: Vec<(i16, i16)> = sqlx::query_as("SELECT part, parts FROM parts_seen ORDER BY part")
        .fetch_all(&in_parts.pool)
        .await
        .unwrap();
    assert_eq!(seen, [(0, 3), (1, 3), (2, 3)], "each part in once");
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT p.object_id FROM parts_seen p
         JOIN loaded_objects o ON o.id = p.object_id AND o.object_key = 'o1.ndjson'",
    )
    .fetch_all(&in_parts.pool)
    .await
    .unwrap();
    assert_eq!(ids.len(), 1, "every part's id is the object's");
    let calls: i64 = sqlx::query_scalar("SELECT last_value FROM fail_part")
        .fetch_one(&in_parts.pool)
        .await
        .unwrap();
    assert_eq!(calls, 2, "part 1 failed once, then went in");
    for table in ["loaded_object_parts", "load_attempts"] {
        let n = count(&in_parts.pool, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}: nothing left once the object is whole");
    }
    // The quarantined line is the object's, under its id.
    assert_eq!(
        count(
            &in_parts.pool,
            "SELECT count(*) FROM quarantine q JOIN loaded_objects o ON o.id = q.object_id
             WHERE o.object_key = 'o1.ndjson'"
        )
        .await,
        1
    );
    assert_books_balance(&in_parts.pool).await;
    assert_eq!(written(&in_parts.pool).await, written(&whole.pool).await);
    assert_eq!(
        count(&in_parts.pool, "SELECT count(*) FROM events WHERE object_id IN (SELECT id FROM loaded_objects WHERE object_key = 'o1.ndjson')").await,
        5000
    );
}

#[tokio::test]
async fn the_tries_and_parts_left_by_objects_loaded_since_are_removed_and_no_others() {
    let db = TestDb::new().await;
    let dir = temp_dir("pipeline-prune");
    write_object(
        &dir,
        "o0.ndjson",
        &ndjson(&sample(50, datetime!(2026-11-26 10:00 UTC))),
    );
    assert_eq!(load_dir(&db.pool, &dir).await.objects_loaded, 1);
    let (source, etag): (String, String) =
        sqlx::query_as("SELECT source, etag FROM loaded_objects WHERE object_key = 'o0.ndjson'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    // What the two races leave: o0's try count and one of its parts after
    // o0 is loaded; and the tries and part of o9, which is still loading.
    let leftovers = [
        "INSERT INTO load_attempts (source, object_key, etag, attempts) VALUES ($1, $2, $3, 2)",
        "INSERT INTO loaded_object_parts (source, object_key, etag, part, parts, object_id)
         VALUES ($1, $2, $3, 0, 3, 12345)",
    ];
    for (key, etag) in [("o0.ndjson", etag.as_str()), ("o9.ndjson", "e9")] {
        for sql in leftovers {
            sqlx::query(sql)
                .bind(&source)
                .bind(key)
                .bind(etag)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }

    // The next run's upkeep removes o0's and keeps o9's.
    let again = load_dir(&db.pool, &dir).await;
    assert_eq!((again.objects_loaded, again.objects_skipped), (0, 1));
    let left: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'try', object_key FROM load_attempts
         UNION ALL SELECT 'part', object_key FROM loaded_object_parts ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [("part", "o9.ndjson"), ("try", "o9.ndjson")].map(|(w, k)| (w.to_owned(), k.to_owned()))
    );
}
