-- Reach over long ranges: the reach sketches of aligned blocks of 2 to 128
-- days (earshot_platform::rollup::BLOCK_SPANS, aligned as rollup_blocks),
-- each the union of its days' `reach_sketches`, so a 90-day report merges
-- 9 sketches per scope instead of 90 (docs/COUNTING.md, "Reach and
-- frequency"). HyperLogLog unions are exact on the registers: a block's
-- sketch is the same bytes as merging its days.
--
-- The blocks hold the days up to counting_state.reach_blocks_through. The
-- loader moves it with the blocks' mark (services/loader/src/daily.rs,
-- under the same row lock), and a load of a day already folded adds to
-- that day's blocks itself, as it does to rollup_blocks. NULL until the
-- loader has folded the sketches a database already held (this migration
-- on a database with reach data): it does so at its next upkeep, and the
-- API reads single days until then.
CREATE TABLE reach_sketch_blocks (
    campaign  text NOT NULL,
    dim       text NOT NULL,
    value     text NOT NULL,
    span_days int NOT NULL,
    first_day date NOT NULL,
    sketch    bytea NOT NULL,
    PRIMARY KEY (campaign, dim, value, span_days, first_day)
);

ALTER TABLE counting_state ADD COLUMN reach_blocks_through date;
UPDATE counting_state SET reach_blocks_through = blocks_through
WHERE NOT EXISTS (SELECT 1 FROM reach_sketches r WHERE r.day <= counting_state.blocks_through);
