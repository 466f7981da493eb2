//! One object, one transaction: claim it in the ledger, COPY its new events,
//! count (as `counting` decides), add the rollup deltas, and commit.

use std::sync::{LazyLock, Mutex};

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

/// Most events in one part of an object loaded in parts, by default
/// (`EARSHOT_LOAD_PART_EVENTS`): a part loads in a fraction of the whole
/// object's time (about a tenth, for Firehose's 20,000-event objects, at 5
/// million events loaded that day), so a loader killed every second or
/// two still commits one per life (docs/BENCHMARKS.md, "Scale envelope").
pub const PART_EVENTS: usize = 2_000;

impl Prepared {
    /// How many parts this object loads in, if it must: enough for
    /// `part_events` each.
    pub fn parts(&self, part_events: usize) -> i16 {
        let parts = self.events.len().div_ceil(part_events.max(1)).max(1);
        i16::try_from(parts).unwrap_or(i16::MAX)
    }

    /// Part `part` of `parts`: the events whose listener hashes to it, so
    /// that every key the counting rule decides (each holds a listener)
    /// is decided within one part, as the whole object would. The last
    /// part also takes what is not an event (quarantined lines, repeats
    /// within the object, heartbeats) and the lines they were.
    pub fn part(&self, part: i16, parts: i16) -> Prepared {
        let of = |s: &Staged| {
            (earshot_platform::sketch::listener_hash(s.event.listener.as_str()) % parts as u64)
                as i16
        };
        let events: Vec<Staged> = self
            .events
            .iter()
            .filter(|s| of(s) == part)
            .cloned()
            .collect();
        let mut piece = Prepared {
            id: self.id.clone(),
            lines: events.len() as u32,
            events,
            quarantined: Vec::new(),
            duplicates_in_object: 0,
            duplicate_seqs: Vec::new(),
            heartbeats: Vec::new(),
        };
        if part == parts - 1 {
            piece.lines = self.lines - (self.events.len() - piece.events.len()) as u32;
            piece.quarantined = self.quarantined.clone();
            piece.duplicates_in_object = self.duplicates_in_object;
            piece.duplicate_seqs = self.duplicate_seqs.clone();
            piece.heartbeats = self.heartbeats.clone();
        }
        piece
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
    /// The parts it was loaded in; 0 when it was loaded whole.
    pub parts: i16,
}

impl LoadStats {
    /// Adds a part's load to the object's.
    fn add_part(&mut self, part: &LoadStats) {
        self.loaded |= part.loaded;
        self.ledger_id = part.ledger_id;
        self.lines += part.lines;
        self.events += part.events;
        self.new_events += part.new_events;
        self.duplicates += part.duplicates;
        self.quarantined += part.quarantined;
        self.counted += part.counted;
        self.max_event_ts = self.max_event_ts.max(part.max_event_ts);
        self.parts += i16::from(part.loaded);
    }
}

/// Is (source, key, etag) already loaded? A cheap check before downloading
/// (on the pool), and a part's check inside its transaction.
pub async fn already_loaded<'e>(
    db: impl sqlx::PgExecutor<'e>,
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
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Number of columns in `COPY_EVENTS`.
const EVENT_COLUMNS: i16 = 19;

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
        for f in [&e.app, &e.device, &e.os] {
            out.text(f.as_deref());
        }
        out.text(e.country.as_ref().map(|c| c.as_str()));
        out.text(Some(e.verdict.as_str()));
        out.text(e.reason.as_deref());
        out.int8(object_id);
        out.text(e.region.as_ref().map(|r| r.as_str()));
        out.text(Some(e.listener_period.as_str()));
    }
}

/// Every column of `events` but `ua` and `trace_id`, which stay in S3
/// (Athena) and nothing in PostgreSQL reads. The user agent is the widest
/// field (54 bytes on the loader bench's lines, a sixth of a row); the row
/// keeps what the edge made of it (app, device, os) and the verdict's
/// reason (migration 31). The trace id is the next widest (41 bytes there,
/// up to ~100 with a parent and sampling flag), wanted only to follow one
/// hit through the edge's logs (migration 33).
const COPY_EVENTS: &str =
    "COPY events (id, ts, campaign, creative, episode, show, placement, event, \
    error_code, listener, app, device, os, country, verdict, reason, object_id, \
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
    ledger: Ledger,
}

/// Counts a try of `id` before its transaction begins, in a statement of
/// its own, so a try that never commits (a kill, a crash) still counts:
/// returns which try this is, or `None` when the ledger already has the
/// object (nothing to count).
pub async fn count_attempt(pool: &PgPool, id: &ObjectId) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO load_attempts AS a (source, object_key, etag)
         SELECT $1, $2, $3 WHERE NOT EXISTS (
             SELECT FROM loaded_objects WHERE source = $1 AND object_key = $2 AND etag = $3)
         ON CONFLICT (source, object_key, etag)
         DO UPDATE SET attempts = a.attempts + 1, last_at = now()
         RETURNING attempts",
    )
    .bind(&id.source)
    .bind(&id.key)
    .bind(&id.etag)
    .fetch_optional(pool)
    .await
}

/// Removes what tries left behind once their object is loaded; returns
/// the rows removed. The last part of an object removes its try count and
/// parts in its own transaction, so these are leftovers of two cases only:
/// a try counted while another loader completed the object, and parts of
/// an object a loader of a version before parts loaded whole (a rollout).
/// Nothing reads them again, but the tries an operator lists
/// (docs/OPERATIONS.md, "LoaderBacklog") would show them as still failing.
pub async fn prune_settled_tries(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH tries AS (
             DELETE FROM load_attempts a USING loaded_objects o
             WHERE (o.source, o.object_key, o.etag) = (a.source, a.object_key, a.etag)
             RETURNING 1
         ), parts AS (
             DELETE FROM loaded_object_parts p USING loaded_objects o
             WHERE (o.source, o.object_key, o.etag) = (p.source, p.object_key, p.etag)
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM tries) + (SELECT count(*) FROM parts)",
    )
    .fetch_one(pool)
    .await
}

/// Where a load records itself: the object's row in `loaded_objects`, or
/// one part's row in `loaded_object_parts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Ledger {
    #[default]
    Whole,
    Part {
        part: i16,
        /// Its commit completes the object: the object's row goes in.
        last: bool,
    },
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
    fill(tx, ledger_id, Ledger::Whole, object, preceding).await
}

/// The rest of the first half, once the ledger row is claimed: the events,
/// the quarantined lines, the sequence ledger.
async fn fill(
    mut tx: Transaction<'static, Postgres>,
    ledger_id: i64,
    ledger: Ledger,
    object: &Prepared,
    preceding: &Preceding,
) -> Result<Begun, sqlx::Error> {
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
        ledger,
    })
}

/// First key of the advisory lock a part's transaction holds on its
/// object (the second is a hash of the object's names): "ESLP" in ASCII.
const PARTS_LOCK_CLASS: i32 = 0x4553_4C50;

/// What the parts of an object committed so far did, summed, and the
/// hourly rows they appended: kept across the tries of one process, so a
/// try that fails after some parts does not lose them from the run's
/// account.
#[derive(Debug, Default)]
pub struct PartsLoaded {
    pub stats: LoadStats,
    pub touched: Touched,
}

impl PartsLoaded {
    fn add(&mut self, part: &LoadStats, touched: Touched) {
        self.stats.add_part(part);
        self.touched.merge(touched);
    }
}

/// Loads `object` in parts ([`Prepared::part`]), one transaction each,
/// going on from the parts committed before (by an earlier life, or by
/// another loader), adding each part's load to `so_far` as it commits.
/// The first part fixes how many there are: enough for `part_events`
/// each.
///
/// Each transaction takes the object's advisory lock and then reads which
/// parts are in, so loaders loading the same object take turns part by
/// part, and the part that completes the set is known inside the
/// transaction that commits it: that one puts the object's row in
/// `loaded_objects`, first, with the id every part used (its quarantined
/// lines refer to it), and the parts' counts summed.
pub async fn load_in_parts(
    pool: &PgPool,
    object: &Prepared,
    part_events: usize,
    so_far: &Mutex<PartsLoaded>,
) -> Result<(), sqlx::Error> {
    let obj = &object.id;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, hashtext($2 || chr(31) || $3 || chr(31) || $4))",
        )
        .bind(PARTS_LOCK_CLASS)
        .bind(&obj.source)
        .bind(&obj.key)
        .bind(&obj.etag)
        .execute(&mut *tx)
        .await?;
        if already_loaded(&mut *tx, &obj.source, &obj.key, &obj.etag).await? {
            tx.rollback().await?;
            return Ok(());
        }
        let done: Vec<(i16, i16, i64)> = sqlx::query_as(
            "SELECT part, parts, object_id FROM loaded_object_parts
             WHERE source = $1 AND object_key = $2 AND etag = $3 ORDER BY part",
        )
        .bind(&obj.source)
        .bind(&obj.key)
        .bind(&obj.etag)
        .fetch_all(&mut *tx)
        .await?;
        // The first part fixes the count and the id for the others.
        let (parts, ledger_id) = match done.first() {
            Some(&(_, parts, id)) => (parts, id),
            None => (
                object.parts(part_events),
                sqlx::query_scalar(
                    "SELECT nextval(pg_get_serial_sequence('loaded_objects', 'id'))",
                )
                .fetch_one(&mut *tx)
                .await?,
            ),
        };
        let part = (0..parts)
            .find(|p| !done.iter().any(|d| d.0 == *p))
            .expect("an object not in loaded_objects has a part left");
        let last = done.len() + 1 == parts as usize;
        sqlx::query(
            "INSERT INTO loaded_object_parts (source, object_key, etag, part, parts, object_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&obj.source)
        .bind(&obj.key)
        .bind(&obj.etag)
        .bind(part)
        .bind(parts)
        .bind(ledger_id)
        .execute(&mut *tx)
        .await?;
        if last {
            sqlx::query(
                "INSERT INTO loaded_objects (id, source, object_key, etag, bytes)
                 OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(ledger_id)
            .bind(&obj.source)
            .bind(&obj.key)
            .bind(&obj.etag)
            .bind(obj.bytes as i64)
            .execute(&mut *tx)
            .await?;
        }
        let piece = object.part(part, parts);
        let ledger = Ledger::Part { part, last };
        let begun = fill(tx, ledger_id, ledger, &piece, &Preceding::default()).await?;
        let (stats, t) = finish(&piece, begun).await?;
        tracing::debug!(key = %obj.key, part, parts, new_events = stats.new_events, "part of an object loaded");
        so_far.lock().expect("not poisoned").add(&stats, t);
        if last {
            return Ok(());
        }
    }
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

    close_ledger(&mut tx, &object.id, begun.ledger, &stats).await?;
    tx.commit().await?;
    Ok((stats, touched))
}

/// The counts of a load, in the order `CLOSE_*`'s $5 to $11 take them.
const CLOSE_WHOLE: &str = "WITH attempts AS (
    DELETE FROM load_attempts WHERE source = $1 AND object_key = $2 AND etag = $3
) UPDATE loaded_objects SET lines = $5, events = $6, new_events = $7, duplicates = $8,
        quarantined = $9, max_event_ts = $10 WHERE id = $4";

const CLOSE_PART: &str = "UPDATE loaded_object_parts SET lines = $5, events = $6, new_events = $7,
        duplicates = $8, quarantined = $9, max_event_ts = $10
    WHERE source = $1 AND object_key = $2 AND etag = $3 AND part = $11 AND object_id = $4";

/// The last part: the object's row takes its own counts and the other
/// parts' (then gone), as a whole load would have written them.
const CLOSE_LAST_PART: &str = "WITH attempts AS (
    DELETE FROM load_attempts WHERE source = $1 AND object_key = $2 AND etag = $3
), others AS (
    DELETE FROM loaded_object_parts
    WHERE source = $1 AND object_key = $2 AND etag = $3 AND object_id = $4
    RETURNING part, lines, events, new_events, duplicates, quarantined, max_event_ts
), summed AS (
    SELECT coalesce(sum(lines), 0) AS lines, coalesce(sum(events), 0) AS events,
           coalesce(sum(new_events), 0) AS new_events,
           coalesce(sum(duplicates), 0) AS duplicates,
           coalesce(sum(quarantined), 0) AS quarantined, max(max_event_ts) AS max_event_ts
    FROM others WHERE part <> $11
) UPDATE loaded_objects o SET lines = $5 + s.lines, events = $6 + s.events,
        new_events = $7 + s.new_events, duplicates = $8 + s.duplicates,
        quarantined = $9 + s.quarantined,
        max_event_ts = greatest($10, s.max_event_ts)
    FROM summed s WHERE o.id = $4";

/// Writes a load's counts to its ledger row (and, for the last part, the
/// object's), and forgets the object's tries.
async fn close_ledger(
    tx: &mut Transaction<'_, Postgres>,
    obj: &ObjectId,
    ledger: Ledger,
    stats: &LoadStats,
) -> Result<(), sqlx::Error> {
    let (statement, part) = match ledger {
        Ledger::Whole => (CLOSE_WHOLE, None),
        Ledger::Part { part, last } => {
            (if last { CLOSE_LAST_PART } else { CLOSE_PART }, Some(part))
        }
    };
    let mut q = sqlx::query(statement)
        .bind(&obj.source)
        .bind(&obj.key)
        .bind(&obj.etag)
        .bind(stats.ledger_id)
        .bind(stats.lines as i32)
        .bind(stats.events as i32)
        .bind(stats.new_events as i32)
        .bind(stats.duplicates as i32)
        .bind(stats.quarantined as i32)
        .bind(stats.max_event_ts);
    if let Some(part) = part {
        q = q.bind(part);
    }
    q.execute(&mut **tx).await?;
    Ok(())
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

/// Rows of `events` sent to PostgreSQL at a time. Each piece is built in a
/// buffer of its own and then copied into the connection's write buffer,
/// both as large as the piece: pieces of 10,000 rows (megabytes, grown by
/// doubling) showed in the loader's peak memory (heaptrack); pieces of
/// 1,000 rows cost no measurable time.
const COPY_CHUNK_ROWS: usize = 1_000;
/// Room for one `events` row in binary COPY format (~280 bytes for the
/// loader bench's lines, more for long ids), so a piece's buffer is
/// rarely grown.
const COPY_ROW_BYTES: usize = 512;

/// COPYs `events[i]` for every `i` of `fresh`.
async fn copy_events(
    tx: &mut Transaction<'_, Postgres>,
    ledger_id: i64,
    events: &[Staged],
    fresh: &[usize],
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(COPY_EVENTS).await?;
    let mut rows = BinaryCopy::new(COPY_CHUNK_ROWS * COPY_ROW_BYTES);
    for chunk in fresh.chunks(COPY_CHUNK_ROWS) {
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
