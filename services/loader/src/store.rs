//! One object, one transaction: claim it in the ledger, COPY its new events,
//! count (as `counting` decides), add the rollup deltas, and commit.

use std::sync::LazyLock;

use earshot_platform::rollup::{hourly_column, HOURLY_HITS};
use sqlx::{PgPool, Postgres, Transaction};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::compact::Touched;
use crate::copy::BinaryCopy;
use crate::counting::keys::{self, KeyTable};
use crate::counting::reach::{self, SampleKey};
use crate::counting::rollups::{self, HourlyCounts, HourlyKey};
use crate::counting::{self, Decision, Staged};
use crate::daily::{self, DailySql};
use crate::day_sketches;
use crate::parse::{Parsed, Quarantined};
use crate::sequences;
use crate::sketch_blocks;

/// Where an object came from, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId {
    /// `s3://bucket` or `dir:/path`.
    pub source: String,
    pub key: String,
    /// S3 ETag, or the sha256 of a local file.
    pub etag: String,
    pub bytes: u64,
}

/// An object fetched, parsed and staged for counting: what its
/// transaction loads.
#[derive(Debug)]
pub struct Prepared {
    pub id: ObjectId,
    /// The decoded events, each id once, with their counting keys.
    pub events: Vec<Staged>,
    pub quarantined: Vec<Quarantined>,
    pub lines: u32,
    /// Lines repeating an event id already seen in this object.
    pub duplicates_in_object: u32,
    /// Their numbers, for the sequence ledger.
    pub duplicate_seqs: Vec<(earshot_domain::EdgeSeq, OffsetDateTime)>,
    /// The object's heartbeat lines (never events).
    pub heartbeats: Vec<earshot_domain::Heartbeat>,
}

impl Prepared {
    /// Stages the events of `parsed` (their days and counting keys).
    pub fn new(id: ObjectId, parsed: Parsed) -> Self {
        Self {
            id,
            events: parsed.events.into_iter().map(counting::stage).collect(),
            quarantined: parsed.quarantined,
            lines: parsed.lines,
            duplicates_in_object: parsed.duplicates_in_object,
            duplicate_seqs: parsed.duplicate_seqs,
            heartbeats: parsed.heartbeats,
        }
    }
}

/// What loading one object did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// False when the object was already in the ledger (nothing written).
    pub loaded: bool,
    pub ledger_id: i64,
    pub lines: u32,
    pub events: u32,
    pub new_events: u32,
    /// Events already loaded before (by id), plus repeats within the object.
    pub duplicates: u32,
    pub quarantined: u32,
    /// Newly counted events (the billable delta of this load).
    pub counted: u32,
    /// The newest event's time, as the ledger records it.
    pub max_event_ts: Option<OffsetDateTime>,
}

/// Is (source, key, etag) already loaded? A cheap check before downloading.
pub async fn already_loaded(
    pool: &PgPool,
    source: &str,
    key: &str,
    etag: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM loaded_objects WHERE source = $1 AND object_key = $2 AND etag = $3",
    )
    .bind(source)
    .bind(key)
    .bind(etag)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// Number of columns in `COPY_EVENTS`.
const EVENT_COLUMNS: i16 = 21;

/// Appends `events` rows to `out`, in the column order of `COPY_EVENTS`.
fn copy_rows<'a>(out: &mut BinaryCopy, events: impl Iterator<Item = &'a Staged>, object_id: i64) {
    for s in events {
        let e = &s.event;
        out.row(EVENT_COLUMNS);
        out.uuid(e.id);
        out.timestamptz(e.ts);
        out.text(e.campaign.as_ref().map(|x| x.as_str()));
        out.text(e.creative.as_ref().map(|x| x.as_str()));
        out.text(e.episode.as_ref().map(|x| x.as_str()));
        out.text(e.show.as_ref().map(|x| x.as_str()));
        out.text(e.placement.map(|x| x.as_str()));
        out.text(e.event.map(|x| x.as_str()));
        out.int4(e.error_code.map(i32::from));
        out.text(Some(e.listener.as_str()));
        for f in [&e.ua, &e.app, &e.device, &e.os] {
            out.text(f.as_deref());
        }
        out.text(e.country.as_ref().map(|c| c.as_str()));
        out.text(Some(e.verdict.as_str()));
        out.text(e.reason.as_deref());
        out.text(e.trace_id.as_deref());
        out.int8(object_id);
        out.text(e.region.as_ref().map(|r| r.as_str()));
        out.text(Some(e.listener_period.as_str()));
    }
}

const COPY_EVENTS: &str =
    "COPY events (id, ts, campaign, creative, episode, show, placement, event, \
    error_code, listener, ua, app, device, os, country, verdict, reason, trace_id, object_id, \
    region, listener_period) FROM STDIN (FORMAT binary)";

/// Ids of the object already loaded (a replay, or a Firehose retry that
/// landed in another object). The ts bounds prune partitions; an id's
/// timestamp is its event's ts.
const KNOWN_IDS: &str = "SELECT id FROM events WHERE ts >= $1 AND ts <= $2 AND id = ANY($3)";

/// The object's hourly groups, appended: readers sum over groups, and
/// `compact` merges a group's rows later (migration 6 says why). The
/// counts are `HOURLY_HITS`' columns.
static APPEND_HOURLY: LazyLock<String> = LazyLock::new(|| {
    let counts: Vec<&str> = HOURLY_HITS.into_iter().map(hourly_column).collect();
    format!(
        "COPY rollup_hourly (campaign, hour, creative, episode, show, placement, event, country, \
         app, device, region, {}, grp) FROM STDIN (FORMAT binary)",
        counts.join(", ")
    )
});
/// Number of columns in `APPEND_HOURLY`: campaign, hour, nine dimensions,
/// the counts and the group hash.
const HOURLY_COLUMNS: i16 = 12 + HOURLY_HITS.len() as i16;

/// New listeners of the day per campaign (creative '') and per creative,
/// added to their scope's count. Rows come sorted by key: the order
/// concurrent loaders take the row locks in.
const UPSERT_UNIQUES: &str = "INSERT INTO daily_uniques AS u (campaign, day, creative, listeners)
SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::int8[])
ON CONFLICT (campaign, day, creative) DO UPDATE SET listeners = u.listeners + EXCLUDED.listeners";

/// Counted impressions of the sampled listeners, added to their rows.
const UPSERT_SAMPLE: &str = "INSERT INTO frequency_sample AS f (campaign, day, listener, impressions)
SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::int8[])
ON CONFLICT (campaign, day, listener) DO UPDATE SET impressions = f.impressions + EXCLUDED.impressions";

/// Bumps the data version of every campaign the load touched, and tells the
/// API replicas (delivered when the transaction commits).
const BUMP_VERSIONS: &str = "WITH bumped AS (
    INSERT INTO campaign_data_versions AS v (campaign, version)
    SELECT c, 1 FROM UNNEST($1::text[]) AS t (c)
    ON CONFLICT (campaign) DO UPDATE SET version = v.version + 1, updated_at = now()
    RETURNING campaign, version
) SELECT count(pg_notify('earshot_changes', 'v ' || campaign || ' ' || version)) FROM bumped";

/// The object loading just before another, for the other's first half
/// ([`begin`]) to run meanwhile: the ids it is inserting.
#[derive(Debug, Default)]
pub struct Preceding {
    ids: foldhash::HashSet<Uuid>,
}

impl Preceding {
    /// Every id of `object`: once it commits, each is in `events`.
    pub fn of(object: &Prepared) -> Self {
        Self {
            ids: object.events.iter().map(|s| s.event.id).collect(),
        }
    }
}

/// An object half loaded: its transaction open with its events and
/// quarantined lines in, waiting to count. The default is
/// an object the ledger already has: nothing to finish.
#[derive(Default)]
pub struct Begun {
    /// `None`: the ledger already had the object (nothing written).
    tx: Option<Transaction<'static, Postgres>>,
    stats: LoadStats,
    /// The events not loaded before, as indexes into `Prepared::events`, in
    /// (ts, id) order.
    fresh: Vec<usize>,
}

/// The first half of an object's transaction: claims the
/// object in the ledger, COPYs its new events, and quarantines its bad lines.
///
/// It may run while `preceding`'s object is still loading, as long as that
/// one commits first (or this one is dropped): its ids are left out here,
/// since it is the one inserting them.
pub async fn begin(
    pool: &PgPool,
    object: &Prepared,
    preceding: &Preceding,
) -> Result<Begun, sqlx::Error> {
    let obj = &object.id;
    let mut tx = pool.begin().await?;
    // Claim the object. A concurrent loader with the same object waits here
    // on the unique index until the first commits, then finds it present.
    let claimed: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO loaded_objects (source, object_key, etag, bytes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, object_key, etag) DO NOTHING RETURNING id",
    )
    .bind(&obj.source)
    .bind(&obj.key)
    .bind(&obj.etag)
    .bind(obj.bytes as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((ledger_id,)) = claimed else {
        tx.rollback().await?;
        return Ok(Begun::default());
    };

    let stats = LoadStats {
        loaded: true,
        ledger_id,
        lines: object.lines,
        events: object.events.len() as u32 + object.duplicates_in_object,
        quarantined: object.quarantined.len() as u32,
        max_event_ts: object.events.iter().map(|s| s.event.ts).max(),
        ..Default::default()
    };
    let fresh = if object.events.is_empty() {
        Vec::new()
    } else {
        insert_new_events(&mut tx, ledger_id, &object.events, &preceding.ids).await?
    };

    if !object.quarantined.is_empty() {
        let line_nos: Vec<i32> = object
            .quarantined
            .iter()
            .map(|q| q.line_no as i32)
            .collect();
        let raws: Vec<Vec<u8>> = object.quarantined.iter().map(|q| q.raw.clone()).collect();
        let reasons: Vec<String> = object
            .quarantined
            .iter()
            .map(|q| q.reason.clone())
            .collect();
        sqlx::query(
            "INSERT INTO quarantine (object_id, line_no, raw_line, reason)
             SELECT $1, * FROM UNNEST($2::int[], $3::bytea[], $4::text[])",
        )
        .bind(ledger_id)
        .bind(&line_nos)
        .bind(&raws)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }
    sequences::record(&mut tx, ledger_id, object, &fresh).await?;
    Ok(Begun {
        tx: Some(tx),
        stats,
        fresh,
    })
}

impl Begun {
    /// Rolls the first half back (dropping it does too, once its connection
    /// is next used; this is at once).
    pub async fn rollback(self) {
        if let Some(tx) = self.tx {
            if let Err(e) = tx.rollback().await {
                tracing::debug!(error = %e, "rolling back a begun load failed; its connection closes instead");
            }
        }
    }
}

/// The second half: counts (the key tables decide which keys are new),
/// adds the hourly and daily rollups, uniques, reach sketches and frequency
/// sample, completes
/// the ledger row and commits. `object` is what `begun` began with; the key
/// partitions of its days exist (`keys::ensure_days`).
///
/// Loads of other objects run side by side. The rows they share in
/// `rollup_daily`, `daily_uniques`, `reach_sketches`, `frequency_sample`
/// and `campaign_data_versions` are written last, in that order, each sorted, so one load waits for another only from there to its
/// commit, and never in a cycle.
///
/// Also returns the hourly rows it appended, for the merge.
pub async fn finish(object: &Prepared, begun: Begun) -> Result<(LoadStats, Touched), sqlx::Error> {
    let mut touched = Touched::default();
    let Some(mut tx) = begun.tx else {
        return Ok((begun.stats, touched));
    };
    let mut stats = begun.stats;
    let fresh: Vec<&Staged> = begun.fresh.iter().map(|&i| &object.events[i]).collect();
    stats.new_events = fresh.len() as u32;
    stats.duplicates = stats.events - stats.new_events;

    if !fresh.is_empty() {
        let candidates = counting::candidates(&fresh);
        let new_counted =
            keys::insert_new(&mut tx, KeyTable::Counting, &candidates.count_keys()).await?;
        let new_heard =
            keys::insert_new(&mut tx, KeyTable::Listener, &candidates.listener_keys()).await?;
        let decision = counting::decide(&fresh, candidates, &new_counted, &new_heard);
        stats.counted = decision.counted_now;
        let r = rollups::rollups(&fresh, &decision.counted);
        append_hourly(&mut tx, &r.hourly).await?;
        for (k, _) in &r.hourly {
            touched.add_group(k.campaign, k.hour, k.group);
        }
        let marks = daily::share_mark(&mut tx).await?;
        DailySql::standard()
            .upsert(&mut tx, &r, marks.blocks_through)
            .await?;
        add_uniques(&mut tx, &decision).await?;
        let sketches = reach::sketches(&fresh, &decision.counted);
        day_sketches::merge(&mut tx, &sketches).await?;
        sketch_blocks::add_late(&mut tx, &sketches, marks.reach_through).await?;
        add_frequency_sample(&mut tx, &reach::frequency_sample(&fresh, &decision.counted)).await?;
        sqlx::query(BUMP_VERSIONS)
            .bind(&r.campaigns)
            .execute(&mut *tx)
            .await?;
    }

    sqlx::query(
        "UPDATE loaded_objects SET lines = $2, events = $3, new_events = $4, duplicates = $5,
                quarantined = $6, max_event_ts = $7 WHERE id = $1",
    )
    .bind(stats.ledger_id)
    .bind(stats.lines as i32)
    .bind(stats.events as i32)
    .bind(stats.new_events as i32)
    .bind(stats.duplicates as i32)
    .bind(stats.quarantined as i32)
    .bind(stats.max_event_ts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((stats, touched))
}

/// How many times one object's events are COPYed before a failure on the
/// primary key ends its transaction. A retry follows another load's commit
/// of some of the same ids (the COPY waits for it, then fails), and looks
/// them up again; three loads holding the same ids at once is already rare.
const EVENT_COPY_TRIES: u32 = 3;

/// PostgreSQL's unique_violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// Writes the events not loaded before into `events` and returns them, as
/// indexes into `events` in (ts, id) order. Events whose id is in `skip` are
/// left out: the preceding object is inserting them.
///
/// A concurrent load holding some of the same ids (a Firehose retry in two
/// objects loaded side by side) makes the COPY wait for it; if it commits,
/// the COPY fails on the primary key. The COPY runs in a savepoint, so only
/// it is undone: the ids are looked up again, now finding the other load's,
/// and the rest goes in.
async fn insert_new_events(
    tx: &mut Transaction<'_, Postgres>,
    ledger_id: i64,
    events: &[Staged],
    skip: &foldhash::HashSet<Uuid>,
) -> Result<Vec<usize>, sqlx::Error> {
    let (mut lo, mut hi) = (events[0].event.ts, events[0].event.ts);
    for s in events {
        lo = lo.min(s.event.ts);
        hi = hi.max(s.event.ts);
    }
    let ids: Vec<Uuid> = events
        .iter()
        .map(|s| s.event.id)
        .filter(|id| !skip.contains(id))
        .collect();
    let mut tries = 0;
    loop {
        tries += 1;
        let known: foldhash::HashSet<Uuid> = sqlx::query_scalar(KNOWN_IDS)
            .bind(lo)
            .bind(hi)
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        // In time order: the primary key and the partitions take them in order.
        let mut fresh: Vec<usize> = (0..events.len())
            .filter(|&i| {
                let id = events[i].event.id;
                !known.contains(&id) && !skip.contains(&id)
            })
            .collect();
        fresh.sort_unstable_by_key(|&i| (events[i].event.ts, events[i].event.id));
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
        match copy_events(&mut savepoint, ledger_id, events, &fresh).await {
            Ok(()) => {
                savepoint.commit().await?;
                return Ok(fresh);
            }
            Err(e) if is_unique_violation(&e) && tries < EVENT_COPY_TRIES => {
                savepoint.rollback().await?;
                tracing::debug!(
                    ledger_id,
                    "another load committed some of this object's events first; looking them up again"
                );
            }
            Err(e) => return Err(e),
        }
    }
}

/// COPYs `events[i]` for every `i` of `fresh`.
async fn copy_events(
    tx: &mut Transaction<'_, Postgres>,
    ledger_id: i64,
    events: &[Staged],
    fresh: &[usize],
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
    // Chunks keep memory flat for large objects.
    let mut rows = BinaryCopy::new(10_000 * 400);
    for chunk in fresh.chunks(10_000) {
        copy_rows(&mut rows, chunk.iter().map(|&i| &events[i]), ledger_id);
        copy.send(rows.take()).await?;
    }
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// Sends rows built whole in memory through `statement` (a binary COPY).
async fn copy_whole(
    tx: &mut Transaction<'_, Postgres>,
    statement: &str,
    rows: BinaryCopy,
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(rows.finish()).await?;
    copy.finish().await?;
    Ok(())
}

async fn append_hourly(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(HourlyKey<'_>, HourlyCounts)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut out = BinaryCopy::new(rows.len() * 160);
    for (k, m) in rows {
        out.row(HOURLY_COLUMNS);
        out.text(Some(k.campaign));
        out.timestamptz(
            OffsetDateTime::from_unix_timestamp(k.hour).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        );
        for d in [
            k.creative,
            k.episode,
            k.show,
            k.placement,
            k.event,
            k.country,
            k.app,
            k.device,
            k.region,
        ] {
            out.text(Some(d));
        }
        for v in m {
            out.int8(*v);
        }
        out.int8(k.group);
    }
    copy_whole(tx, &APPEND_HOURLY, out).await
}

/// Adds the sampled listeners' counted impressions (sorted by key) to
/// `frequency_sample`.
async fn add_frequency_sample(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(SampleKey<'_>, i64)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(UPSERT_SAMPLE)
        .bind(rows.iter().map(|(k, _)| k.campaign).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(k, _)| k.day).collect::<Vec<Date>>())
        .bind(rows.iter().map(|(k, _)| k.listener).collect::<Vec<&str>>())
        .bind(rows.iter().map(|(_, n)| *n).collect::<Vec<i64>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Adds the listeners heard for the first time to `daily_uniques`.
async fn add_uniques(
    tx: &mut Transaction<'_, Postgres>,
    decision: &Decision<'_>,
) -> Result<(), sqlx::Error> {
    if decision.new_heard.is_empty() {
        return Ok(());
    }
    let scopes = counting::new_listeners(&decision.new_heard);
    sqlx::query(UPSERT_UNIQUES)
        .bind(scopes.iter().map(|s| s.0).collect::<Vec<&str>>())
        .bind(scopes.iter().map(|s| s.1).collect::<Vec<Date>>())
        .bind(scopes.iter().map(|s| s.2).collect::<Vec<&str>>())
        .bind(scopes.iter().map(|s| s.3).collect::<Vec<i64>>())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
