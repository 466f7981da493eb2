//! Reach and frequency through the real loader and API: distinct listeners
//! over a range from the merged reach sketches, against exact counts from
//! the raw events; the listener-id period's upper-bound flag; frequency =
//! impressions / reach.

mod support;

use earshot_domain::{ListenerId, ListenerPeriod, TrackingEvent};
use earshot_platform::sketch::{in_frequency_sample, listener_hash};
use earshot_reporting::report::{ReportParams, ReportSpec};
use earshot_testkit::event;
use earshot_testkit::loader::assert_books_balance;
use serde_json::Value;
use support::*;
use time::{Date, Duration, OffsetDateTime, Time};

fn iso(t: OffsetDateTime) -> String {
    earshot_reporting::report::format_instant(t)
}

fn midnight(d: Date) -> OffsetDateTime {
    d.with_time(Time::MIDNIGHT).assume_utc()
}

/// A listener id as the edge makes them (32 hex digits of a keyed hash),
/// numbered `n` within `salt`.
fn listener(salt: u64, n: u64) -> ListenerId {
    let x = (u128::from(salt) << 64 | u128::from(n))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        .rotate_left(61);
    ListenerId::parse(&format!("{x:032x}")).unwrap()
}

fn impression(
    campaign: &str,
    creative: &str,
    at: OffsetDateTime,
    who: ListenerId,
    period: ListenerPeriod,
) -> TrackingEvent {
    event()
        .at(at)
        .campaign(campaign)
        .creative(creative)
        .listener_id(who)
        .listener_period(period)
        .build()
}

fn report_path(campaign: &str, from: OffsetDateTime, to: OffsetDateTime, rest: &str) -> String {
    format!(
        "/v1/campaigns/{campaign}/report?from={}&to={}&{rest}",
        iso(from),
        iso(to)
    )
}

/// A row's reach, frequency and upper-bound flag.
type ReachFields = (Option<i64>, Option<String>, Option<bool>);

/// A row's (or the totals') reach, frequency and upper-bound flag; the
/// frequency to 12 significant digits (serde_json's parser may miss the
/// sender's last bit).
fn reach_of(row: &Value) -> ReachFields {
    (
        row["reach"].as_i64(),
        row["frequency"].as_f64().map(digits),
        row["reach_upper_bound"].as_bool(),
    )
}

fn digits(x: f64) -> String {
    format!("{x:.12e}")
}

fn f(x: f64) -> Option<String> {
    Some(digits(x))
}

/// Every `reach_sketches` row, as text: what a replay must leave alone.
async fn sketches(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY campaign, day, dim, value), '')
         FROM reach_sketches r",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_listener_heard_on_twenty_days_of_a_month_counts_once_in_its_reach() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["monthly", "daily"]).await;
    // Two months back, so that it and the month after it have ended.
    let today = OffsetDateTime::now_utc().date();
    let this_month = Date::from_calendar_date(today.year(), today.month(), 1).unwrap();
    let next = (this_month - Duration::days(1)).replace_day(1).unwrap();
    let first = (next - Duration::days(1)).replace_day(1).unwrap();
    assert_ne!(first.month(), next.month());

    let regular = listener(1, 0);
    let mut events = Vec::new();
    for d in 0..20 {
        let noon = midnight(first + Duration::days(d)) + Duration::hours(12);
        // The regular listener hears both creatives every day, and
        // someone new hears cr1 each day.
        events.push(impression(
            "monthly",
            "cr1",
            noon,
            regular,
            ListenerPeriod::Month,
        ));
        events.push(impression(
            "monthly",
            "cr2",
            noon + Duration::minutes(1),
            regular,
            ListenerPeriod::Month,
        ));
        events.push(impression(
            "monthly",
            "cr1",
            noon + Duration::minutes(2),
            listener(2, d as u64),
            ListenerPeriod::Month,
        ));
        // A repeat of the same key: not counted, not a new listener.
        events.push(impression(
            "monthly",
            "cr1",
            noon + Duration::minutes(3),
            regular,
            ListenerPeriod::Month,
        ));
        // With daily ids, the same person has a new id every day.
        events.push(impression(
            "daily",
            "cr1",
            noon,
            listener(100 + d as u64, 0),
            ListenerPeriod::Day,
        ));
    }
    // The next month: the regular listener again (a new monthly id in
    // real traffic; the same one here, to show the flag alone).
    let next_noon = midnight(next) + Duration::hours(12);
    events.push(impression(
        "monthly",
        "cr1",
        next_noon,
        regular,
        ListenerPeriod::Month,
    ));
    load(&app.db, &events).await;
    assert_books_balance(&app.db.pool).await;
    // The loader's upkeep folded these days into reach blocks, so the
    // reports in total below read their listeners and periods there.
    let mark: Option<Date> = sqlx::query_scalar("SELECT reach_blocks_through FROM counting_state")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(mark >= Some(next), "{mark:?}");

    let from = midnight(first);
    let to = midnight(first + Duration::days(20));
    let month = app
        .json(&report_path("monthly", from, to, "granularity=total"), &key)
        .await;
    let totals = &month["totals"];
    assert_eq!(totals["impressions"], 60);
    assert_eq!(
        reach_of(totals),
        (Some(21), f(60.0 / 21.0), Some(false)),
        "the regular listener counts once over the 20 days"
    );
    assert_eq!(reach_of(&month["rows"][0]), reach_of(totals));
    // Unique listeners are listener-days: 2 a day.
    assert_eq!(totals["unique_listeners"], 40);

    let by_creative = app
        .json(
            &report_path("monthly", from, to, "granularity=total&group_by=creative"),
            &key,
        )
        .await;
    let rows = by_creative["rows"].as_array().unwrap();
    let got: Vec<(&str, ReachFields)> = rows
        .iter()
        .map(|r| (r["creative"].as_str().unwrap(), reach_of(r)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("cr1", (Some(21), f(40.0 / 21.0), Some(false))),
            ("cr2", (Some(1), f(20.0), Some(false)))
        ]
    );
    assert_eq!(reach_of(&by_creative["totals"]).0, Some(21));

    let by_day = app
        .json(&report_path("monthly", from, to, "granularity=day"), &key)
        .await;
    let days = by_day["rows"].as_array().unwrap();
    assert_eq!(days.len(), 20);
    for r in days {
        assert_eq!(reach_of(r), (Some(2), f(1.5), Some(false)), "{r}");
    }
    assert_eq!(reach_of(&by_day["totals"]).0, Some(21));

    // Across the month boundary: an upper bound.
    let across = app
        .json(
            &report_path(
                "monthly",
                from,
                midnight(next + Duration::days(1)),
                "granularity=total",
            ),
            &key,
        )
        .await;
    assert_eq!(
        reach_of(&across["totals"]),
        (Some(21), f(61.0 / 21.0), Some(true))
    );

    // Daily ids: every day is a period of its own.
    let daily = app
        .json(&report_path("daily", from, to, "granularity=total"), &key)
        .await;
    assert_eq!(reach_of(&daily["totals"]), (Some(20), f(1.0), Some(true)));
    let one_day = app
        .json(
            &report_path("daily", from, from + Duration::days(1), "granularity=total"),
            &key,
        )
        .await;
    assert_eq!(reach_of(&one_day["totals"]), (Some(1), f(1.0), Some(false)));
    // Two days that make one aligned block: the report reads the block
    // alone, and its periods are those two days.
    let pair = (0..19)
        .map(|d| first + Duration::days(d))
        .find(|&d| earshot_platform::rollup::block_start(d, 2) == d)
        .unwrap();
    let two_days = app
        .json(
            &report_path(
                "daily",
                midnight(pair),
                midnight(pair + Duration::days(2)),
                "granularity=total",
            ),
            &key,
        )
        .await;
    assert_eq!(reach_of(&two_days["totals"]), (Some(2), f(1.0), Some(true)));

    // Where no sketch is kept: null in the rows, as unique listeners; the
    // totals are the campaign's, except by the hour.
    let hourly = app
        .json(&report_path("monthly", from, to, "granularity=hour"), &key)
        .await;
    assert_eq!(reach_of(&hourly["totals"]), (None, None, None));
    for rest in [
        "granularity=hour",
        "granularity=total&group_by=placement",
        "granularity=day&group_by=creative,episode",
        "granularity=total&group_by=country,app",
    ] {
        let r = app
            .json(&report_path("monthly", from, to, rest), &key)
            .await;
        if rest != "granularity=hour" {
            assert_eq!(reach_of(&r["totals"]), reach_of(totals), "{rest}");
        }
        for row in r["rows"].as_array().unwrap() {
            assert_eq!(reach_of(row), (None, None, None), "{rest}: {row}");
            assert!(row["reach"].is_null() && row["reach_upper_bound"].is_null());
        }
    }

    // The CSV carries the same fields.
    let csv = app
        .get(
            &report_path("monthly", from, to, "granularity=total&format=csv"),
            Some(&key),
        )
        .await
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let cell = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("reach"), "21");
    assert_eq!(
        cell("frequency").parse::<f64>().ok().map(digits),
        f(60.0 / 21.0)
    );
    assert_eq!(cell("reach_upper_bound"), "false");

    // A replay of every object changes no sketch.
    let before = sketches(&app.db.pool).await;
    assert!(before.lines().count() > 40, "{before}");
    load(&app.db, &events).await;
    assert_eq!(sketches(&app.db.pool).await, before);
    assert_books_balance(&app.db.pool).await;

    // `earshot verify` checks the blocks' periods as it checks their
    // listeners, and names a block whose periods are not its days'.
    let reach_blocks = || reach_block_mismatches(&app.db.pool, "monthly");
    assert_eq!(reach_blocks().await, vec![]);
    let first_day: Date = sqlx::query_scalar(
        "UPDATE reach_sketch_blocks SET monthly_id_months = '{}'
         WHERE (campaign, dim, value, span_days) = ('monthly', '', '', 8)
           AND first_day = (SELECT min(first_day) FROM reach_sketch_blocks
                            WHERE campaign = 'monthly' AND span_days = 8)
         RETURNING first_day",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let wrong = reach_blocks().await;
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!(
        wrong[0].0,
        format!("monthly///{first_day}/8d (listener-id periods)")
    );
    assert_eq!(wrong[0].1, wrong[0].2, "the same listeners");
}

/// `earshot verify`'s `reach_blocks` rows for `campaign`, as (key, the
/// days' union's count, the block's count).
async fn reach_block_mismatches(pool: &sqlx::PgPool, campaign: &str) -> Vec<(String, i64, i64)> {
    earshot_loader::verify::verify(pool, Some(campaign))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.what == "reach_blocks")
        .map(|m| (m.key, m.from_events, m.from_rollups))
        .collect()
}

/// Reach over the last `days` days of the range ending at `to`, against
/// the exact number of distinct listeners of its raw events.
async fn exact_reach(
    pool: &sqlx::PgPool,
    campaign: &str,
    creative: Option<&str>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT listener) FROM events
         WHERE campaign = $1 AND ($2::text IS NULL OR creative = $2)
           AND verdict = 'valid' AND event = 'impression' AND ts >= $3 AND ts < $4",
    )
    .bind(campaign)
    .bind(creative)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reach_over_one_seven_and_thirty_days_is_within_two_percent_of_the_exact_count() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["flight"]).await;
    let end = midnight(OffsetDateTime::now_utc().date());
    let start = end - Duration::days(30);
    // 9,000 listeners; each day about 3,000 of them (more than a sparse
    // sketch holds), so most are heard on many days.
    let mut rng = fastrand::Rng::with_seed(28);
    let mut events = Vec::new();
    for d in 0..30 {
        let day = start + Duration::days(d);
        for n in 0..9_000u64 {
            if rng.u8(..3) != 0 {
                continue;
            }
            let at = day + Duration::seconds(rng.i64(0..86_000));
            let creative = ["cr1", "cr2"][rng.usize(..2)];
            events.push(impression(
                "flight",
                creative,
                at,
                listener(7, n),
                ListenerPeriod::Month,
            ));
        }
    }
    assert!(events.len() > 80_000, "{}", events.len());
    load(&app.db, &events).await;

    for days in [1, 7, 30] {
        let from = end - Duration::days(days);
        let r = app
            .json(
                &report_path("flight", from, end, "granularity=total&group_by=creative"),
                &key,
            )
            .await;
        let totals = &r["totals"];
        let exact = exact_reach(&app.db.pool, "flight", None, from, end).await;
        let reach = totals["reach"].as_i64().unwrap();
        let error = (reach - exact).abs() as f64 / exact as f64;
        assert!(error <= 0.02, "{days} days: {reach} vs exact {exact}");
        assert!(
            exact > 2_048,
            "{days} days: {exact} listeners, past the sparse form"
        );
        let impressions = totals["impressions"].as_i64().unwrap();
        assert_eq!(
            totals["frequency"].as_f64().map(digits),
            f(impressions as f64 / reach as f64)
        );
        for row in r["rows"].as_array().unwrap() {
            let creative = row["creative"].as_str().unwrap();
            let exact = exact_reach(&app.db.pool, "flight", Some(creative), from, end).await;
            let reach = row["reach"].as_i64().unwrap();
            let error = (reach - exact).abs() as f64 / exact as f64;
            assert!(error <= 0.02, "{days} days, {creative}: {reach} vs {exact}");
            let impressions = row["impressions"].as_i64().unwrap();
            assert_eq!(
                row["frequency"].as_f64().map(digits),
                f(impressions as f64 / reach as f64)
            );
        }
    }
    // The frequency distribution over the 30 days: exactly the sampled
    // listeners' counted impressions, scaled.
    let exact: Vec<(String, i64)> = sqlx::query_as(
        "SELECT listener, count(*) FROM events
         WHERE campaign = 'flight' AND verdict = 'valid' AND event = 'impression'
         GROUP BY listener",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut want = [0i64; 5];
    let mut sampled = 0;
    for (id, n) in &exact {
        if in_frequency_sample(listener_hash(id)) {
            sampled += 1;
            let i = match n {
                1 => 0,
                2 => 1,
                3..=5 => 2,
                6..=10 => 3,
                _ => 4,
            };
            want[i] += 64;
        }
    }
    let f = app
        .json(
            &format!(
                "/v1/campaigns/flight/frequency?from={}&to={}",
                iso(start),
                iso(end)
            ),
            &key,
        )
        .await;
    assert_eq!(f["sampled_listeners"], sampled);
    assert!(sampled > 100, "{sampled} sampled of {}", exact.len());
    let got: Vec<i64> = buckets(&f).into_iter().map(|(_, n)| n).collect();
    assert_eq!(got, want);
    assert_books_balance(&app.db.pool).await;
}

/// The exact distinct listeners of each value of `column` (its rows'
/// value: '' where the hits gave none) among the campaign's counted
/// impressions from `from` to `to`.
async fn exact_reach_by(
    pool: &sqlx::PgPool,
    campaign: &str,
    column: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> std::collections::BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce({column}, ''), count(DISTINCT listener) FROM events
         WHERE campaign = $1 AND verdict = 'valid' AND event = 'impression'
           AND ts >= $2 AND ts < $3
         GROUP BY 1"
    )))
    .bind(campaign)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

/// A report's rows by `column`: (value, '' for null; reach; impressions;
/// frequency to 12 digits).
fn reach_rows(report: &Value, column: &str) -> Vec<(String, i64, i64, Option<String>)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[column].as_str().unwrap_or("").to_owned(),
                r["reach"].as_i64().unwrap(),
                r["impressions"].as_i64().unwrap(),
                r["frequency"].as_f64().map(digits),
            )
        })
        .collect()
}

#[tokio::test]
async fn reach_by_country_and_by_app_is_within_two_percent_of_the_exact_count() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["geo"]).await;
    let end = midnight(OffsetDateTime::now_utc().date());
    let start = end - Duration::days(7);
    // 7,000 listeners over a week, each heard on about half the days: each
    // in one country (US more than a sparse sketch holds, DE and FR fewer,
    // one in twenty unresolved) and one app (or none the edge knows). One
    // in ten US listeners travels to FR on odd days, so it is in both
    // countries' reach.
    let mut rng = fastrand::Rng::with_seed(2828);
    let mut events = Vec::new();
    for n in 0..7_000u64 {
        let home = match n % 20 {
            0 => None,
            1..=10 => Some("US"),
            11..=16 => Some("DE"),
            _ => Some("FR"),
        };
        let client = [Some("Overcast"), Some("Apple Podcasts"), None][(n % 3) as usize];
        for d in 0..7 {
            if rng.bool() {
                continue;
            }
            let day = start + Duration::days(d);
            let at = day + Duration::seconds(rng.i64(0..86_000));
            let country = if home == Some("US") && n % 10 == 1 && d % 2 == 1 {
                Some("FR")
            } else {
                home
            };
            let mut e = event()
                .at(at)
                .campaign("geo")
                .creative(["cr1", "cr2"][rng.usize(..2)])
                .listener_id(listener(9, n))
                .app(client);
            if let Some(c) = country {
                e = e.country(c);
            }
            events.push(e.build());
        }
    }
    assert!(events.len() > 20_000, "{}", events.len());
    load(&app.db, &events).await;
    assert_books_balance(&app.db.pool).await;

    for (column, values) in [
        ("country", vec!["", "DE", "FR", "US"]),
        ("app", vec!["", "Apple Podcasts", "Overcast"]),
    ] {
        for days in [1, 7] {
            let from = end - Duration::days(days);
            let r = app
                .json(
                    &report_path(
                        "geo",
                        from,
                        end,
                        &format!("granularity=total&group_by={column}"),
                    ),
                    &key,
                )
                .await;
            let rows = reach_rows(&r, column);
            let exact = exact_reach_by(&app.db.pool, "geo", column, from, end).await;
            assert_eq!(
                rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
                values,
                "{column}, {days} days"
            );
            for (value, reach, impressions, frequency) in &rows {
                let want = exact[value];
                let error = (reach - want).abs() as f64 / want as f64;
                assert!(
                    error <= 0.02,
                    "{column} {value:?}, {days} days: {reach} vs exact {want}"
                );
                assert_eq!(*frequency, f(*impressions as f64 / *reach as f64));
            }
            // The travellers are in two countries' reach, so the rows add
            // up to more than the campaign's.
            let sum: i64 = rows.iter().map(|r| r.1).sum();
            let total = r["totals"]["reach"].as_i64().unwrap();
            if column == "country" && days == 7 {
                assert!(sum > total + 200, "{sum} vs {total}");
            }
        }
        // By day: each day's own listeners.
        let by_day = app
            .json(
                &report_path(
                    "geo",
                    start,
                    end,
                    &format!("granularity=day&group_by={column}"),
                ),
                &key,
            )
            .await;
        let rows = by_day["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 7 * values.len());
        for row in rows {
            let day = OffsetDateTime::parse(
                row["bucket"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let value = row[column].as_str().unwrap_or("");
            let want =
                exact_reach_by(&app.db.pool, "geo", column, day, day + Duration::DAY).await[value];
            let reach = row["reach"].as_i64().unwrap();
            assert!(
                (reach - want).abs() as f64 / want as f64 <= 0.02,
                "{column} {value:?} on {day}: {reach} vs exact {want}"
            );
        }
    }
    assert!(
        exact_reach_by(&app.db.pool, "geo", "country", start, end).await["US"] > 2_048,
        "the US audience is past the sparse form"
    );

    // Show and episode are sketched too: this campaign's hits named
    // neither, so one row each, the whole audience.
    for column in ["show", "episode", "device"] {
        let r = app
            .json(
                &report_path(
                    "geo",
                    start,
                    end,
                    &format!("granularity=total&group_by={column}"),
                ),
                &key,
            )
            .await;
        let rows = reach_rows(&r, column);
        assert_eq!(rows.len(), 1, "{column}");
        assert_eq!(Some(rows[0].1), r["totals"]["reach"].as_i64(), "{column}");
    }
}

/// The first `k` listeners of `salt` in the frequency sample (`true`) or
/// out of it.
fn listeners_in_sample(salt: u64, sampled: bool, k: usize) -> Vec<ListenerId> {
    (0..)
        .map(|n| listener(salt, n))
        .filter(|id| in_frequency_sample(listener_hash(id.as_str())) == sampled)
        .take(k)
        .collect()
}

/// (times, listeners) of each bucket.
fn buckets(f: &Value) -> Vec<(String, i64)> {
    f["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["times"].as_str().unwrap().to_owned(),
                b["listeners"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_frequency_distribution_scales_the_sampled_listeners_impressions() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["freq"]).await;
    let (_b, other_key) = app.advertiser("Other", &["theirs"]).await;
    let today = OffsetDateTime::now_utc().date();
    let this_month = Date::from_calendar_date(today.year(), today.month(), 1).unwrap();
    let next = (this_month - Duration::days(1)).replace_day(1).unwrap();
    let first = (next - Duration::days(1)).replace_day(1).unwrap();
    let sampled = listeners_in_sample(3, true, 3);
    let unsampled = listeners_in_sample(3, false, 2);
    let mut events = Vec::new();
    let mut hear = |who: ListenerId, days: i64, creatives: &[&str]| {
        for d in 0..days {
            for (i, cr) in creatives.iter().enumerate() {
                let at = midnight(first + Duration::days(d)) + Duration::hours(9 + i as i64);
                events.push(impression("freq", cr, at, who, ListenerPeriod::Month));
                // A repeat: not counted, so not in the distribution.
                events.push(impression(
                    "freq",
                    cr,
                    at + Duration::minutes(5),
                    who,
                    ListenerPeriod::Month,
                ));
            }
        }
    };
    hear(sampled[0], 1, &["cr1"]);
    hear(sampled[1], 4, &["cr1"]);
    hear(sampled[2], 6, &["cr1", "cr2"]);
    hear(unsampled[0], 3, &["cr1"]);
    hear(unsampled[1], 1, &["cr1"]);
    // The next month: one more for the first sampled listener.
    events.push(impression(
        "freq",
        "cr1",
        midnight(next) + Duration::hours(9),
        sampled[0],
        ListenerPeriod::Month,
    ));
    load(&app.db, &events).await;
    assert_books_balance(&app.db.pool).await;

    let path = |from: Date, to: Date| format!("/v1/campaigns/freq/frequency?from={from}&to={to}");
    let f = app.json(&path(first, next), &key).await;
    assert_eq!(f["sample_rate"], 64);
    assert_eq!(f["sampled_listeners"], 3);
    assert_eq!(f["upper_bound"], false);
    assert_eq!(
        buckets(&f),
        [("1", 64), ("2", 0), ("3-5", 64), ("6-10", 0), ("11+", 64)]
            .map(|(t, n)| (t.to_owned(), n))
    );
    assert_eq!(f["buckets"][4]["max"], Value::Null);
    assert_eq!(
        (
            f["buckets"][2]["min"].as_i64(),
            f["buckets"][2]["max"].as_i64()
        ),
        (Some(3), Some(5))
    );

    // Across the month boundary: the first listener twice, an upper bound.
    let across = app.json(&path(first, next + Duration::days(1)), &key).await;
    assert_eq!(across["upper_bound"], true);
    assert_eq!(
        buckets(&across),
        [("1", 0), ("2", 64), ("3-5", 64), ("6-10", 0), ("11+", 64)]
            .map(|(t, n)| (t.to_owned(), n))
    );
    // The second day alone.
    let day2 = app
        .json(
            &path(first + Duration::days(1), first + Duration::days(2)),
            &key,
        )
        .await;
    assert_eq!(
        buckets(&day2),
        [("1", 64), ("2", 64), ("3-5", 0), ("6-10", 0), ("11+", 0)].map(|(t, n)| (t.to_owned(), n))
    );

    // Someone else's campaign is not there; a bad range names its parameter.
    let theirs = app
        .get(&path(first, next).replace("freq", "theirs"), Some(&key))
        .await;
    assert_eq!(theirs.status(), 404);
    let mine = app.get(&path(first, next), Some(&other_key)).await;
    assert_eq!(mine.status(), 404);
    let bad = app
        .get("/v1/campaigns/freq/frequency?from=yesterday", Some(&key))
        .await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["param"], "from");

    // A replay changes nothing.
    load(&app.db, &events).await;
    assert_eq!(app.json(&path(first, next), &key).await, f);
    assert_books_balance(&app.db.pool).await;
}

/// The report of `campaign` as `run` makes it for `params`, without the
/// report cache. The decoded sketches are held from one report to the
/// next, as the API holds them, so every report after a write shows that
/// they are read again when their rows change.
async fn report_of(pool: &sqlx::PgPool, campaign: &str, params: ReportParams) -> Value {
    static SKETCHES: std::sync::LazyLock<earshot_reporting::report::SketchCache> =
        std::sync::LazyLock::new(Default::default);
    let now = OffsetDateTime::now_utc();
    let spec = ReportSpec::parse(&params, false, now).unwrap();
    let mark = earshot_reporting::report::BlocksMark::default();
    let r = earshot_reporting::report::run(pool, &mark, &SKETCHES, campaign, &spec)
        .await
        .unwrap();
    serde_json::to_value(r).unwrap()
}

fn params(from: OffsetDateTime, to: OffsetDateTime, group_by: &str) -> ReportParams {
    ReportParams {
        from: Some(iso(from)),
        to: Some(iso(to)),
        granularity: Some("total".into()),
        group_by: (!group_by.is_empty()).then(|| group_by.into()),
        ..ReportParams::default()
    }
}

#[tokio::test]
async fn reach_from_day_blocks_is_the_reach_from_single_days_and_a_late_day_joins_its_blocks() {
    let app = spawn_app(AppOptions::default()).await;
    let _ = app.advertiser("Acme", &["flight"]).await;
    let end = midnight(OffsetDateTime::now_utc().date()) - Duration::days(3);
    let start = end - Duration::days(40);
    // Monthly ids, so listeners repeat across days; the campaign's daily
    // sketches are dense (~3,000 a day), the creatives' mostly sparse.
    let mut rng = fastrand::Rng::with_seed(27);
    let mut events = Vec::new();
    for d in 0..40 {
        let day = start + Duration::days(d);
        for n in 0..6_000u64 {
            if rng.bool() {
                continue;
            }
            let at = day + Duration::seconds(rng.i64(0..86_000));
            let creative = ["cr1", "cr2", "cr3"][rng.usize(..3)];
            events.push(impression(
                "flight",
                creative,
                at,
                listener(11, n),
                ListenerPeriod::Month,
            ));
        }
    }
    // One object, without the upkeep: no day is folded yet.
    load_without_upkeep(&app.db, &events).await;
    let late = start + Duration::days(17);
    // Ranges with aligned and unaligned ends, and one ending inside a day.
    let ranges = [
        (start, end),
        (start + Duration::days(3), end - Duration::days(5)),
        (late, late + Duration::days(1)),
        (start + Duration::hours(30), end - Duration::hours(7)),
    ];
    let mut single_days = Vec::new();
    for (from, to) in ranges {
        for group_by in ["", "creative"] {
            single_days.push(report_of(&app.db.pool, "flight", params(from, to, group_by)).await);
        }
    }
    let blocks = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM reach_sketch_blocks")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(blocks().await, 0);

    // The fold puts the days in their blocks; every report is the same.
    let through = (end - Duration::days(1)).date();
    earshot_loader::daily::fold_blocks(&app.db.pool, through)
        .await
        .unwrap()
        .expect("the mark moves");
    assert!(blocks().await > 0);
    let mark: Option<Date> = sqlx::query_scalar("SELECT reach_blocks_through FROM counting_state")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(mark, Some(through));
    // `earshot verify` finds the blocks whole, and names one gone.
    let reach_blocks = || reach_block_mismatches(&app.db.pool, "flight");
    assert_eq!(reach_blocks().await, vec![]);
    let first: Date = sqlx::query_scalar(
        "DELETE FROM reach_sketch_blocks
         WHERE (campaign, dim, value, span_days) = ('flight', 'creative', 'cr1', 4)
           AND first_day = (SELECT min(first_day) FROM reach_sketch_blocks WHERE span_days = 4)
         RETURNING first_day",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let gone = reach_blocks().await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0].0, format!("flight/creative/cr1/{first}/4d"));
    assert!(gone[0].1 > 0);
    assert_eq!(gone[0].2, 0, "the block is not there");
    earshot_loader::daily::rebuild_blocks(&app.db.pool, Some(through))
        .await
        .unwrap();
    assert_eq!(reach_blocks().await, vec![]);
    let mut i = 0;
    for (from, to) in ranges {
        for group_by in ["", "creative"] {
            let got = report_of(&app.db.pool, "flight", params(from, to, group_by)).await;
            assert_eq!(got, single_days[i], "{from} .. {to} by {group_by:?}");
            i += 1;
        }
    }

    // New listeners on a folded day: the load adds them to the day and to
    // its blocks, and the reach over blocks is the reach over days.
    let newcomers: Vec<TrackingEvent> = (0..2_500u64)
        .map(|n| {
            impression(
                "flight",
                "cr2",
                late + Duration::minutes(n as i64 % 1_000),
                listener(12, n),
                ListenerPeriod::Month,
            )
        })
        .collect();
    load_without_upkeep(&app.db, &newcomers).await;
    for group_by in ["", "creative"] {
        let over_blocks = report_of(&app.db.pool, "flight", params(start, end, group_by)).await;
        sqlx::query("UPDATE counting_state SET reach_blocks_through = NULL")
            .execute(&app.db.pool)
            .await
            .unwrap();
        let over_days = report_of(&app.db.pool, "flight", params(start, end, group_by)).await;
        sqlx::query("UPDATE counting_state SET reach_blocks_through = $1")
            .bind(through)
            .execute(&app.db.pool)
            .await
            .unwrap();
        assert_eq!(over_blocks, over_days, "by {group_by:?}");
        let before = &single_days[if group_by.is_empty() { 0 } else { 1 }];
        assert!(
            over_blocks["totals"]["reach"].as_i64().unwrap()
                > before["totals"]["reach"].as_i64().unwrap() + 2_000,
            "the newcomers are in the reach: {} then {}",
            before["totals"]["reach"],
            over_blocks["totals"]["reach"]
        );
    }
    assert_books_balance(&app.db.pool).await;
}
