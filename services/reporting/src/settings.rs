//! The API's settings (`[api]`, `EARSHOT_…` variables), checked where the
//! API is built (`Application::build`).

use earshot_platform::config::EnvVar;
use secrecy::SecretString;
use serde::Deserialize;

/// Default API address: loopback, so nothing is exposed by accident. The
/// Helm chart sets 0.0.0.0:8080.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8080";
/// Requests per minute per API key.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
/// Seconds a cached report is kept. A load makes a new cache key for the
/// campaigns it touched, so this bounds memory and Redis, not staleness.
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 300;
/// How long one statement of the API may run before PostgreSQL cancels it
/// and the request answers 503 with `Retry-After`. A report reads a
/// campaign's rollups in milliseconds (docs/BENCHMARKS.md: p99 ~7 ms
/// uncached); 10 s is far past any honest one, and well inside the 60 s an
/// ingress (nginx's `proxy_read_timeout`) waits, so a query made slow by
/// abuse or a lock gives its connection back instead of holding one of
/// the pool's few while the client has long given up.
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// Where the local edge serves the pixel (`scripts/dev`).
pub const DEFAULT_PIXEL_BASE_URL: &str = "http://127.0.0.1:8787/v1/t";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Where the API listens.
    pub addr: String,
    /// Redis for the report cache and the rate limits; none: neither is
    /// shared between replicas.
    pub redis_url: Option<SecretString>,
    /// `id:secret,id2:secret2`, as for the edge, to sign tracking URLs.
    pub signing_keys: SecretString,
    /// Base URL of the pixel for generated tracking URLs.
    pub pixel_base_url: String,
    /// Requests per minute per API key.
    pub rate_limit_per_minute: u32,
    /// Seconds a cached report is kept; 0 turns the cache off.
    pub cache_ttl_seconds: u64,
    /// Milliseconds one statement may run (PostgreSQL's `statement_timeout`
    /// on the API's sessions); 0 means no limit.
    pub statement_timeout_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            addr: DEFAULT_API_ADDR.into(),
            redis_url: None,
            signing_keys: SecretString::from(""),
            pixel_base_url: DEFAULT_PIXEL_BASE_URL.into(),
            rate_limit_per_minute: DEFAULT_RATE_LIMIT_PER_MINUTE,
            cache_ttl_seconds: DEFAULT_CACHE_TTL_SECONDS,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
        }
    }
}

impl ApiSettings {
    /// Its variables; `REDIS_URL` wins over `EARSHOT_REDIS_URL`.
    pub const ENV: &[EnvVar] = &[
        ("EARSHOT_API_ADDR", "addr"),
        ("EARSHOT_REDIS_URL", "redis_url"),
        ("REDIS_URL", "redis_url"),
        ("EARSHOT_SIGNING_KEYS", "signing_keys"),
        ("EARSHOT_PIXEL_BASE_URL", "pixel_base_url"),
        ("EARSHOT_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute"),
        ("EARSHOT_CACHE_TTL_SECONDS", "cache_ttl_seconds"),
        ("EARSHOT_API_STATEMENT_TIMEOUT_MS", "statement_timeout_ms"),
    ];

    /// The limit on one statement of the API's sessions.
    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.statement_timeout_ms)
    }
}
