-- Raw events in PostgreSQL no longer hold the trace id: loaders from this
-- version on leave `events.trace_id` NULL, as migration 31 did for the user
-- agent. After the agent it is the row's widest field (41 bytes on the
-- loader benchmark's lines; an `X-Amzn-Trace-Id` with a parent and a
-- sampling flag runs to ~100), and nothing in PostgreSQL reads it: it is for
-- following one hit through the edge's logs and X-Ray, and S3 keeps it on
-- every line for Athena (docs/OPERATIONS.md, "Query raw events with
-- Athena").
--
-- The column stays, so rows loaded before keep their trace id and a loader
-- of the previous version (during a rollout) can still write it.
COMMENT ON COLUMN events.trace_id IS
    'The trace id, on rows loaded before migration 33 only; S3 keeps every event''s (Athena).';
