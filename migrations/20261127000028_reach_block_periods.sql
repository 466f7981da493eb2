-- Each reach block records the listener-id periods of its days
-- (earshot_platform::id_periods): the days whose listeners had daily ids,
-- and the months whose listeners had monthly ids. A report in total then
-- knows whether its reach spans more than one period (an upper bound) from
-- the blocks it merges, and reads only the single days outside them: a
-- 90-day report by creative read 540 day rows for their periods alone,
-- as costly as the rest of the report (docs/BENCHMARKS.md, "Reporting
-- API").
--
-- The loader writes both columns wherever it writes a block's sketch (the
-- fold, a load of a folded day), and `earshot verify` checks them against
-- the days. Blocks already there get them from their days now. A loader
-- of an earlier version still running during the rollout writes blocks
-- without them; `earshot verify` names such blocks and `earshot
-- rebuild-blocks` rebuilds them (docs/OPERATIONS.md, "Upgrades and
-- rollback").
ALTER TABLE reach_sketch_blocks
    ADD COLUMN daily_id_days date[] NOT NULL DEFAULT '{}',
    ADD COLUMN monthly_id_months date[] NOT NULL DEFAULT '{}';

UPDATE reach_sketch_blocks b
SET daily_id_days = p.days, monthly_id_months = p.months
FROM (
    SELECT b2.campaign, b2.dim, b2.value, b2.span_days, b2.first_day,
           coalesce(array_agg(r.day ORDER BY r.day) FILTER (WHERE r.day_ids), '{}') AS days,
           coalesce(array_agg(DISTINCT date_trunc('month', r.day)::date) FILTER (WHERE r.month_ids),
                    '{}') AS months
    FROM reach_sketch_blocks b2
    JOIN reach_sketches r ON r.campaign = b2.campaign AND r.dim = b2.dim AND r.value = b2.value
        AND r.day >= b2.first_day AND r.day < b2.first_day + b2.span_days
        AND r.day <= (SELECT reach_blocks_through FROM counting_state)
    GROUP BY 1, 2, 3, 4, 5
) p
WHERE (b.campaign, b.dim, b.value, b.span_days, b.first_day)
    = (p.campaign, p.dim, p.value, p.span_days, p.first_day);

-- A report looks its blocks up by (span, first day) for the campaign's
-- dimensions, whatever their values: the primary key, which leads with
-- the value, made that a scan of every value's blocks per block (for the
-- API benchmark's 90-day report by country, 0.8 ms of EXPLAIN ANALYZE
-- against 0.2 ms with this index).
CREATE INDEX reach_sketch_blocks_by_part ON reach_sketch_blocks (campaign, span_days, first_day, dim);
