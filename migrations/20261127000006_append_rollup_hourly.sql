-- rollup_hourly becomes append-only: each load appends one row per group of
-- its new events (that object's sums), and `earshot load` merges the rows of
-- a group back into one afterwards (services/loader/src/compact.rs).
--
-- Why: its key holds every reporting dimension, so an hour of realistic
-- traffic has almost no two events in the same group, and upserting through
-- the 10-column primary key was the largest single cost of a load (31% of
-- it, docs/BENCHMARKS.md "Where the time goes"). A plain insert into a
-- (campaign, hour) index costs a fraction of that.
--
-- Why it is safe: every reader sums the metrics over the dimensions it
-- groups by (reports, delivery pacing, `earshot verify`), so two rows of one
-- group add up to the same numbers as one row holding their sum. Merging
-- deletes rows and inserts their sums in one statement, which keeps every
-- total at every moment, even beside a load or another merge.
ALTER TABLE rollup_hourly DROP CONSTRAINT rollup_hourly_pkey;
CREATE INDEX rollup_hourly_campaign_hour_idx ON rollup_hourly (campaign, hour);
