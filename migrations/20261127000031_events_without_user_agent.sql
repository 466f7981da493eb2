-- Raw events in PostgreSQL no longer hold the user agent: loaders from this
-- version on leave `events.ua` NULL. The agent is the row's widest field
-- (54 bytes on the loader benchmark's lines, a sixth of a row) and nothing
-- in PostgreSQL reads it: the edge already made of it what the counting rule
-- and the reports need (app, device, os, and the bot verdict with its
-- reason), and S3 keeps every line whole, agent included, for Athena
-- (docs/OPERATIONS.md, "Query raw events with Athena").
--
-- The column stays, so rows loaded before keep their agent and a loader of
-- the previous version (during a rollout) can still write it.
COMMENT ON COLUMN events.ua IS
    'The user agent, on rows loaded before migration 31 only; S3 keeps every event''s (Athena).';
