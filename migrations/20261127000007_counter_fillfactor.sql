-- Room on each page for the next version of a row, in the tables every load
-- updates in place: the daily rollups and their blocks, daily uniques and
-- campaign data versions. An object adds to the same few hundred rows as
-- the one before it; with full pages (fillfactor 100) each update writes
-- the new version to another page plus a new entry in the primary key, so
-- during a backfill the keys fill with dead versions that every upsert has
-- to step over until autovacuum runs (rollup_blocks: 24 MB for 3,381 rows
-- after the loader bench). With free room the update stays on its page
-- (a HOT update: no new index entry) and the page's old versions are
-- pruned as it goes. None of these updates change a key column, which HOT
-- requires.
ALTER TABLE rollup_daily SET (fillfactor = 50);
ALTER TABLE rollup_blocks SET (fillfactor = 50);
ALTER TABLE daily_uniques SET (fillfactor = 50);
ALTER TABLE campaign_data_versions SET (fillfactor = 50);
