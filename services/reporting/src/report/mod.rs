//! Campaign reports over the rollups:
//!
//! - `spec`: the query parameters, parsed into a normalized spec (every
//!   error names its parameter), page tokens and the cache key;
//! - `query`: the SQL built from the spec and the metric registry, run with
//!   keyset pagination;
//! - `blocks`: which day blocks a total over whole days reads;
//! - `frequency`: the frequency distribution, from the frequency sample;
//! - `reach`: reach over the range, from the merged reach sketches;
//! - `metrics`: a row's numbers (the registry's values) as JSON and their
//!   sums;
//! - `csv`: the same rows as CSV.

pub mod blocks;
pub mod csv;
pub mod frequency;
pub mod metrics;
pub mod query;
pub mod reach;
pub mod sketch_cache;
pub mod spec;

pub use blocks::BlocksMark;
pub use csv::to_csv;
pub use metrics::Metrics;
pub use query::{run, Report, ReportRow};
pub use sketch_cache::SketchCache;
pub use spec::{format_instant, Dim, Format, Granularity, ReportParams, ReportSpec};
