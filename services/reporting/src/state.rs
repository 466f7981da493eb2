//! What every request handler shares.

use earshot_domain::SigningKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::redis_store::RedisStore;

pub struct AppState {
    pub pool: PgPool,
    pub redis: RedisStore,
    pub rate_limit_per_minute: u32,
    pub cache_ttl_seconds: u64,
    pub signing_keys: SigningKeys,
    pub pixel_base_url: String,
    pub metrics: PrometheusHandle,
    /// Prefix of cache keys: the database's name, so two deployments (or
    /// test databases) sharing a Redis never read each other's reports.
    pub cache_namespace: String,
    /// Keys, owners, versions and reports in memory, kept exact by
    /// PostgreSQL notifications.
    pub live: std::sync::Arc<crate::live::Live>,
    /// The last day the day blocks hold, as last read.
    pub blocks_mark: crate::report::BlocksMark,
}
