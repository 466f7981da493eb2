-- Two fields the edge added to the wire format (docs/WIRE_FORMAT.md), kept
-- with the raw events like every other field, so anything derived from the
-- events can be rebuilt from them:
--
-- region           ISO 3166-2 subdivision code (`US-CA`), or NULL when the
--                  edge's geography data has no region for the address.
-- listener_period  'day' or 'month': the period whose key made `listener`.
--                  Ids of one listener are equal within a period and
--                  unrelated across periods, so a distinct count of ids over
--                  a range spanning periods is an upper bound of its reach.
--
-- Both are nullable without a default: adding them rewrites no partition and
-- takes no long lock. NULL in listener_period means the row was loaded
-- before this column existed (or by a loader of an earlier version during
-- a rollout); edges before the period setting wrote daily ids.
ALTER TABLE events ADD COLUMN region text;
ALTER TABLE events ADD COLUMN listener_period text;
