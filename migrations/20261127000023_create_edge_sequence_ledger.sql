-- The sequence ledger (issue 30; docs/COUNTING.md, "How we know nothing was
-- lost"). Each execution environment of the edge numbers its events 1, 2,
-- 3, … (wire fields `edge`, `seq`) and writes a heartbeat with its last
-- number every minute and at shutdown. The loader records, in the same
-- transaction as the events, which numbers it stored, so `earshot audit`
-- can name every number that never arrived.

-- Runs of consecutive numbers of one edge, per object and UTC hour of the
-- events' ts (a run is cut where the hour changes), not a row per event:
--   stored       events inserted into `events` by this object's load
--   quarantined  lines of this object that carried a number but were
--                quarantined (their number arrived; the line is not stored)
--   duplicate    events of this object already stored (by id): a Firehose
--                retry or a replay. Never cover a missing number.
-- Rows are only appended, one object's in its load transaction: a replayed
-- object is skipped by `loaded_objects` and adds nothing.
CREATE TABLE edge_seq_ranges (
    edge       text NOT NULL,
    hour       timestamptz NOT NULL,
    lo         bigint NOT NULL,
    hi         bigint NOT NULL,
    lo_ts      timestamptz NOT NULL,   -- ts of the event numbered lo
    hi_ts      timestamptz NOT NULL,   -- ts of the event numbered hi
    state      text NOT NULL,
    object_id  bigint NOT NULL,        -- loaded_objects.id
    CHECK (lo >= 1 AND hi >= lo),
    CHECK (state IN ('stored', 'quarantined', 'duplicate'))
);
CREATE INDEX edge_seq_ranges_hour_idx ON edge_seq_ranges (hour);
CREATE INDEX edge_seq_ranges_edge_idx ON edge_seq_ranges (edge, lo);

-- Every heartbeat loaded: the edge had numbered up to `seq` at `ts`.
CREATE TABLE edge_heartbeats (
    edge       text NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 0),
    ts         timestamptz NOT NULL,
    object_id  bigint NOT NULL         -- loaded_objects.id
);
CREATE INDEX edge_heartbeats_ts_idx ON edge_heartbeats (ts);
CREATE INDEX edge_heartbeats_edge_idx ON edge_heartbeats (edge, seq);
