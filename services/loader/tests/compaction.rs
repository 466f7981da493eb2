//! `rollup_hourly` is appended to by loads and merged afterwards: the
//! numbers never change, only how many rows hold them.

mod support;

use earshot_domain::TrackingEvent;
use earshot_loader::compact;
use earshot_platform::testing::TestDb;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use support::*;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const GROUP: &str =
    "campaign, hour, creative, episode, show, placement, event, country, app, device, region";

async fn rows(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM rollup_hourly").await
}

async fn groups(pool: &PgPool) -> i64 {
    count(
        pool,
        &format!("SELECT count(*) FROM (SELECT DISTINCT {GROUP} FROM rollup_hourly) g"),
    )
    .await
}

/// Every group with its four sums, in order.
async fn sums(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT concat_ws('|', {GROUP}, sum(raw_hits), sum(counted_hits), sum(bot_hits), sum(invalid_hits))
         FROM rollup_hourly GROUP BY {GROUP} ORDER BY {GROUP}"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn each_load_appends_its_groups_and_a_merge_folds_them_into_one_row_each() {
    let db = TestDb::new().await;
    let dir = temp_dir("compact-fold");
    let base = datetime!(2026-11-26 10:00 UTC);
    // Six objects in one hour, each holding all 12 groups.
    for i in 0..6 {
        write_object(
            &dir,
            &format!("o{i}.ndjson"),
            &ndjson(&sample(300, base + Duration::minutes(5 * i))),
        );
    }
    let l = loader(&db.pool, &dir, opts()).await;
    for i in 0..6 {
        let s = l
            .load_one(&dir_object(&dir, &format!("o{i}.ndjson")))
            .await
            .unwrap();
        assert_eq!(s.new_events, 300);
    }
    assert_eq!((rows(&db.pool).await, groups(&db.pool).await), (72, 12));
    let before = sums(&db.pool).await;
    assert_eq!(before.len(), 12);
    assert_books_balance(&db.pool).await;

    let c = compact::merge_campaign(&db.pool, "c1", base, base)
        .await
        .unwrap();
    assert_eq!(
        c,
        compact::Compacted {
            merged: 72,
            into: 12
        }
    );
    assert_eq!(rows(&db.pool).await, 12);
    assert_eq!(sums(&db.pool).await, before);
    assert_books_balance(&db.pool).await;

    // Nothing left to merge: a second pass changes nothing.
    let again = compact::merge_campaign(&db.pool, "c1", base, base)
        .await
        .unwrap();
    assert_eq!(again, compact::Compacted::default());
    // Another campaign's name, or hours outside the range, are not touched.
    write_object(
        &dir,
        "later.ndjson",
        &ndjson(&sample(24, base + Duration::hours(2))),
    );
    write_object(
        &dir,
        "later2.ndjson",
        &ndjson(&sample(
            24,
            base + Duration::hours(2) + Duration::minutes(1),
        )),
    );
    l.load_one(&dir_object(&dir, "later.ndjson")).await.unwrap();
    l.load_one(&dir_object(&dir, "later2.ndjson"))
        .await
        .unwrap();
    assert_eq!(rows(&db.pool).await, 12 + 24);
    let other = compact::merge_campaign(&db.pool, "c2", base, base + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(other, compact::Compacted::default());
    let early = compact::merge_campaign(&db.pool, "c1", base, base + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(early, compact::Compacted::default());
    assert_eq!(rows(&db.pool).await, 12 + 24);
}

/// Rows whose `grp` is not the SQL expression of their dimensions.
async fn wrong_group_hashes(pool: &PgPool) -> i64 {
    count(
        pool,
        &format!(
            "SELECT count(*) FROM rollup_hourly WHERE grp IS DISTINCT FROM {}",
            compact::GROUP_HASH_SQL
        ),
    )
    .await
}

#[tokio::test]
async fn the_loaders_group_hash_is_the_sql_one_and_rows_without_it_merge_too() {
    let db = TestDb::new().await;
    let dir = temp_dir("compact-grp");
    let base = datetime!(2026-11-26 10:00 UTC);
    // Empty, non-ASCII and separator-like dimensions: the two hashes must
    // agree on the bytes, not just on plain ids. Some hits have a region,
    // two regions of one country among them.
    let varied = |i: i64| {
        let mut evs = sample(120, base + Duration::minutes(i));
        for (j, e) in evs.iter_mut().enumerate() {
            match j % 4 {
                0 => e.app = Some("Pödcast ✓ – “beta”".into()),
                1 => e.device = None,
                2 => e.episode = None,
                _ => e.app = Some(String::new()),
            }
            if j % 3 == 0 {
                let region = ["US-CA", "US-NY"][j % 2];
                e.region = earshot_domain::RegionCode::parse(region);
                e.country = e.region.map(|r| r.country());
            }
        }
        evs
    };
    for i in 0..4 {
        write_object(&dir, &format!("o{i}.ndjson"), &ndjson(&varied(i)));
    }
    let l = loader(&db.pool, &dir, opts()).await;
    for i in 0..4 {
        l.load_one(&dir_object(&dir, &format!("o{i}.ndjson")))
            .await
            .unwrap();
    }
    let appended = rows(&db.pool).await;
    assert!(
        appended > groups(&db.pool).await,
        "groups repeat across objects"
    );
    assert_eq!(wrong_group_hashes(&db.pool).await, 0);
    // Rows without a region hash as migration 9 hashed them, before the
    // region was a dimension (migration 24); the others by their region.
    let by_region = |cond: &str| {
        format!(
            "SELECT count(*) FROM rollup_hourly WHERE {cond} AND grp IS NOT DISTINCT FROM
             ('x' || left(md5(concat_ws(chr(31), creative, episode, show, placement, event, country, app, device)), 16))::bit(64)::bigint"
        )
    };
    assert_eq!(
        count(&db.pool, &by_region("region = ''")).await,
        count(
            &db.pool,
            "SELECT count(*) FROM rollup_hourly WHERE region = ''"
        )
        .await
    );
    assert_eq!(count(&db.pool, &by_region("region <> ''")).await, 0);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(DISTINCT region) FROM rollup_hourly WHERE region <> ''"
        )
        .await,
        2
    );

    // Rows appended before migration 9 have no hash: take it from the rows
    // of two objects. The merge must still fold them with the hashed rows
    // of their groups.
    sqlx::query("UPDATE rollup_hourly SET grp = NULL WHERE raw_hits > 0 AND ctid IN (SELECT ctid FROM rollup_hourly ORDER BY ctid LIMIT $1)")
        .bind(appended / 2)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(wrong_group_hashes(&db.pool).await, appended / 2);
    let before = sums(&db.pool).await;
    let c = compact::merge_campaign(&db.pool, "c1", base, base)
        .await
        .unwrap();
    assert_eq!(c.merged, appended as u64);
    assert_eq!(rows(&db.pool).await, groups(&db.pool).await);
    assert_eq!(c.into as i64, groups(&db.pool).await);
    assert_eq!(sums(&db.pool).await, before);
    assert_eq!(
        wrong_group_hashes(&db.pool).await,
        0,
        "merged rows get their hash"
    );
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_loader_merges_what_it_appended_before_it_stops() {
    let db = TestDb::new().await;
    let dir = temp_dir("compact-stop");
    let base = datetime!(2026-11-26 22:00 UTC);
    // Objects across three hours (22:00 to 00:xx the next day).
    for i in 0..10 {
        write_object(
            &dir,
            &format!("o{i:02}.ndjson"),
            &ndjson(&sample(120, base + Duration::minutes(15 * i))),
        );
    }
    let s = load_dir(&db.pool, &dir).await;
    assert_eq!((s.objects_loaded, s.events_new), (10, 1200));
    assert_eq!(groups(&db.pool).await, 12 * 3);
    assert_eq!(rows(&db.pool).await, groups(&db.pool).await);
    assert_books_balance(&db.pool).await;

    // The same data loaded as one object has the same groups and sums.
    let clean = TestDb::new().await;
    let events: Vec<TrackingEvent> = (0..10)
        .flat_map(|i| {
            let text = std::fs::read(dir.join(format!("o{i:02}.ndjson"))).unwrap();
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| TrackingEvent::decode(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    load_events(&clean.pool, "compact-stop-clean", &events).await;
    assert_eq!(sums(&db.pool).await, sums(&clean.pool).await);
}

/// Merges the hour of `base` over and over until `done`; rows merged.
async fn merge_until(pool: &PgPool, done: &AtomicBool, base: OffsetDateTime) -> u64 {
    let mut merged = 0;
    while !done.load(SeqCst) {
        merged += compact::merge_campaign(pool, "c1", base, base)
            .await
            .unwrap()
            .merged;
    }
    merged
}

#[tokio::test]
async fn merges_beside_loads_and_each_other_never_change_a_total() {
    // Two merges loop over the hour while objects load. A reader sampling
    // the campaign's raw hits must only ever see whole objects (a multiple
    // of 300, never going down): a merge that lost or doubled rows, or
    // showed its delete without its insert, would break that.
    let db = TestDb::new().await;
    let dir = temp_dir("compact-race");
    let base = datetime!(2026-11-26 10:00 UTC);
    let objects = 16;
    for i in 0..objects {
        write_object(
            &dir,
            &format!("o{i:02}.ndjson"),
            &ndjson(&sample(300, base + Duration::minutes(3 * i))),
        );
    }
    let l = loader(&db.pool, &dir, opts()).await;
    let done = AtomicBool::new(false);
    let load = async {
        for i in 0..objects {
            l.load_one(&dir_object(&dir, &format!("o{i:02}.ndjson")))
                .await
                .unwrap();
        }
        done.store(true, SeqCst);
    };
    let (m1, m2) = (
        merge_until(&db.pool, &done, base),
        merge_until(&db.pool, &done, base),
    );
    let read = async {
        let mut seen = Vec::new();
        while !done.load(SeqCst) {
            seen.push(totals(&db.pool, "c1").await.0);
        }
        seen
    };
    let ((), m1, m2, seen) = tokio::join!(load, m1, m2, read);
    assert!(m1 + m2 > 0, "the merges ran beside the loads");
    assert!(!seen.is_empty());
    for w in seen.windows(2) {
        assert!(w[0] <= w[1], "raw hits went down: {seen:?}");
    }
    for t in &seen {
        assert_eq!(t % 300, 0, "a partial state was visible: {seen:?}");
    }
    compact::merge_campaign(&db.pool, "c1", base, base)
        .await
        .unwrap();
    assert_eq!((rows(&db.pool).await, groups(&db.pool).await), (12, 12));
    assert_eq!(totals(&db.pool, "c1").await.0, 300 * objects);
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_merge_of_named_groups_folds_those_and_leaves_the_hours_other_rows() {
    let db = TestDb::new().await;
    let dir = temp_dir("compact-groups");
    let base = datetime!(2026-11-26 10:00 UTC);
    let l = loader(&db.pool, &dir, opts()).await;
    for i in 0..6 {
        let name = format!("o{i}.ndjson");
        write_object(
            &dir,
            &name,
            &ndjson(&sample(300, base + Duration::minutes(5 * i))),
        );
        l.load_one(&dir_object(&dir, &name)).await.unwrap();
    }
    assert_eq!((rows(&db.pool).await, groups(&db.pool).await), (72, 12));
    let before = sums(&db.pool).await;
    // Five of the twelve groups, each named as often as loads appended it.
    let named: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT extract(epoch FROM hour)::bigint, grp FROM rollup_hourly
         WHERE grp IN (SELECT DISTINCT grp FROM rollup_hourly ORDER BY grp LIMIT 5)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(named.len(), 30);

    let c = compact::merge(&db.pool, "c1", compact::MergeScope::Groups(&named))
        .await
        .unwrap();
    assert_eq!(
        c,
        compact::Compacted {
            merged: 30,
            into: 5
        }
    );
    assert_eq!(rows(&db.pool).await, 72 - 30 + 5);
    assert_eq!(sums(&db.pool).await, before);
    assert_books_balance(&db.pool).await;
    // Another campaign's name finds none of them.
    let other = compact::merge(&db.pool, "c2", compact::MergeScope::Groups(&named))
        .await
        .unwrap();
    assert_eq!(other, compact::Compacted::default());
}
