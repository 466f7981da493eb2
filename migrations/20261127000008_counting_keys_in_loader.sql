-- counted_keys and daily_listeners become append-only logs: the loader
-- decides which keys are new from the day's keys it holds in memory
-- (services/loader/src/keys.rs), and appends only those.
--
-- Why: `INSERT … ON CONFLICT DO NOTHING` through a primary key on random
-- 128-bit hashes is one B-tree insertion per key, and those two statements
-- were 40% of a load's database time (docs/BENCHMARKS.md, "Loader"). An
-- unindexed append costs a seventh of it.
--
-- What keeps every key once: every transaction that writes keys first bumps
-- counting_state's one row, so key writers take turns, each until it
-- commits, and its keys carry that epoch. A loader whose last commit did not
-- leave the epoch where it finds it reads the keys appended since (the BRIN
-- index: keys are appended in epoch order, so the new ones sit at the end of
-- each day's table). `earshot verify` checks no key is there twice.
-- Anything else that writes these tables must bump the epoch too.
ALTER TABLE counted_keys DROP CONSTRAINT counted_keys_pkey;
ALTER TABLE daily_listeners DROP CONSTRAINT daily_listeners_pkey;
ALTER TABLE counted_keys ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE daily_listeners ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
CREATE INDEX counted_keys_epoch_idx ON counted_keys USING brin (epoch);
CREATE INDEX daily_listeners_epoch_idx ON daily_listeners USING brin (epoch);

CREATE TABLE counting_state (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch  bigint NOT NULL
);
INSERT INTO counting_state (one, epoch) VALUES (true, 0);
ALTER TABLE counting_state SET (fillfactor = 50);
