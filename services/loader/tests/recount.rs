//! A campaign's day recounted from the raw events as Athena reads them in S3
//! (`earshot athena-sql`), compared with the rollups (`earshot verify
//! --recount`). Athena is not here: the Glue table is a PostgreSQL table of
//! the same columns (from `WIRE_FIELDS`) and partition keys, holding the
//! lines as Firehose files them, retries and late arrivals included, and the
//! generated query, standard SQL, runs on it.

mod support;

use earshot_domain::{EventKind, TrackingEvent, Verdict, WireType, WIRE_FIELDS};
use earshot_loader::recount::{athena_sql, Recount, RecountFileError};
use earshot_platform::testing::TestDb;
use sqlx::{AssertSqlSafe, PgPool, Row};
use support::*;
use time::macros::{date, datetime};
use time::OffsetDateTime;

/// The Glue table of the SAM template, as a PostgreSQL table.
async fn create_glue_table(pool: &PgPool) {
    let columns: Vec<String> = WIRE_FIELDS
        .iter()
        .map(|f| {
            let ty = match f.ty {
                WireType::Int => "integer",
                WireType::BigInt => "bigint",
                WireType::String => "text",
            };
            format!("\"{}\" {ty}", f.name)
        })
        .chain(["year", "month", "day", "hour"].map(|p| format!("{p} text")))
        .collect();
    sqlx::query("CREATE SCHEMA earshot")
        .execute(pool)
        .await
        .unwrap();
    // Column names of the wire schema only.
    let sql = format!("CREATE TABLE earshot.events ({})", columns.join(", "));
    sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
}

/// Files `events` as Firehose does: their lines under the hour they arrived.
async fn land_in_s3(pool: &PgPool, arrived: OffsetDateTime, events: &[TrackingEvent]) {
    for ev in events {
        let mut line: serde_json::Value = serde_json::from_slice(&ev.to_ndjson()).unwrap();
        line["year"] = format!("{:04}", arrived.year()).into();
        line["month"] = format!("{:02}", u8::from(arrived.month())).into();
        line["day"] = format!("{:02}", arrived.day()).into();
        line["hour"] = format!("{:02}", arrived.hour()).into();
        sqlx::query("INSERT INTO earshot.events SELECT * FROM jsonb_populate_record(NULL::earshot.events, $1)")
            .bind(line)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The query's result as Athena writes it: a header, every value quoted.
async fn athena_csv(pool: &PgPool, sql: &str) -> String {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(vec![]);
    w.write_record(earshot_loader::recount::expected_header())
        .unwrap();
    for row in rows {
        let mut record: Vec<String> = (0..5).map(|i| row.get::<String, _>(i)).collect();
        record.extend((5..9).map(|i| row.get::<i64, _>(i).to_string()));
        w.write_record(&record).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn invalid(ev: TrackingEvent) -> TrackingEvent {
    TrackingEvent {
        verdict: Verdict::Invalid,
        reason: Some("bad_signature".into()),
        ..ev
    }
}

#[tokio::test]
async fn an_athena_recount_of_a_day_equals_its_rollups_and_differences_are_reported() {
    use EventKind::*;
    use Verdict::*;
    let db = TestDb::new().await;
    let dir = temp_dir("recount");
    let t = datetime!(2026-11-26 10:00 UTC);
    let s = time::Duration::seconds;
    let retried = ev(t + s(2), "c1", "cr1", Some("e1"), Impression, 2, Valid);
    let first = vec![
        ev(t, "c1", "cr1", Some("e1"), Impression, 1, Valid),
        ev(t + s(1), "c1", "cr1", Some("e1"), Impression, 1, Valid),
        retried.clone(),
        ev(t + s(3), "c1", "cr1", None, Impression, 1, Valid),
        ev(t + s(4), "c1", "cr2", Some("e1"), Start, 3, Valid),
        ev(t + s(5), "c1", "cr2", Some("e1"), Start, 4, Bot),
        invalid(ev(t + s(6), "c1", "cr1", Some("e1"), Impression, 5, Valid)),
        ev(t + s(7), "c2", "cr1", Some("e1"), Impression, 1, Valid),
        // The day before, filed under this day's first hour.
        ev(
            datetime!(2026-11-25 23:59:59 UTC),
            "c1",
            "cr1",
            Some("e1"),
            Impression,
            6,
            Valid,
        ),
    ];
    let second = vec![
        // The day's last hit, arriving after midnight.
        ev(
            datetime!(2026-11-26 23:59:59.5 UTC),
            "c1",
            "cr1",
            Some("e1"),
            Impression,
            7,
            Valid,
        ),
        // A Firehose retry: the same line again, in the next object.
        retried,
        ev(
            datetime!(2026-11-27 00:00:01 UTC),
            "c1",
            "cr1",
            Some("e1"),
            Impression,
            8,
            Valid,
        ),
    ];
    write_object(&dir, "a.ndjson", &ndjson(&first));
    write_object(&dir, "b.ndjson", &ndjson(&second));
    let loaded = load_dir(&db.pool, &dir).await;
    assert_eq!((loaded.events_new, loaded.duplicates), (11, 1));

    create_glue_table(&db.pool).await;
    land_in_s3(&db.pool, datetime!(2026-11-26 10:00 UTC), &first).await;
    land_in_s3(&db.pool, datetime!(2026-11-27 00:00 UTC), &second).await;

    let sql = athena_sql("earshot", "c1", date!(2026 - 11 - 26)).unwrap();
    let csv = athena_csv(&db.pool, &sql).await;
    // The invalid hit is counted under its campaign alone, as the rollups
    // file it.
    assert_eq!(
        csv,
        "\"campaign\",\"day\",\"creative\",\"episode\",\"event\",\"raw_hits\",\"counted_hits\",\"bot_hits\",\"invalid_hits\"\n\
         \"c1\",\"2026-11-26\",\"\",\"\",\"impression\",\"1\",\"0\",\"0\",\"1\"\n\
         \"c1\",\"2026-11-26\",\"cr1\",\"\",\"impression\",\"1\",\"1\",\"0\",\"0\"\n\
         \"c1\",\"2026-11-26\",\"cr1\",\"e1\",\"impression\",\"4\",\"3\",\"0\",\"0\"\n\
         \"c1\",\"2026-11-26\",\"cr2\",\"e1\",\"start\",\"2\",\"1\",\"1\",\"0\"\n"
    );
    let recount = Recount::parse_csv(&csv).unwrap();
    assert_eq!(recount.days(), [("c1".to_owned(), date!(2026 - 11 - 26))]);
    assert_eq!(recount.compare(&db.pool).await.unwrap(), []);

    // One count off, and a row missing: each difference is reported.
    let tampered = csv
        .replace(
            "\"e1\",\"impression\",\"4\",\"3\"",
            "\"e1\",\"impression\",\"4\",\"4\"",
        )
        .replace(
            "\"c1\",\"2026-11-26\",\"cr2\",\"e1\",\"start\",\"2\",\"1\",\"1\",\"0\"\n",
            "",
        );
    let got: Vec<(String, String, i64, i64)> = Recount::parse_csv(&tampered)
        .unwrap()
        .compare(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.what, m.key, m.from_events, m.from_rollups))
        .collect();
    let m = |what: &str, key: &str, file, rollups| (what.to_owned(), key.to_owned(), file, rollups);
    assert_eq!(
        got,
        [
            m(
                "recount_counted_hits",
                "c1/cr1/e1/impression/2026-11-26",
                4,
                3
            ),
            m("recount_raw_hits", "c1/cr2/e1/start/2026-11-26", 0, 2),
            m("recount_counted_hits", "c1/cr2/e1/start/2026-11-26", 0, 1),
            m("recount_bot_hits", "c1/cr2/e1/start/2026-11-26", 0, 1),
        ]
    );
}

#[test]
fn a_recount_file_that_cannot_be_read_says_why() {
    let header = "\"campaign\",\"day\",\"creative\",\"episode\",\"event\",\"raw_hits\",\"counted_hits\",\"bot_hits\",\"invalid_hits\"\n";
    let row = "\"c1\",\"2026-11-26\",\"cr1\",\"e1\",\"impression\",\"5\",\"3\",\"0\",\"1\"\n";
    let err = |text: &str| Recount::parse_csv(text).unwrap_err();
    assert!(matches!(
        err(&header.replace(",\"counted_hits\"", "")),
        RecountFileError::MissingColumn(c) if c == "counted_hits"
    ));
    assert!(matches!(err(header), RecountFileError::Empty));
    assert!(matches!(
        err(&format!("{header}{row}{row}")),
        RecountFileError::Duplicate { line: 3, .. }
    ));
    let e = err(&format!("{header}{}", row.replace("\"3\"", "\"three\"")));
    assert_eq!(
        e.to_string(),
        "line 2: counted_hits \"three\" is not a count"
    );
    let e = err(&format!(
        "{header}{}",
        row.replace("2026-11-26", "26/11/2026")
    ));
    assert_eq!(
        e.to_string(),
        "line 2: day \"26/11/2026\" is not YYYY-MM-DD"
    );
    // Columns in another order, and one more, read the same.
    let reordered = "\"day\",\"note\",\"campaign\",\"creative\",\"episode\",\"event\",\"invalid_hits\",\"bot_hits\",\"counted_hits\",\"raw_hits\"\n\
                     \"2026-11-26\",\"x\",\"c1\",\"cr1\",\"e1\",\"impression\",\"1\",\"0\",\"3\",\"5\"\n";
    assert_eq!(
        Recount::parse_csv(reordered).unwrap(),
        Recount::parse_csv(&format!("{header}{row}")).unwrap()
    );
}

#[test]
fn operations_gives_the_athena_query_as_earshot_writes_it() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/OPERATIONS.md"
    ))
    .unwrap();
    let sql = athena_sql("earshot", "spring-sale", date!(2026 - 11 - 27)).unwrap();
    assert!(
        doc.contains(&format!("{sql};")),
        "docs/OPERATIONS.md lacks:\n{sql};"
    );
}
