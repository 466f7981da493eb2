//! SQL over the rollup tables, generated from the metric registry
//! (`earshot_domain::metric`), for the loader, `earshot verify` and the API.
//!
//! `rollup_hourly` holds four counts per row of every dimension and event
//! kind; `rollup_daily` and `rollup_blocks` hold one column per counter of
//! the registry (migrations 4 and 5). Every statement that names those
//! columns is built here, so a counter added to the registry needs nothing
//! but its migration: [`schema_gaps`] says what the schema lacks.

use earshot_domain::metric::{counters, Hits, Metric, Registry};
use sqlx::PgPool;

/// The daily tables with a column per counter, and their key columns.
pub const DAILY_TABLES: [(&str, &[&str]); 2] = [
    ("rollup_daily", &["campaign", "day", "creative", "country"]),
    (
        "rollup_blocks",
        &["campaign", "span_days", "first_day", "creative", "country"],
    ),
];

/// The counts each `rollup_hourly` row holds, in its column order: every
/// counter of the registry is a sum of one of them over rows of its kind.
pub const HOURLY_HITS: [Hits; 4] = [Hits::All, Hits::Counted, Hits::Bot, Hits::Invalid];

/// Spans of `rollup_blocks`, in days (migration 5's CHECK); single days are
/// `rollup_daily` rows.
pub const BLOCK_SPANS: [i64; 7] = [2, 4, 8, 16, 32, 64, 128];

/// The first day of the `span`-day block holding `day`: blocks start on
/// days whose distance from 1970-01-01 is a multiple of their span, in
/// `rollup_blocks` and `reach_sketch_blocks` alike (the SQL that folds
/// them spells the same rule: `day - ((day - DATE '1970-01-01') % span)`).
pub fn block_start(day: time::Date, span: i64) -> time::Date {
    const EPOCH: time::Date = time::macros::date!(1970 - 01 - 01);
    day - time::Duration::days((day - EPOCH).whole_days().rem_euclid(span))
}

/// [`BLOCK_SPANS`] as a `VALUES` list of one column.
pub fn block_spans_sql() -> String {
    let rows: Vec<String> = BLOCK_SPANS.iter().map(|s| format!("({s})")).collect();
    format!("(VALUES {})", rows.join(", "))
}

/// The `rollup_hourly` column that holds `hits`.
pub const fn hourly_column(hits: Hits) -> &'static str {
    match hits {
        Hits::All => "raw_hits",
        Hits::Counted => "counted_hits",
        Hits::Bot => "bot_hits",
        Hits::Invalid => "invalid_hits",
    }
}

/// A counter summed over `rollup_hourly` rows (`None` for a metric that is
/// not a counter). Event kinds are constants of the domain, so the text
/// holds no input.
pub fn hourly_sum(m: &Metric) -> Option<String> {
    let (hits, kind) = m.counter()?;
    let column = hourly_column(hits);
    Some(match kind {
        None => format!("sum({column})"),
        Some(k) => format!("sum({column}) FILTER (WHERE event = '{}')", k.as_str()),
    })
}

/// The counters' columns in the daily tables, in registry order, each
/// passed through `each` (e.g. `|c| format!("sum({c})")`), joined by ", ".
pub fn daily_columns(registry: Registry, each: impl Fn(&str) -> String) -> String {
    counters(registry)
        .map(|(_, m)| each(m.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the migrated schema and a registry disagree, as `table.column`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchemaGaps {
    /// Counters of the registry that a daily table has no bigint column for:
    /// a migration has to add them.
    pub missing: Vec<String>,
    /// Columns of a daily table that are neither keys nor counters of the
    /// registry.
    pub unknown: Vec<String>,
}

impl SchemaGaps {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unknown.is_empty()
    }
}

/// Compares the daily tables' columns in the database with `registry`.
pub async fn schema_gaps(pool: &PgPool, registry: Registry) -> Result<SchemaGaps, sqlx::Error> {
    let mut gaps = SchemaGaps::default();
    for (table, keys) in DAILY_TABLES {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        for (_, m) in counters(registry) {
            if !columns.iter().any(|(c, t)| c == m.name && t == "bigint") {
                gaps.missing.push(format!("{table}.{}", m.name));
            }
        }
        for (c, _) in &columns {
            let known = keys.contains(&c.as_str()) || counters(registry).any(|(_, m)| m.name == c);
            if !known {
                gaps.unknown.push(format!("{table}.{c}"));
            }
        }
    }
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::metric::METRICS;

    #[test]
    fn hourly_sums_filter_by_the_counters_event_kind() {
        let sum = |name: &str| hourly_sum(METRICS.iter().find(|m| m.name == name).unwrap());
        assert_eq!(sum("raw_hits").as_deref(), Some("sum(raw_hits)"));
        assert_eq!(
            sum("first_quartiles").as_deref(),
            Some("sum(counted_hits) FILTER (WHERE event = 'firstQuartile')")
        );
        assert_eq!(
            sum("bot_clicks").as_deref(),
            Some("sum(bot_hits) FILTER (WHERE event = 'click')")
        );
        assert_eq!(sum("unique_listeners"), None);
    }
}
