//! The metric registry against the migrated schema: every statement that
//! names a counter is generated from the registry, so a counter added to it
//! needs only the migration that gives the daily tables its column.

use earshot_domain::metric::{counter_index, Hits, Metric, Registry, Source, METRICS};
use earshot_domain::{EventKind, TrackingEvent, Verdict};
use earshot_loader::counting::{self, rollups::Tally, Staged};
use earshot_loader::daily::DailySql;
use earshot_loader::verify::{Mismatch, RecountSql};
use earshot_platform::rollup::{schema_gaps, SchemaGaps};
use earshot_platform::testing::TestDb;
use earshot_reporting::report::query::{run_with, ReportSql};
use earshot_reporting::report::{to_csv, BlocksMark, ReportParams, ReportSpec};
use sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

/// A copy of the registry with one more counter, as a change adding it
/// would write.
fn registry_with_invalid_clicks() -> Registry {
    let mut copy = METRICS.to_vec();
    copy.push(Metric {
        name: "invalid_clicks",
        source: Source::Counter {
            hits: Hits::Invalid,
            kind: Some(EventKind::Click),
        },
        doc: "Invalid clicks.",
    });
    Box::leak(copy.into_boxed_slice())
}

/// The migration that change would need, by hand.
const ADD_INVALID_CLICKS: &str = "
    ALTER TABLE rollup_daily ADD COLUMN invalid_clicks bigint NOT NULL DEFAULT 0;
    ALTER TABLE rollup_blocks ADD COLUMN invalid_clicks bigint NOT NULL DEFAULT 0";

/// A total over two whole days, `first` and the next, which one block of
/// two days holds once both are folded.
fn two_day_total(first: Date) -> ReportSpec {
    let params = ReportParams {
        from: Some(first.to_string()),
        to: Some((first + Duration::days(2)).to_string()),
        granularity: Some("total".into()),
        ..Default::default()
    };
    ReportSpec::parse(&params, false, OffsetDateTime::now_utc()).unwrap()
}

/// Every statement generated from `registry` that reads or writes the
/// daily tables' counters.
fn daily_statements(registry: Registry, first: Date) -> Vec<String> {
    let write = DailySql::new(registry);
    let recount = RecountSql::new(registry);
    let spec = two_day_total(first);
    let with_blocks = ReportSql::new(&spec, registry, true);
    let without = ReportSql::new(&spec, registry, false);
    vec![
        write.upsert,
        write.fold,
        recount.daily,
        recount.blocks,
        with_blocks.rows,
        without.rows,
        without.totals,
    ]
}

async fn prepare(pool: &PgPool, sql: &str) -> Result<(), sqlx::Error> {
    pool.prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .map(drop)
}

/// A day two to three weeks back whose distance from 1970-01-01 is even: it
/// starts a block of two days.
fn even_day() -> Date {
    let mut d = OffsetDateTime::now_utc().date() - Duration::days(20);
    let epoch = time::macros::date!(1970 - 01 - 01);
    if (d - epoch).whole_days() % 2 == 1 {
        d -= Duration::days(1);
    }
    d
}

/// Event `n` of campaign c1, creative cr1, `n` minutes into `day`, by
/// listener `n`.
fn event(n: u32, day: Date, kind: EventKind, verdict: Verdict) -> TrackingEvent {
    earshot_testkit::event()
        .id(Uuid::from_u128(n.into()))
        .ts(day.midnight().assume_utc() + Duration::minutes(n.into()))
        .listener(n)
        .kind(kind)
        .verdict(verdict)
        .build()
}

#[tokio::test]
async fn the_daily_tables_hold_a_column_for_each_counter_and_no_other() {
    let db = TestDb::new().await;
    assert_eq!(
        schema_gaps(&db.pool, METRICS).await.unwrap(),
        SchemaGaps::default()
    );
    for sql in daily_statements(METRICS, even_day()) {
        prepare(&db.pool, &sql)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    }
}

#[tokio::test]
async fn a_counter_added_to_a_copy_of_the_registry_needs_only_its_migration() {
    let db = TestDb::new().await;
    let copy = registry_with_invalid_clicks();
    let day = even_day();

    // Without the migration, the schema lacks exactly the new column, and
    // every generated statement over the daily tables fails on it.
    assert_eq!(
        schema_gaps(&db.pool, copy).await.unwrap(),
        SchemaGaps {
            missing: vec![
                "rollup_daily.invalid_clicks".into(),
                "rollup_blocks.invalid_clicks".into()
            ],
            unknown: vec![],
        }
    );
    for sql in daily_statements(copy, day) {
        let e = prepare(&db.pool, &sql).await.unwrap_err().to_string();
        assert!(
            e.contains("column") && e.contains("invalid_clicks") && e.contains("does not exist"),
            "{e}\n{sql}"
        );
    }

    // With it, nothing else needs a hand.
    sqlx::raw_sql(ADD_INVALID_CLICKS)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(schema_gaps(&db.pool, copy).await.unwrap().is_empty());
    for sql in daily_statements(copy, day) {
        prepare(&db.pool, &sql)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    }

    // The tally counts it, the daily tables and their blocks store it,
    // verify recounts it, and the report shows it in JSON and CSV.
    let events = [
        event(1, day, EventKind::Click, Verdict::Invalid),
        event(2, day, EventKind::Click, Verdict::Invalid),
        event(
            3,
            day + Duration::days(1),
            EventKind::Click,
            Verdict::Invalid,
        ),
        event(4, day, EventKind::Click, Verdict::Valid),
        event(5, day, EventKind::Click, Verdict::Bot),
        event(6, day, EventKind::Impression, Verdict::Invalid),
    ];
    let staged: Vec<Staged> = events.into_iter().map(counting::stage).collect();
    let fresh: Vec<&Staged> = staged.iter().collect();
    let counted: Vec<bool> = fresh
        .iter()
        .map(|s| s.event.verdict == Verdict::Valid)
        .collect();
    let rollups = Tally::new(copy).rollups(&fresh, &counted);
    let col = counter_index(copy, "invalid_clicks").unwrap();
    let stored: Vec<i64> = rollups.daily.iter().map(|(_, v)| v[col]).collect();
    // Per day and creative: invalid hits under no creative.
    assert_eq!(stored, [2, 0, 1]);

    let mut tx = db.pool.begin().await.unwrap();
    for (k, counts) in &rollups.hourly {
        sqlx::query(
            "INSERT INTO rollup_hourly (campaign, hour, creative, episode, show, placement, event,
                 country, app, device, raw_hits, counted_hits, bot_hits, invalid_hits, grp)
             VALUES ($1, to_timestamp($2), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(k.campaign)
        .bind(k.hour as f64)
        .bind(k.creative)
        .bind(k.episode)
        .bind(k.show)
        .bind(k.placement)
        .bind(k.event)
        .bind(k.country)
        .bind(k.app)
        .bind(k.device)
        .bind(counts[0])
        .bind(counts[1])
        .bind(counts[2])
        .bind(counts[3])
        .bind(k.group)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let through = day + Duration::days(1);
    sqlx::query("UPDATE counting_state SET blocks_through = $1")
        .bind(through)
        .execute(&mut *tx)
        .await
        .unwrap();
    DailySql::new(copy)
        .upsert(&mut tx, &rollups, through)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let recount = RecountSql::new(copy);
    for sql in [&recount.daily, &recount.blocks] {
        let off: Vec<Mismatch> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(None::<String>)
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(off, vec![], "{sql}");
    }
    let blocks: i64 = sqlx::query_scalar(
        "SELECT sum(invalid_clicks)::bigint FROM rollup_blocks WHERE span_days = 2 AND first_day = $1",
    )
    .bind(day)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(blocks, 3);

    let spec = two_day_total(day);
    let report = run_with(
        &db.pool,
        &BlocksMark::default(),
        &Default::default(),
        "c1",
        &spec,
        copy,
    )
    .await
    .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][0]["invalid_clicks"], 3);
    assert_eq!(json["totals"]["invalid_clicks"], 3);
    assert_eq!(json["totals"]["invalid_hits"], 4);
    let csv = to_csv(&report, &spec);
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let at = header.iter().position(|h| *h == "invalid_clicks").unwrap();
    assert_eq!(lines[1].split(',').nth(at), Some("3"));
}
