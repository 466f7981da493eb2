//! Building events and objects for the loader's tests.
#![allow(dead_code)]

use sqlx::AssertSqlSafe;
use std::path::{Path, PathBuf};

use earshot_domain::{
    CampaignId, CreativeId, EpisodeId, EventKind, ListenerId, TrackingEvent, Verdict,
};
use earshot_loader::source::{Object, Source, SourceSpec};
use earshot_loader::{LoadOptions, Loader, RunSummary};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

pub fn listener(n: u32) -> ListenerId {
    ListenerId::parse(&format!("{n:032x}")).unwrap()
}

/// An event at `ts` with a fresh UUIDv7 of that instant.
pub fn ev(
    ts: OffsetDateTime,
    campaign: &str,
    creative: &str,
    episode: Option<&str>,
    kind: EventKind,
    who: u32,
    verdict: Verdict,
) -> TrackingEvent {
    let ts = earshot_domain::event::to_wire_precision(ts);
    let ms = (ts.unix_timestamp_nanos() / 1_000_000) as u64;
    TrackingEvent {
        id: Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            (ms % 1000) as u32 * 1_000_000,
        )),
        ts,
        campaign: Some(CampaignId::parse(campaign).unwrap()),
        creative: Some(CreativeId::parse(creative).unwrap()),
        episode: episode.map(|e| EpisodeId::parse(e).unwrap()),
        show: None,
        placement: None,
        event: Some(kind),
        error_code: None,
        listener: listener(who),
        ua: Some("Overcast/3.0".into()),
        app: Some("Overcast".into()),
        device: None,
        os: Some("ios".into()),
        country: None,
        verdict,
        reason: match verdict {
            Verdict::Valid => None,
            Verdict::Bot => Some("ua_self_declared".into()),
            Verdict::Invalid => Some("bad_signature".into()),
        },
        trace_id: None,
    }
}

/// `n` events of campaign c1, episode e1, a second apart from `base`:
/// impression, start, complete in turn; creatives cr0–cr3 in turn (so 12
/// hourly groups in an hour); listeners 0–49; every 17th a bot.
pub fn sample(n: u32, base: time::OffsetDateTime) -> Vec<TrackingEvent> {
    (0..n)
        .map(|i| {
            let kind =
                [EventKind::Impression, EventKind::Start, EventKind::Complete][(i % 3) as usize];
            let verdict = if i % 17 == 0 {
                Verdict::Bot
            } else {
                Verdict::Valid
            };
            ev(
                base + time::Duration::seconds(i as i64),
                "c1",
                &format!("cr{}", i % 4),
                Some("e1"),
                kind,
                i % 50,
                verdict,
            )
        })
        .collect()
}

/// Valid impressions of campaign c1, creative cr1, episode e1 by listeners
/// `who`, a second apart from `base`.
pub fn impressions(who: std::ops::Range<u32>, base: time::OffsetDateTime) -> Vec<TrackingEvent> {
    who.enumerate()
        .map(|(i, n)| {
            ev(
                base + time::Duration::seconds(i as i64),
                "c1",
                "cr1",
                Some("e1"),
                EventKind::Impression,
                n,
                Verdict::Valid,
            )
        })
        .collect()
}

pub fn ndjson(events: &[TrackingEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        e.write_ndjson(&mut out);
    }
    out
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("earshot-{tag}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes an object of [`impressions`] by listeners `who` from `base`.
pub fn write_impressions(
    dir: &Path,
    name: &str,
    who: std::ops::Range<u32>,
    base: time::OffsetDateTime,
) {
    write_object(dir, name, &ndjson(&impressions(who, base)));
}

pub fn write_object(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

pub async fn load_dir(pool: &PgPool, dir: &Path) -> RunSummary {
    load_dir_with(pool, dir, opts()).await
}

/// A loader of the objects in `dir`.
pub async fn loader(pool: &PgPool, dir: &Path, opts: LoadOptions) -> Loader {
    let src = Source::open(&SourceSpec::Dir(dir.to_owned()))
        .await
        .unwrap();
    Loader::new(pool.clone(), src, opts)
}

pub async fn load_dir_with(pool: &PgPool, dir: &Path, opts: LoadOptions) -> RunSummary {
    let mut loader = loader(pool, dir, opts).await;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    loader.run(rx).await.unwrap()
}

pub fn opts() -> LoadOptions {
    LoadOptions {
        once: true,
        poll_interval: std::time::Duration::from_millis(100),
        retention_days: 400,
        concurrency: earshot_platform::config::DEFAULT_LOAD_CONCURRENCY as usize,
        stall_limit: earshot_loader::watchdog::DEFAULT_STALL_LIMIT,
    }
}

pub fn dir_object(dir: &Path, name: &str) -> Object {
    Object {
        source: format!("dir:{}", std::fs::canonicalize(dir).unwrap().display()),
        key: name.into(),
        etag: None,
    }
}

/// (raw, counted, bot, invalid) over all rollups of a campaign.
pub async fn totals(pool: &PgPool, campaign: &str) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(raw_hits),0)::bigint, coalesce(sum(counted_hits),0)::bigint,
                coalesce(sum(bot_hits),0)::bigint, coalesce(sum(invalid_hits),0)::bigint
         FROM rollup_hourly WHERE campaign = $1",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The books balance: rollups and uniques equal an independent recount.
pub async fn assert_books_balance(pool: &PgPool) {
    let mismatches = earshot_loader::verify::verify(pool, None).await.unwrap();
    assert!(
        mismatches.is_empty(),
        "rollups disagree with raw events: {mismatches:#?}"
    );
}
