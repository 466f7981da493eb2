-- Reach sketches are compressed with lz4 instead of PostgreSQL's default,
-- pglz. Every load rewrites the day sketches it adds listeners to (~800
-- rows at 5 million events a day, ~1,150 in the loader benchmark's day), a
-- dense one 16 KiB of registers, and pglz spent most of that statement's
-- time: at 5 million events loaded that day, 500–550 ms per load with
-- pglz, 65–70 ms with lz4, for the same rows (PostgreSQL's statement log,
-- docs/BENCHMARKS.md, "Scale envelope"). Reading them back (the load's
-- locked rows, the API's reach) decompresses faster too.
--
-- Only values written from now on are lz4; the rest stay pglz until their
-- next rewrite, and both read alike. The change is to the columns' setting
-- only: no rewrite, a brief lock. A server without lz4 (PostgreSQL 13, or
-- one built without it) keeps pglz and says so; nothing else depends on it.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE reach_sketches ALTER COLUMN sketch SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE reach_sketch_blocks ALTER COLUMN sketch SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 is not available on this server (%): reach sketches stay compressed with pglz, and loads rewrite them several times slower (docs/OPERATIONS.md, "Scale")', SQLERRM;
END
$$;
