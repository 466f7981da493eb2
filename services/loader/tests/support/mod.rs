//! Building events and objects for the loader's tests.
#![allow(dead_code, unused_imports)]

use std::path::Path;

use earshot_domain::{EventKind, TrackingEvent, Verdict};
pub use earshot_testkit::loader::{
    assert_books_balance, count, dir_object, load_dir, load_dir_with, load_options as opts, loader,
};
use earshot_testkit::TempDir;
pub use earshot_testkit::{event, listener, ndjson, temp_dir};
use sqlx::PgPool;
use time::OffsetDateTime;

/// An event at `ts` with a fresh UUIDv7 of that instant, from the Overcast
/// app on iOS.
pub fn ev(
    ts: OffsetDateTime,
    campaign: &str,
    creative: &str,
    episode: Option<&str>,
    kind: EventKind,
    who: u32,
    verdict: Verdict,
) -> TrackingEvent {
    event()
        .at(ts)
        .campaign(campaign)
        .creative(creative)
        .episode(episode)
        .kind(kind)
        .listener(who)
        .verdict(verdict)
        .ua(Some("Overcast/3.0"))
        .app(Some("Overcast"))
        .os(Some("ios"))
        .build()
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

/// Loads `events` as the object `a.ndjson` of a new folder tagged `tag`.
/// The folder is returned for the objects a test adds after it.
pub async fn load_events(pool: &PgPool, tag: &str, events: &[TrackingEvent]) -> TempDir {
    let dir = temp_dir(tag);
    write_object(&dir, "a.ndjson", &ndjson(events));
    load_dir(pool, &dir).await;
    dir
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

/// Runs `sql`: a change a test makes behind the loader's back.
pub async fn exec(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// What `earshot verify` finds wrong, for `campaign` or for all.
pub async fn verify(
    pool: &PgPool,
    campaign: Option<&str>,
) -> Vec<earshot_loader::verify::Mismatch> {
    earshot_loader::verify::verify(pool, campaign)
        .await
        .unwrap()
}
