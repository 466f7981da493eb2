//! The sequence ledger: which of each edge's numbers an object's load
//! stored, quarantined or found already stored, and the heartbeats it
//! carried, written in the load's transaction (migration 23; the audit
//! that reads it is `earshot_platform::audit`).

use earshot_domain::{EdgeSeq, Heartbeat};
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;

use crate::store::Prepared;

/// What became of a numbered line, as `edge_seq_ranges.state` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeqState {
    Stored,
    Quarantined,
    Duplicate,
}

impl SeqState {
    pub const fn as_str(self) -> &'static str {
        match self {
            SeqState::Stored => "stored",
            SeqState::Quarantined => "quarantined",
            SeqState::Duplicate => "duplicate",
        }
    }
}

/// A run of consecutive numbers of one edge, in one state and one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRange {
    pub edge: String,
    pub hour: OffsetDateTime,
    pub lo: u64,
    pub hi: u64,
    pub lo_ts: OffsetDateTime,
    pub hi_ts: OffsetDateTime,
    pub state: SeqState,
}

pub use earshot_platform::audit::hour_of;

/// Merges numbered lines into runs: sorted by (state, edge, seq), a run
/// continues while the next number is one more, in the same hour.
/// Duplicates count lines, so a number repeated is another run of them; a
/// stored or quarantined number is one number however often it is listed.
pub fn ranges(mut seqs: Vec<(SeqState, EdgeSeq, OffsetDateTime)>) -> Vec<SeqRange> {
    seqs.sort_unstable_by_key(|&(state, s, ts)| (state, s.edge, s.seq, ts));
    let mut out: Vec<SeqRange> = Vec::new();
    for (state, s, ts) in seqs {
        let hour = hour_of(ts);
        if let Some(last) = out.last_mut() {
            if last.state == state
                && last.edge.as_bytes() == s.edge.as_bytes()
                && last.hour == hour
                && (s.seq == last.hi + 1 || (s.seq == last.hi && state != SeqState::Duplicate))
            {
                if s.seq == last.hi + 1 {
                    last.hi = s.seq;
                    last.hi_ts = ts;
                }
                continue;
            }
        }
        out.push(SeqRange {
            edge: s.edge.as_str().to_owned(),
            hour,
            lo: s.seq,
            hi: s.seq,
            lo_ts: ts,
            hi_ts: ts,
            state,
        });
    }
    out
}

/// The numbered lines of `object`: the events its load inserted
/// (`fresh`, indexes into its events) are stored, its other events and
/// repeats within it are duplicates, and its quarantined lines that carry
/// a number are quarantined (at `now` when their `ts` does not read).
pub fn numbered_lines(
    object: &Prepared,
    fresh: &[usize],
    now: OffsetDateTime,
) -> Vec<(SeqState, EdgeSeq, OffsetDateTime)> {
    let mut stored = vec![false; object.events.len()];
    for &i in fresh {
        stored[i] = true;
    }
    let mut out = Vec::new();
    for (s, was_stored) in object.events.iter().zip(stored) {
        if let Some(seq) = s.event.sequence {
            let state = if was_stored {
                SeqState::Stored
            } else {
                SeqState::Duplicate
            };
            out.push((state, seq, s.event.ts));
        }
    }
    for (seq, ts) in &object.duplicate_seqs {
        out.push((SeqState::Duplicate, *seq, *ts));
    }
    for q in &object.quarantined {
        if let Some((seq, ts)) = q.sequence {
            out.push((SeqState::Quarantined, seq, ts.unwrap_or(now)));
        }
    }
    out
}

const INSERT_RANGES: &str = "INSERT INTO edge_seq_ranges
    (edge, hour, lo, hi, lo_ts, hi_ts, state, object_id)
SELECT *, $8 FROM UNNEST($1::text[], $2::timestamptz[], $3::int8[], $4::int8[],
    $5::timestamptz[], $6::timestamptz[], $7::text[])";

const INSERT_HEARTBEATS: &str = "INSERT INTO edge_heartbeats (edge, seq, ts, object_id)
SELECT *, $4 FROM UNNEST($1::text[], $2::int8[], $3::timestamptz[])";

/// Writes the object's runs and heartbeats into the ledger, in the load's
/// transaction. Rows are only appended, so concurrent loads never wait on
/// each other here.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    object_id: i64,
    object: &Prepared,
    fresh: &[usize],
) -> Result<(), sqlx::Error> {
    let runs = ranges(numbered_lines(object, fresh, OffsetDateTime::now_utc()));
    if !runs.is_empty() {
        sqlx::query(INSERT_RANGES)
            .bind(runs.iter().map(|r| r.edge.as_str()).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.hour).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.lo as i64).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.hi as i64).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.lo_ts).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.hi_ts).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
            .bind(object_id)
            .execute(&mut **tx)
            .await?;
    }
    if !object.heartbeats.is_empty() {
        let hb: &[Heartbeat] = &object.heartbeats;
        sqlx::query(INSERT_HEARTBEATS)
            .bind(hb.iter().map(|h| h.edge.as_str()).collect::<Vec<_>>())
            .bind(hb.iter().map(|h| h.seq as i64).collect::<Vec<_>>())
            .bind(hb.iter().map(|h| h.ts).collect::<Vec<_>>())
            .bind(object_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Deletes the ledger's rows of hours before `oldest_kept` (the retention
/// period, as the events' partitions): the audit of a day whose events are
/// gone is of no use. Returns the rows deleted.
pub async fn drop_before(pool: &sqlx::PgPool, oldest_kept: time::Date) -> Result<u64, sqlx::Error> {
    let cutoff = oldest_kept.midnight().assume_utc();
    let ranges = sqlx::query("DELETE FROM edge_seq_ranges WHERE hour < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    let beats = sqlx::query("DELETE FROM edge_heartbeats WHERE ts < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(ranges + beats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::EdgeId;
    use time::macros::datetime;

    #[test]
    fn consecutive_numbers_merge_into_runs_cut_at_hours_states_and_gaps() {
        let a = EdgeId::parse("0000000000000000000000000000000a").unwrap();
        let b = EdgeId::parse("0000000000000000000000000000000b").unwrap();
        let t = datetime!(2026-11-27 10:59:59 UTC);
        let next_hour = datetime!(2026-11-27 11:00:00 UTC);
        let n = |edge, seq| EdgeSeq { edge, seq };
        let runs = ranges(vec![
            (SeqState::Stored, n(a, 3), t),
            (SeqState::Stored, n(a, 1), t),
            (SeqState::Stored, n(a, 2), t),
            (SeqState::Stored, n(a, 4), next_hour),
            (SeqState::Stored, n(a, 6), next_hour),
            (SeqState::Duplicate, n(a, 5), next_hour),
            (SeqState::Duplicate, n(a, 5), next_hour),
            (SeqState::Stored, n(b, 1), t),
        ]);
        let got: Vec<_> = runs
            .iter()
            .map(|r| (r.state, r.edge.clone(), r.hour.hour(), r.lo, r.hi))
            .collect();
        let (ea, eb) = (a.as_str().to_owned(), b.as_str().to_owned());
        assert_eq!(
            got,
            vec![
                (SeqState::Stored, ea.clone(), 10, 1, 3),
                (SeqState::Stored, ea.clone(), 11, 4, 4),
                (SeqState::Stored, ea.clone(), 11, 6, 6),
                (SeqState::Stored, eb, 10, 1, 1),
                (SeqState::Duplicate, ea.clone(), 11, 5, 5),
                (SeqState::Duplicate, ea, 11, 5, 5),
            ]
        );
    }
}
