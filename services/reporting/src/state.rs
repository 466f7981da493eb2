//! What every request handler shares.

use earshot_domain::SigningKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::live::Live;
use crate::redis_store::RedisStore;
use crate::report::{BlocksMark, SketchCache};
use crate::report_cache::ReportCache;

pub struct AppState {
    pub pool: PgPool,
    /// For `/readyz`; the report cache and the rate limits hold their own
    /// handle.
    pub redis: RedisStore,
    pub signing_keys: SigningKeys,
    pub pixel_base_url: String,
    pub metrics: PrometheusHandle,
    /// Campaign owners and data versions in memory, kept exact by
    /// PostgreSQL notifications.
    pub live: std::sync::Arc<Live>,
    /// Rendered reports, and the headers of every report response.
    pub reports: ReportCache,
    /// The last day the day blocks hold, as last read.
    pub blocks_mark: BlocksMark,
    /// Decoded reach sketches, revalidated at every report.
    pub reach_sketches: SketchCache,
}
