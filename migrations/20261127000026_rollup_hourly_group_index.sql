-- rollup_hourly's index becomes (campaign, hour, grp), from (campaign, hour).
--
-- Why: the loader's merge (services/loader/src/compact.rs) now looks up
-- only the groups loads appended to since the last merge, by (campaign,
-- hour, grp), instead of reading every row of the touched hours: after one
-- object of a 5-million-event day, merging its 290 rows read the hour's
-- whole campaign rows for 1.4 s. Reports read by (campaign, hour) range,
-- which the new index's prefix serves as the old one did, so one index
-- replaces the other and a load still updates one index per row (8 bytes
-- more per entry).
--
-- On a large table, build the new index first with CREATE INDEX
-- CONCURRENTLY outside this migration (same name): this one then skips it.
CREATE INDEX IF NOT EXISTS rollup_hourly_campaign_hour_grp_idx ON rollup_hourly (campaign, hour, grp);
DROP INDEX IF EXISTS rollup_hourly_campaign_hour_idx;
