//! Report numbers against an independent recount over the raw events table;
//! CSV against JSON; pages; the cache; Redis going away; rate limits.

mod support;

use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;
use support::*;
use time::{Duration, OffsetDateTime, Time};

fn start() -> OffsetDateTime {
    // Inside the retention window, on a day boundary.
    (OffsetDateTime::now_utc() - Duration::days(5)).replace_time(Time::MIDNIGHT)
}

fn iso(t: OffsetDateTime) -> String {
    earshot_reporting::report::format_instant(t)
}

/// `from=…&to=…` for the `days` days from `from`.
fn span(from: OffsetDateTime, days: i64) -> String {
    format!("from={}&to={}", iso(from), iso(from + Duration::days(days)))
}

/// The day a report row's bucket starts.
fn bucket_start(row: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        row["bucket"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Advertiser Acme's app (campaign `acme`) and key, with `days` days of
/// synthetic events from [`start`] loaded.
async fn acme_with_events(
    days: i64,
    listeners: u32,
    seed: u64,
) -> (TestApp, String, OffsetDateTime) {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let s = start();
    load(&app.db, &synthetic_events("acme", s, days, listeners, seed)).await;
    (app, key, s)
}

/// The report counters the recount checks.
const NAMES: [&str; 10] = [
    "impressions",
    "starts",
    "first_quartiles",
    "midpoints",
    "third_quartiles",
    "completes",
    "clicks",
    "raw_hits",
    "bot_hits",
    "invalid_hits",
];

/// The expected rows, computed from `events` alone: the first valid
/// occurrence of each (campaign, creative, episode, event, listener, UTC day)
/// counts, in its own hour; hits are counted from every row (an invalid
/// one under its campaign alone).
async fn expected(
    pool: &sqlx::PgPool,
    campaign: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    bucket: &str,
    dims: &[&str],
) -> BTreeMap<Vec<String>, BTreeMap<&'static str, i64>> {
    let bucket_expr = match bucket {
        "hour" => "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        "day" => "date_trunc('day', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        _ => "$2::timestamptz",
    };
    let dim_cols: String = dims
        .iter()
        .map(|d| format!(", coalesce({d}, '')"))
        .collect();
    // An invalid hit's creative, episode and show are claims nobody
    // vouched for: it is reported under its campaign alone.
    let hit_dim_cols: String = dims
        .iter()
        .map(|d| match *d {
            "creative" | "episode" | "show" => {
                format!(", CASE WHEN verdict = 'invalid' THEN '' ELSE coalesce({d}, '') END")
            }
            _ => format!(", coalesce({d}, '')"),
        })
        .collect();
    let groups: String = (1..=dims.len() + 1)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "WITH firsts AS (
            SELECT DISTINCT ON (creative, coalesce(episode, ''), event, listener, (ts AT TIME ZONE 'UTC')::date) *
            FROM events WHERE campaign = $1 AND verdict = 'valid'
            ORDER BY creative, coalesce(episode, ''), event, listener, (ts AT TIME ZONE 'UTC')::date, ts, id
         ), counted AS (
            SELECT {bucket_expr} AS b {dim_cols},
                   count(*) FILTER (WHERE event = 'impression') AS impressions,
                   count(*) FILTER (WHERE event = 'start') AS starts,
                   count(*) FILTER (WHERE event = 'firstQuartile') AS first_quartiles,
                   count(*) FILTER (WHERE event = 'midpoint') AS midpoints,
                   count(*) FILTER (WHERE event = 'thirdQuartile') AS third_quartiles,
                   count(*) FILTER (WHERE event = 'complete') AS completes,
                   count(*) FILTER (WHERE event = 'click') AS clicks,
                   0::bigint AS raw_hits, 0::bigint AS bot_hits, 0::bigint AS invalid_hits
            FROM firsts WHERE ts >= $2 AND ts < $3 GROUP BY {groups}
         ), hits AS (
            SELECT {bucket_expr} AS b {hit_dim_cols},
                   0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint,
                   count(*) AS raw_hits,
                   count(*) FILTER (WHERE verdict = 'bot') AS bot_hits,
                   count(*) FILTER (WHERE verdict = 'invalid') AS invalid_hits
            FROM events WHERE campaign = $1 AND ts >= $2 AND ts < $3 GROUP BY {groups}
         )
         SELECT * FROM counted UNION ALL SELECT * FROM hits"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(campaign)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out: BTreeMap<Vec<String>, BTreeMap<&'static str, i64>> = BTreeMap::new();
    for r in rows {
        let b: OffsetDateTime = r.get(0);
        let mut key = vec![iso(b)];
        for i in 0..dims.len() {
            key.push(r.get::<String, _>(i + 1));
        }
        let entry = out.entry(key).or_default();
        for (j, n) in NAMES.iter().enumerate() {
            *entry.entry(n).or_default() += r.get::<i64, _>(dims.len() + 1 + j);
        }
    }
    out
}

fn actual(report: &Value, dims: &[&str]) -> BTreeMap<Vec<String>, BTreeMap<&'static str, i64>> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut key = vec![r["bucket"].as_str().unwrap().to_owned()];
            for d in dims {
                key.push(r[*d].as_str().unwrap_or("").to_owned());
            }
            (
                key,
                NAMES
                    .iter()
                    .map(|n| (*n, r[*n].as_i64().unwrap()))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_total_over_days_in_and_out_of_the_blocks_equals_a_recount() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    // Eight days that are one aligned 8-day block (and two of 4 days), in
    // the retention window. The blocks hold them up to the fifth: a fresh
    // database has no blocks, so any mark is true of it.
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap();
    let recent = OffsetDateTime::now_utc().date() - Duration::days(40);
    let first = recent - Duration::days((recent - epoch).whole_days().rem_euclid(8));
    let mark = first + Duration::days(4);
    sqlx::query("UPDATE counting_state SET blocks_through = $1")
        .bind(mark)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let from = first.midnight().assume_utc();
    let to = from + Duration::days(8);
    load_without_upkeep(&app.db, &synthetic_events("acme", from, 8, 40, 11)).await;
    // Each day is in one 2-day block: those hold the days up to the mark.
    let (in_blocks, folded, all): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(raw_hits) FROM rollup_blocks WHERE span_days = 2)::bigint,
                (SELECT sum(raw_hits) FROM rollup_daily WHERE day <= $1)::bigint,
                (SELECT sum(raw_hits) FROM rollup_daily)::bigint",
    )
    .bind(mark)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(in_blocks, folded);
    assert!(folded < all, "the days after the mark have hits");
    // The API's total over [from, to) grouped by `dims` against a recount.
    let total_is_the_recount = |dims: &'static [&'static str]| {
        let (app, key) = (&app, &key);
        async move {
            let path = format!(
                "/v1/campaigns/acme/report?from={}&to={}&granularity=total&group_by={}",
                iso(from),
                iso(to),
                dims.join(",")
            );
            let got = actual(&app.json(&path, key).await, dims);
            assert!(!got.is_empty());
            let want = expected(&app.db.pool, "acme", from, to, "total", dims).await;
            assert_eq!(got, want, "total by {dims:?}");
        }
    };
    total_is_the_recount(&[]).await;
    total_is_the_recount(&["creative", "country"]).await;
    // The loader folds the rest; the API still holds the old mark for a
    // while (BLOCKS_MARK_TTL), which reads single days where it could read
    // blocks, and gives the same numbers.
    let folded = earshot_loader::daily::fold_blocks(&app.db.pool, first + Duration::days(7))
        .await
        .unwrap()
        .expect("the mark moves");
    assert!(folded.rows > 0);
    // A report not asked before, so not served from a cache.
    total_is_the_recount(&["creative"]).await;
}

#[tokio::test]
async fn report_numbers_equal_a_recount_from_raw_events() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let s = start();
    let events = synthetic_events("acme", s, 3, 120, 7);
    assert!(events.len() > 1000, "{}", events.len());
    load(&app.db, &events).await;
    let from = s;
    let to = s + Duration::days(3);
    let cases: &[(&str, &[&str])] = &[
        ("day", &[]),
        ("total", &[]),
        ("hour", &[]),
        ("day", &["creative"]),
        ("total", &["creative", "country"]),
        ("day", &["app", "device"]),
        ("hour", &["placement"]),
        ("total", &["episode", "show"]),
        ("total", &["region"]),
        ("day", &["country", "region"]),
        ("hour", &["region"]),
    ];
    for (gran, dims) in cases {
        let path = format!(
            "/v1/campaigns/acme/report?from={}&to={}&granularity={gran}&group_by={}&limit=10000",
            iso(from),
            iso(to),
            dims.join(",")
        );
        let report = app.json(&path, &key).await;
        let want = expected(&app.db.pool, "acme", from, to, gran, dims).await;
        let got = actual(&report, dims);
        assert_eq!(got, want, "{gran} by {dims:?}");
        assert!(!got.is_empty());
        // Totals equal the sum of the rows.
        let sum: i64 = got.values().map(|m| m["impressions"]).sum();
        assert_eq!(
            report["totals"]["impressions"].as_i64().unwrap(),
            sum,
            "{gran} by {dims:?}"
        );
    }
    // Regions: the ones the hits gave, each within its country, and null
    // where they gave none.
    let by_region = app
        .json(
            &format!(
                "/v1/campaigns/acme/report?{}&granularity=total&group_by=country,region",
                span(from, 3)
            ),
            &key,
        )
        .await;
    let places: Vec<(Option<&str>, Option<&str>)> = by_region["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["country"].as_str(), r["region"].as_str()))
        .collect();
    assert_eq!(
        places,
        [
            (Some("DE"), None),
            (Some("DE"), Some("DE-BE")),
            (Some("FR"), None),
            (Some("GB"), None),
            (Some("US"), None),
            (Some("US"), Some("US-CA")),
            (Some("US"), Some("US-NY")),
        ]
    );
    // Uniques: daily unique listeners with a valid impression.
    let by_day = app
        .json(
            &format!(
                "/v1/campaigns/acme/report?{}&granularity=day",
                span(from, 3)
            ),
            &key,
        )
        .await;
    for row in by_day["rows"].as_array().unwrap() {
        let day = bucket_start(row);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT listener) FROM events WHERE campaign = 'acme' AND verdict = 'valid'
             AND event = 'impression' AND ts >= $1 AND ts < $1 + interval '1 day'",
        )
        .bind(day)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(row["unique_listeners"].as_i64().unwrap(), n);
        let rate = row["completion_rate"].as_f64().unwrap();
        assert!(
            (rate - row["completes"].as_f64().unwrap() / row["starts"].as_f64().unwrap()).abs()
                < 1e-12
        );
    }
    // Per creative too; the row of no creative (invalid hits, under their
    // campaign alone) has none, not the campaign's.
    let by_creative = app
        .json(
            &format!(
                "/v1/campaigns/acme/report?{}&granularity=day&group_by=creative&limit=10000",
                span(from, 3)
            ),
            &key,
        )
        .await;
    let rows = by_creative["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["creative"].is_null()), "{rows:?}");
    for row in rows {
        let day = bucket_start(row);
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT listener) FROM events WHERE campaign = 'acme' AND verdict = 'valid'
             AND event = 'impression' AND ts >= $1 AND ts < $1 + interval '1 day'
             AND creative IS NOT DISTINCT FROM $2",
        )
        .bind(day)
        .bind(row["creative"].as_str())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(row["unique_listeners"].as_i64().unwrap(), n, "{row}");
    }
    let hourly = app
        .json(
            &format!(
                "/v1/campaigns/acme/report?{}&granularity=hour",
                span(from, 3)
            ),
            &key,
        )
        .await;
    assert_eq!(hourly["rows"][0]["unique_listeners"], Value::Null);
}

#[tokio::test]
async fn csv_and_json_carry_the_same_rows_and_pages_cover_everything_once() {
    let (app, key, s) = acme_with_events(2, 80, 11).await;
    let q = format!("{}&granularity=day&group_by=creative,country", span(s, 2));
    let json = app
        .json(&format!("/v1/campaigns/acme/report?{q}"), &key)
        .await;
    let rows = json["rows"].as_array().unwrap();
    let csv = app
        .client
        .get(format!("{}/v1/campaigns/acme/report?{q}", app.base))
        .bearer_auth(&key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        &header[..4],
        ["bucket", "creative", "country", "impressions"]
    );
    assert_eq!(lines.len() - 1, rows.len());
    for (line, row) in lines[1..].iter().zip(rows) {
        let cells: Vec<&str> = line.split(',').collect();
        for (h, c) in header.iter().zip(&cells) {
            let v = &row[*h];
            let expect = match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(*c, expect, "column {h}");
        }
    }
    // Pages of 3 rows, followed by token, give exactly the rows of one big page.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/campaigns/acme/report?{q}&limit=3");
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page = app.json(&path, &key).await;
        paged.extend(page["rows"].as_array().unwrap().iter().cloned());
        pages += 1;
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(&paged, rows);
    assert_eq!(pages, rows.len().div_ceil(3));
}

#[tokio::test]
async fn cached_reports_are_served_gzipped_to_clients_that_accept_it() {
    use std::io::Read as _;
    let (app, key, s) = acme_with_events(2, 60, 4).await;
    let url = format!(
        "{}/v1/campaigns/acme/report?{}&granularity=day&group_by=creative",
        app.base,
        span(s, 2)
    );
    let get = |accept: Option<&'static str>| {
        let mut r = app.client.get(&url).bearer_auth(&key);
        if let Some(a) = accept {
            r = r.header("accept-encoding", a);
        }
        r.send()
    };
    let plain = get(None).await.unwrap();
    assert_eq!(plain.headers()["x-cache"], "miss");
    assert_eq!(plain.headers()["vary"], "Accept-Encoding");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();

    let zipped = get(Some("br;q=1.0, gzip;q=0.8")).await.unwrap();
    assert_eq!(zipped.headers()["x-cache"], "hit");
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped = zipped.bytes().await.unwrap();
    assert!(
        zipped.len() < plain.len() / 3,
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);

    // Refused explicitly (even with `*` allowed): the plain body.
    let refused = get(Some("gzip;q=0, *")).await.unwrap();
    assert_eq!(refused.headers()["x-cache"], "hit");
    assert!(refused.headers().get("content-encoding").is_none());
    assert_eq!(refused.bytes().await.unwrap(), plain);
}

#[tokio::test]
async fn a_load_invalidates_the_cached_report_of_its_campaign_only() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme", "other"]).await;
    let s = start();
    load(&app.db, &synthetic_events("acme", s, 1, 40, 1)).await;
    load(&app.db, &synthetic_events("other", s, 1, 40, 2)).await;
    let q = |c: &str| format!("/v1/campaigns/{c}/report?{}&granularity=total", span(s, 2));
    let first = app.get(&q("acme"), Some(&key)).await;
    assert_eq!(first.headers()["x-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let second = app.get(&q("acme"), Some(&key)).await;
    assert_eq!(second.headers()["x-cache"], "hit");
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    assert_eq!(
        app.get(&q("other"), Some(&key)).await.headers()["x-cache"],
        "miss"
    );
    assert_eq!(
        app.get(&q("other"), Some(&key)).await.headers()["x-cache"],
        "hit"
    );

    // New events for acme, on its second day.
    load(
        &app.db,
        &synthetic_events("acme", s + Duration::days(1), 1, 40, 3),
    )
    .await;
    // The load's commit notifies the API; the next report after it is heard
    // is computed afresh (a miss) with the new numbers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after: Value = loop {
        let r = app.get(&q("acme"), Some(&key)).await;
        if r.headers()["x-cache"] == "miss" {
            break r.json().await.unwrap();
        }
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            first,
            "a hit serves the old version's body"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the load's change was never heard"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(after["totals"]["raw_hits"].as_i64() > first["totals"]["raw_hits"].as_i64());
    // The other campaign's cached report is untouched.
    assert_eq!(
        app.get(&q("other"), Some(&key)).await.headers()["x-cache"],
        "hit"
    );
}

/// A private redis-server on a free port, so stopping it affects this test only.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test installs it)");
        let mut me = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return me;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        me.stop();
        panic!("redis-server did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn with_redis_stopped_the_api_answers_the_same_numbers_and_says_degraded() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app(AppOptions {
        redis_url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        ..AppOptions::default()
    })
    .await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let s = start();
    load(&app.db, &synthetic_events("acme", s, 1, 50, 5)).await;
    let path = format!("/v1/campaigns/acme/report?{}&group_by=creative", span(s, 1));
    assert_eq!(app.json("/readyz", &key).await["status"], "ready");
    let warm = app.get(&path, Some(&key)).await;
    assert_eq!(warm.headers()["x-cache"], "miss");
    let before: Value = warm.json().await.unwrap();
    assert_eq!(app.get(&path, Some(&key)).await.headers()["x-cache"], "hit");

    redis.stop();
    for _ in 0..3 {
        let r = app.get(&path, Some(&key)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), before);
    }
    // A report never cached before is computed from PostgreSQL.
    let fresh = format!("{path},country");
    let r = app.get(&fresh, Some(&key)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "miss");
    let by_country: Value = r.json().await.unwrap();
    assert_eq!(by_country["totals"], before["totals"]);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["redis"].as_str()),
        (Some("degraded"), Some("down"))
    );
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);
}

#[tokio::test]
async fn keys_over_their_rate_limit_get_429_with_retry_after() {
    let app = spawn_app(AppOptions {
        rate_limit_per_minute: 5,
        ..AppOptions::default()
    })
    .await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let (_b, other) = app.advertiser("Globex", &["globex"]).await;
    // The limit is a fixed one-minute window: start well inside one.
    let second = OffsetDateTime::now_utc().second();
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second as u64)).await;
    }
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..7 {
        let r = app.get("/v1/campaigns", Some(&key)).await;
        if r.status() == 429 {
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            retry_after = Some(
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
    let ra = retry_after.unwrap();
    assert!((1..=60).contains(&ra), "{ra}");
    // Limits are per key.
    assert_eq!(app.get("/v1/campaigns", Some(&other)).await.status(), 200);
}

#[tokio::test]
async fn a_rate_limit_is_shared_by_all_replicas_and_never_exceeded() {
    // 1,000 a minute: each replica takes requests from Redis in leases of 10.
    const LIMIT: u32 = 1_000;
    let opts = || AppOptions {
        rate_limit_per_minute: LIMIT,
        ..AppOptions::default()
    };
    let app = spawn_app(opts()).await;
    let second = app.replica(opts()).await;
    let (_a, key) = app.advertiser("Acme", &["acme"]).await;
    let second_ = OffsetDateTime::now_utc().second();
    if second_ > 30 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second_ as u64)).await;
    }
    let bases = [app.base.clone(), second];
    let mut ok = [0u32; 2];
    let mut limited = [0u32; 2];
    for i in 0..(LIMIT as usize + 100) {
        let r = app
            .client
            .get(format!("{}/v1/campaigns", bases[i % 2]))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok[i % 2] += 1,
            429 => limited[i % 2] += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    // Both replicas served, together exactly the limit (the leases left
    // over on one replica are spent before it asks Redis again), and both
    // refuse once the window's requests are gone.
    assert!(ok[0] > 0 && ok[1] > 0, "{ok:?}");
    assert_eq!(ok[0] + ok[1], LIMIT, "{ok:?} {limited:?}");
    assert_eq!(limited[0] + limited[1], 100);
    for base in &bases {
        let r = app
            .client
            .get(format!("{base}/v1/campaigns"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
    }
}

/// Walks a report's pages from `first` (a path and query) by following
/// `Link: <…>; rel="next"`: each page's rows (CSV lines, or JSON rows as
/// text) and its `x-cache`.
async fn follow_links(app: &TestApp, key: &str, first: &str) -> (Vec<String>, Vec<String>) {
    let (path, _) = first.split_once('?').unwrap();
    let mut next = Some(first.to_owned());
    let (mut rows, mut caches) = (Vec::new(), Vec::new());
    while let Some(url) = next.take() {
        let r = app.get(&url, Some(key)).await;
        let status = r.status();
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let cache = r.headers().get("x-cache").cloned();
        let csv = r.headers()["content-type"] == "text/csv; charset=utf-8";
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "GET {url}: {text}");
        caches.push(cache.unwrap().to_str().unwrap().to_owned());
        if csv {
            rows.extend(text.trim_end().split("\r\n").skip(1).map(str::to_owned));
        } else {
            let page: Value = serde_json::from_str(&text).unwrap();
            rows.extend(
                page["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Value::to_string),
            );
            // The body and the header name the same next page.
            assert_eq!(page["next_page_token"].is_string(), link.is_some(), "{url}");
        }
        next = link.map(|l| {
            let target = l
                .strip_prefix('<')
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("a next link: {l}"));
            format!("{path}{target}")
        });
    }
    (rows, caches)
}

/// Pages of three rows, followed by `Link` from the first (computed, then
/// again from the cache), hold exactly the rows of one page of them all.
async fn pages_by_link_hold_every_row_once(format: &str) {
    let (app, key, s) = acme_with_events(2, 80, 11).await;
    let q = format!(
        "{}&granularity=day&group_by=creative,country&include_bots=true&format={format}",
        span(s, 2)
    );
    let path = "/v1/campaigns/acme/report";
    let (all, _) = follow_links(&app, &key, &format!("{path}?{q}")).await;
    let pages = all.len().div_ceil(3);
    assert!(pages > 2, "{} rows", all.len());

    let first = format!("{path}?{q}&limit=3");
    let (rows, caches) = follow_links(&app, &key, &first).await;
    assert_eq!(rows, all);
    assert_eq!(caches, vec!["miss"; pages]);
    let (rows, caches) = follow_links(&app, &key, &first).await;
    assert_eq!(rows, all, "the same pages from the cache");
    assert_eq!(caches, vec!["hit"; pages]);
}

#[tokio::test]
async fn csv_pages_follow_link_to_the_end_with_every_parameter_cached_or_not() {
    pages_by_link_hold_every_row_once("csv").await;
}

#[tokio::test]
async fn json_pages_follow_link_to_the_end_with_every_parameter_cached_or_not() {
    pages_by_link_hold_every_row_once("json").await;
}
