//! Running the real `earshot` (and `earshot-edge`) binaries in tests, making
//! events for them, and reading back what the database holds.
#![allow(dead_code, unused_imports)]

use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use earshot_domain::{EventKind, ListenerId, Placement, TrackingEvent, Verdict};
pub use earshot_testkit::loader::{assert_books_balance, count};
pub use earshot_testkit::{event, gzip, ndjson, temp_dir, v7_seeded, TempDir};
use earshot_testkit::{ChildProcess, ProcessSpec};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// A guard against hangs, not a speed assertion: the slowest test here
/// (200k events through a debug build, three times) needs a few minutes on
/// two busy cores.
pub const PATIENCE: Duration = Duration::from_secs(900);

pub fn earshot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_earshot"))
}

/// The real edge, built in the same target directory. Cargo offers
/// `CARGO_BIN_EXE_*` only for a package's own binaries, so this is the
/// sibling of `earshot`; `cargo test --workspace` (and `scripts/test`) build
/// both.
pub fn edge_bin() -> PathBuf {
    let p = earshot_bin().with_file_name("earshot-edge");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p earshot-edge`), or run \
         `cargo test --workspace`, which builds every binary",
        p.display()
    );
    p
}

/// The environment of a loader child: its database, JSON logs, an ops
/// server on a free port (tests run in parallel), quick polls.
pub fn loader_env(db_url: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", db_url),
        ("RUST_LOG", "info,sqlx=warn"),
        ("EARSHOT_LOADER_ADDR", "127.0.0.1:0"),
        ("EARSHOT_POLL_INTERVAL_SECONDS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub fn loader_spec(db_url: &str, args: &[&str], aws: &[(String, String)]) -> ProcessSpec {
    ProcessSpec::new(earshot_bin())
        .arg("load")
        .args(args.iter().copied())
        .envs(loader_env(db_url))
        .envs(aws.iter().cloned())
}

/// The totals of the line `earshot load` prints when it stops.
pub use earshot_loader::RunSummary as Summary;

pub fn summary_of(p: &ChildProcess) -> Summary {
    let lines = p.stdout_lines();
    let line = lines
        .iter()
        .find(|l| l.starts_with("objects_loaded="))
        .unwrap_or_else(|| panic!("no summary line\n{}", p.output_text()));
    let mut s = Summary::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v: u64 = v.parse().expect("a number");
        match k {
            "objects_loaded" => s.objects_loaded = v,
            "objects_skipped" => s.objects_skipped = v,
            "events_new" => s.events_new = v,
            "duplicates" => s.duplicates = v,
            "quarantined" => s.quarantined = v,
            "counted" => s.counted = v,
            other => panic!("unknown summary field {other} in {line:?}"),
        }
    }
    s
}

/// `earshot load --once --source SOURCE` into the database at `db_url`;
/// fails the test unless it exits 0.
pub async fn load_once(db_url: &str, source: &str, aws: &[(String, String)]) -> Summary {
    let mut p = ChildProcess::spawn(&loader_spec(db_url, &["--once", "--source", source], aws))
        .expect("start earshot load --once");
    let status = match tokio::time::timeout(PATIENCE, p.wait()).await {
        Ok(s) => s.expect("wait for earshot"),
        Err(_) => panic!("earshot load --once hung\n{}", p.output_text()),
    };
    assert!(
        status.success(),
        "earshot load --once: {status}\n{}",
        p.output_text()
    );
    summary_of(&p)
}

/// `earshot audit --json ARGS…` against the database at `db_url`: its exit
/// code and the audit it printed.
pub async fn audit_cli(db_url: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let mut p = ChildProcess::spawn(
        &ProcessSpec::new(earshot_bin())
            .arg("audit")
            .arg("--json")
            .args(args.iter().copied())
            .envs(loader_env(db_url)),
    )
    .expect("start earshot audit");
    let status = match tokio::time::timeout(PATIENCE, p.wait()).await {
        Ok(s) => s.expect("wait for earshot"),
        Err(_) => panic!("earshot audit hung\n{}", p.output_text()),
    };
    let json = p.stdout_lines().join("\n");
    let audit = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("earshot audit printed no JSON ({e})\n{}", p.output_text()));
    (status.code().expect("exited"), audit)
}

/// Polls `check` until it gives a value, failing the test after [`PATIENCE`]
/// with `context()` (e.g. a child's output) in the message.
pub async fn eventually<T, F, Fut>(what: &str, context: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] while `child` runs: fails at once, with its output, if it
/// exits, and with its output on the deadline.
pub async fn while_running<T, F, Fut>(child: &mut ChildProcess, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) while waiting for {what}\n{}",
                child.name(),
                child.output_text()
            );
        }
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}\n{}",
            child.output_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Realistic user agents: (user agent, app, os). Bots get the edge's reason.
const APPS: &[(&str, &str, &str)] = &[
    (
        "Podcasts/1555.2.1 CFNetwork/1410.0.3 Darwin/22.6.0",
        "Apple Podcasts",
        "ios",
    ),
    ("Spotify/8.8.56 iOS/17.0 (iPhone15,2)", "Spotify", "ios"),
    (
        "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
        "Overcast",
        "ios",
    ),
    (
        "PodcastAddict/v5 (+https://podcastaddict.com/; Android podcast app)",
        "Podcast Addict",
        "android",
    ),
    ("AntennaPod/3.2.0", "AntennaPod", "android"),
];
const BOTS: &[(&str, &str)] = &[
    ("curl/8.5.0", "ua_listed:curl"),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "ua_self_declared",
    ),
];

/// Deterministic events between `start` and `start + span`, in time order:
/// three campaigns, their creatives and episodes, ~4% bots, ~1% invalid,
/// and ~10% repeating the counting key (listener, creative, episode, event)
/// of a recent valid event. Ids are UUIDv7 of `ts`, as the edge makes them.
pub fn synth_events(
    n: usize,
    seed: u64,
    start: OffsetDateTime,
    span: time::Duration,
) -> Vec<TrackingEvent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let campaigns = ["spring-sale", "acme-q4", "podco-launch"];
    let start = earshot_domain::wire::to_wire_precision(start);
    let step_ms = (span.whole_milliseconds() as i64 / n.max(1) as i64).max(1);
    let mut out: Vec<TrackingEvent> = Vec::with_capacity(n);
    let mut recent_valid: Vec<usize> = Vec::new();
    for i in 0..n {
        let ts = start + time::Duration::milliseconds(i as i64 * step_ms + rng.i64(0..step_ms));
        let ms = (ts.unix_timestamp_nanos() / 1_000_000) as u64;
        let mut rand = [0u8; 10];
        rng.fill(&mut rand);
        let id = v7_seeded(ts, &rand);
        if !recent_valid.is_empty() && rng.f64() < 0.10 {
            let j = recent_valid[rng.usize(..recent_valid.len())];
            let mut e = out[j].clone();
            e.id = id;
            e.ts = ts;
            out.push(e);
            continue;
        }
        let c = rng.usize(..campaigns.len());
        let r = rng.f64();
        let (verdict, reason, ua, app, os) = if r < 0.04 {
            let (ua, reason) = BOTS[rng.usize(..BOTS.len())];
            (Verdict::Bot, Some(reason.to_owned()), ua, None, None)
        } else {
            let (ua, app, os) = APPS[rng.usize(..APPS.len())];
            if r < 0.05 {
                (
                    Verdict::Invalid,
                    Some("bad_signature".to_owned()),
                    ua,
                    Some(app),
                    Some(os),
                )
            } else {
                (Verdict::Valid, None, ua, Some(app), Some(os))
            }
        };
        let kind = if rng.f64() < 0.6 {
            EventKind::Impression
        } else {
            EventKind::ALL[rng.usize(1..7)]
        };
        let who = rng.u32(..4000);
        // The builder's calls draw from `rng` in this order, field by field.
        let e = event()
            .id(id)
            .ts(ts)
            .campaign(campaigns[c])
            .creative(&format!("cr_{}", [15, 30, 60][rng.usize(..3)]))
            .episode(
                (rng.f64() < 0.95)
                    .then(|| format!("ep{:03}", rng.u32(..40)))
                    .as_deref(),
            )
            .show(&format!("show{}", rng.u32(..5)))
            .placement([Placement::Pre, Placement::Mid, Placement::Post][rng.usize(..3)])
            .kind(kind)
            .listener_id(
                ListenerId::parse(&format!(
                    "{:032x}",
                    (who as u128 + 1) * 0x9e37_79b9_7f4a_7c15
                ))
                .unwrap(),
            )
            .ua(Some(ua))
            .app(app)
            .os(os)
            .country(["US", "GB", "DE", "CA", "AU"][rng.usize(..5)])
            .verdict(verdict)
            .reason(reason.as_deref())
            .trace_id(Some(format!(
                "Root=1-{:08x}-{:024x}",
                ms / 1000,
                rng.u128(..) >> 32
            )))
            .build();
        out.push(e);
        if verdict == Verdict::Valid {
            recent_valid.push(i);
            if recent_valid.len() > 200 {
                recent_valid.remove(0);
            }
        }
    }
    out
}

/// Midnight UTC of the day before today: events there are inside the
/// loader's window (not future, not past retention) whenever the test runs.
pub fn yesterday() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.date().midnight().assume_utc() - time::Duration::days(1)
}

/// Everything the loader wrote, in a comparable form. Ledger ids and
/// `events.object_id` are left out: identity values used by rolled-back
/// transactions are not reused, so they differ between runs that retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub events: (i64, String),
    pub counting_keys: (i64, String),
    pub listener_keys: (i64, String),
    pub rollups: Vec<String>,
    pub uniques: Vec<String>,
    pub sketches: Vec<String>,
    pub frequency_sample: Vec<String>,
    pub versions: Vec<String>,
    pub ledger: Vec<String>,
    pub quarantine: Vec<String>,
}

const EVENTS_DIGEST: &str = "SELECT count(*)::bigint, coalesce(md5(string_agg(md5(row(id, ts, campaign, creative, episode, show,
    placement, event, error_code, listener, ua, app, device, os, country, verdict, reason, trace_id,
    region, listener_period)::text),
    '' ORDER BY id)), '') FROM events";

pub async fn snapshot(pool: &PgPool) -> Snapshot {
    async fn digest(pool: &PgPool, sql: &str) -> (i64, String) {
        sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap()
    }
    async fn rows(pool: &PgPool, sql: &str) -> Vec<String> {
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap()
    }
    Snapshot {
        events: digest(pool, EVENTS_DIGEST).await,
        counting_keys: digest(
            pool,
            "SELECT count(*)::bigint, coalesce(md5(string_agg(day || ' ' || listener || ' ' || key, ','
             ORDER BY day, listener, key)), '') FROM counting_keys",
        )
        .await,
        listener_keys: digest(
            pool,
            "SELECT count(*)::bigint, coalesce(md5(string_agg(day || ' ' || listener || ' ' || key, ','
             ORDER BY day, listener, key)), '') FROM listener_keys",
        )
        .await,
        rollups: rows(
            pool,
            // Per group, summed: loads append rows and merges fold them, so
            // how many rows hold a group depends on when merges ran.
            "SELECT concat_ws('|', campaign, hour, creative, episode, show, placement, event, country,
                              app, device, region, sum(raw_hits), sum(counted_hits), sum(bot_hits),
                              sum(invalid_hits))
             FROM rollup_hourly GROUP BY campaign, hour, creative, episode, show, placement, event,
                                         country, app, device, region
             ORDER BY campaign, hour, creative, episode, show, placement, event, country, app, device,
                      region",
        )
        .await,
        uniques: rows(
            pool,
            "SELECT u::text FROM daily_uniques u ORDER BY campaign, day, creative",
        )
        .await,
        sketches: rows(
            pool,
            "SELECT s::text FROM reach_sketches s ORDER BY campaign, day, dim, value",
        )
        .await,
        frequency_sample: rows(
            pool,
            "SELECT f::text FROM frequency_sample f ORDER BY campaign, day, listener",
        )
        .await,
        versions: rows(
            pool,
            "SELECT campaign || '=' || version FROM campaign_data_versions ORDER BY campaign",
        )
        .await,
        ledger: rows(
            pool,
            "SELECT concat_ws('|', source, object_key, etag, bytes, lines, events, new_events,
                              duplicates, quarantined, max_event_ts)
             FROM loaded_objects ORDER BY source, object_key, etag",
        )
        .await,
        quarantine: rows(
            pool,
            "SELECT concat_ws('|', l.object_key, q.line_no, q.reason, encode(q.raw_line, 'hex'))
             FROM quarantine q JOIN loaded_objects l ON l.id = q.object_id
             ORDER BY l.object_key, q.line_no",
        )
        .await,
    }
}

impl Snapshot {
    /// The campaigns whose data version a load bumped, without the
    /// versions: a load in parts bumps them once per part (each commit
    /// tells the report cache), a whole load once.
    pub fn versions_as_campaigns(mut self) -> Self {
        for v in &mut self.versions {
            if let Some((campaign, _)) = v.rsplit_once('=') {
                *v = campaign.to_owned();
            }
        }
        self
    }
}

/// Compares two snapshots field by field, so a failure says which table.
pub fn assert_same(got: &Snapshot, want: &Snapshot) {
    assert_eq!(got.events, want.events, "events differ");
    assert_eq!(
        got.counting_keys, want.counting_keys,
        "counting_keys differ"
    );
    assert_eq!(
        got.listener_keys, want.listener_keys,
        "listener_keys differ"
    );
    assert_eq!(got.rollups, want.rollups, "rollup_hourly differs");
    assert_eq!(got.uniques, want.uniques, "daily_uniques differs");
    assert_eq!(got.sketches, want.sketches, "reach_sketches differ");
    assert_eq!(
        got.frequency_sample, want.frequency_sample,
        "frequency_sample differs"
    );
    assert_eq!(got.versions, want.versions, "campaign_data_versions differ");
    assert_eq!(got.ledger, want.ledger, "loaded_objects differ");
    assert_eq!(got.quarantine, want.quarantine, "quarantine differs");
}

/// (raw, counted, bot, invalid) per campaign ('' for none).
pub type Totals = BTreeMap<String, (i64, i64, i64, i64)>;

/// Totals computed here from the raw `events` rows with the counting rule
/// (a valid event counts once per campaign, creative, episode, event,
/// listener and UTC day), independently of the loader's bookkeeping.
pub async fn totals_from_events(pool: &PgPool) -> Totals {
    totals_by(
        pool,
        "SELECT coalesce(campaign, ''), count(*),
                count(DISTINCT (coalesce(creative, ''), coalesce(episode, ''), coalesce(event, ''),
                                listener, (ts AT TIME ZONE 'UTC')::date)) FILTER (WHERE verdict = 'valid'),
                count(*) FILTER (WHERE verdict = 'bot'), count(*) FILTER (WHERE verdict = 'invalid')
         FROM events GROUP BY 1",
    )
    .await
}

/// The same totals as the rollups hold them.
pub async fn totals_from_rollups(pool: &PgPool) -> Totals {
    totals_by(
        pool,
        "SELECT campaign, sum(raw_hits)::bigint, sum(counted_hits)::bigint, sum(bot_hits)::bigint,
                sum(invalid_hits)::bigint
         FROM rollup_hourly GROUP BY 1",
    )
    .await
}

/// The totals `sql` gives: a row per campaign, (campaign, raw, counted,
/// bot, invalid).
async fn totals_by(pool: &PgPool, sql: &'static str) -> Totals {
    let rows: Vec<(String, i64, i64, i64, i64)> =
        sqlx::query_as(sql).fetch_all(pool).await.unwrap();
    rows.into_iter()
        .map(|(c, a, b, d, e)| (c, (a, b, d, e)))
        .collect()
}

/// The keys of the objects loaded, in order.
pub async fn loaded_keys(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT object_key FROM loaded_objects ORDER BY object_key")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Sends `body` to the queue at `url`, as S3 (or anyone allowed to) would.
pub async fn send_message(moto: &earshot_testkit::Moto, url: &str, body: &str) {
    moto.sqs()
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Up to 10 messages of the queue at `url`; with `visibility`, the
/// visibility timeout they get instead of the queue's.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    visibility: Option<i32>,
) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .set_visibility_timeout(visibility)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

/// A load's (objects loaded, objects skipped, new events).
pub fn loaded_skipped_new(s: &Summary) -> (u64, u64, u64) {
    (s.objects_loaded, s.objects_skipped, s.events_new)
}

/// Totals computed from events as the edge wrote them (before any database).
pub fn totals_of(events: &[TrackingEvent]) -> Totals {
    use std::collections::HashSet;
    let mut out = Totals::new();
    let mut keys = HashSet::new();
    for e in events {
        let c = e.campaign.as_ref().map_or("", |c| c.as_str()).to_owned();
        let t = out.entry(c.clone()).or_default();
        t.0 += 1;
        match e.verdict {
            Verdict::Valid => {
                let key = (
                    c,
                    e.creative.as_ref().map(|x| x.as_str().to_owned()),
                    e.episode.as_ref().map(|x| x.as_str().to_owned()),
                    e.event,
                    e.listener,
                    e.day(),
                );
                if keys.insert(key) {
                    t.1 += 1;
                }
            }
            Verdict::Bot => t.2 += 1,
            Verdict::Invalid => t.3 += 1,
        }
    }
    out
}

/// Event ids in the database, sorted.
pub async fn event_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT id FROM events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Every non-hidden `*.ndjson` file under `dir`, recursively.
pub fn ndjson_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            out.extend(ndjson_files(&path));
        } else if name.ends_with(".ndjson") {
            out.push(path);
        }
    }
    out.sort();
    out
}
