//! This execution environment's edge id, the numbering of its events and
//! its heartbeats (`earshot_domain::sequence`; docs/WIRE_FORMAT.md,
//! "Heartbeats").

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use earshot_domain::{EdgeId, EdgeSeq, Heartbeat};
use time::OffsetDateTime;

/// How often a serving edge writes a heartbeat (issue 30: every minute).
/// It bounds an edge's "unknown tail" when it dies without a shutdown.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Draws the edge id once, numbers events 1, 2, 3, … and says when a
/// heartbeat is due.
#[derive(Debug)]
pub struct Sequencer {
    edge: EdgeId,
    /// The last number given out (0: none yet).
    last: AtomicU64,
    /// When the last heartbeat was written (or the edge started), Unix ms.
    last_heartbeat_ms: AtomicI64,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequencer {
    /// A new edge: a fresh id, nothing numbered, the heartbeat clock
    /// started now.
    pub fn new() -> Self {
        Self {
            edge: EdgeId::generate(),
            last: AtomicU64::new(0),
            last_heartbeat_ms: AtomicI64::new(unix_ms(OffsetDateTime::now_utc())),
        }
    }

    pub fn edge(&self) -> EdgeId {
        self.edge
    }

    /// The next event's number. Called right before its line is handed to
    /// the sink, with no await in between, so numbers follow that order.
    #[inline]
    pub fn next(&self) -> EdgeSeq {
        EdgeSeq {
            edge: self.edge,
            seq: self.last.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// The last number given out (0 before the first event).
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// A heartbeat at `now`, if [`HEARTBEAT_INTERVAL`] has passed since the
    /// last one (or since the start); at most one caller gets it.
    pub fn heartbeat_if_due(&self, now: OffsetDateTime) -> Option<Heartbeat> {
        let now_ms = unix_ms(now);
        let last = self.last_heartbeat_ms.load(Ordering::Relaxed);
        if now_ms - last < HEARTBEAT_INTERVAL.as_millis() as i64 {
            return None;
        }
        self.last_heartbeat_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.heartbeat(now))
    }

    /// A heartbeat at `now`, due or not (at shutdown).
    pub fn heartbeat(&self, now: OffsetDateTime) -> Heartbeat {
        self.last_heartbeat_ms
            .fetch_max(unix_ms(now), Ordering::Relaxed);
        Heartbeat {
            edge: self.edge,
            seq: self.last(),
            ts: earshot_domain::wire::to_wire_precision(now),
        }
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_from_one_and_heartbeats_carry_the_last_number() {
        let s = Sequencer::new();
        let start = OffsetDateTime::now_utc();
        assert_eq!(s.heartbeat(start).seq, 0);
        assert_eq!(s.next().seq, 1);
        assert_eq!(s.next().seq, 2);
        let e = s.next();
        assert_eq!((e.edge, e.seq), (s.edge(), 3));
        assert_eq!(
            s.heartbeat_if_due(start + time::Duration::seconds(59)),
            None
        );
        let due = start + time::Duration::seconds(61);
        let h = s.heartbeat_if_due(due).unwrap();
        assert_eq!((h.edge, h.seq), (s.edge(), 3));
        assert_eq!(s.heartbeat_if_due(due), None, "one heartbeat per minute");
        assert_ne!(
            Sequencer::new().edge(),
            s.edge(),
            "a restarted edge is another edge"
        );
    }
}
