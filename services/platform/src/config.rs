//! Layered configuration for the services: defaults < file < environment.

use secrecy::SecretString;
use serde::Deserialize;

/// Default API address: loopback, so nothing is exposed by accident. The
/// Helm chart sets 0.0.0.0:8080.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8080";
/// Default address of the loader's /healthz and /metrics.
pub const DEFAULT_LOADER_ADDR: &str = "127.0.0.1:9091";
/// Default loader source: the local edge's directory sink.
pub const DEFAULT_SOURCE: &str = "dir:./data/events";
/// Raw events are kept this many days (partitions older are dropped).
/// 400 covers the longest report range (400 days) the API accepts.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Connections per process. About twice the cores of a small PostgreSQL
/// server, the PostgreSQL wiki's pool-sizing rule (cores × 2 + spindles):
/// more connections than the server can run at once add queueing in its
/// scheduler, not throughput. On the 2-core benchmark host, 4 instead of 10
/// cut the uncached report's p99 from ~21 to ~14 ms at the same request
/// rate (docs/BENCHMARKS.md). The loader uses two per `load_concurrency`,
/// plus one.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 4;
/// Runs of objects the loader loads side by side, each object in its own
/// transaction. One run already overlaps one object's counting and commit
/// with the next one's COPYs, and writes what one object at a time writes.
/// One by default, because only then is the result independent of timing:
/// when the same counting key arrives in two objects, the hit that counts
/// is the one in the object loaded first, so with two runs side by side it
/// is the one whose transaction commits first. Totals are the same either
/// way; which hour, app or country the counted hit falls in can differ.
/// Backfills that want speed over that may raise it, with two more database
/// connections per run (docs/BENCHMARKS.md, "Loader").
pub const DEFAULT_LOAD_CONCURRENCY: u32 = 1;
/// The loader's stall limit: `earshot_loader::watchdog::DEFAULT_STALL_LIMIT`
/// says why ten minutes (this crate sits below the loader, so the number is
/// repeated here; a loader test holds the two equal).
pub const DEFAULT_LOADER_STALL_SECONDS: u64 = 600;
/// How long one statement of the API may run before PostgreSQL cancels it
/// and the request answers 503 with `Retry-After`. A report reads a
/// campaign's rollups in milliseconds (docs/BENCHMARKS.md: p99 ~14 ms
/// uncached); 10 s is far past any honest one, and well inside the 60 s an
/// ingress (nginx's `proxy_read_timeout`) waits, so a query made slow by
/// abuse or a lock gives its connection back instead of holding one of
/// the pool's few while the client has long given up.
pub const DEFAULT_API_STATEMENT_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub redis_url: Option<SecretString>,
    pub api_addr: String,
    pub loader_addr: String,
    pub source: String,
    pub retention_days: u32,
    /// `id:secret,id2:secret2`, as for the edge.
    pub signing_keys: SecretString,
    /// Base URL of the pixel for generated tracking URLs.
    pub pixel_base_url: String,
    /// Requests per minute per API key.
    pub rate_limit_per_minute: u32,
    /// Seconds a cached report lives (it is also invalidated by new loads).
    pub cache_ttl_seconds: u64,
    /// Loader: seconds between polls of dir/s3 sources when idle.
    pub poll_interval_seconds: u64,
    /// Loader: objects loaded at once (each uses one database connection).
    pub load_concurrency: u32,
    /// Loader: seconds one step (a poll, an object's download, half of its
    /// transaction, a merge) may run before the loader exits as stalled.
    pub loader_stall_seconds: u64,
    /// API: milliseconds one statement may run (PostgreSQL's
    /// `statement_timeout` on the API's sessions); 0 means no limit.
    pub api_statement_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: SecretString::from(DEFAULT_DATABASE_URL),
            database_max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            redis_url: None,
            api_addr: DEFAULT_API_ADDR.into(),
            loader_addr: DEFAULT_LOADER_ADDR.into(),
            source: DEFAULT_SOURCE.into(),
            retention_days: DEFAULT_RETENTION_DAYS,
            signing_keys: SecretString::from(""),
            pixel_base_url: "http://127.0.0.1:8787/v1/t".into(),
            rate_limit_per_minute: 600,
            cache_ttl_seconds: 300,
            poll_interval_seconds: 2,
            load_concurrency: DEFAULT_LOAD_CONCURRENCY,
            loader_stall_seconds: DEFAULT_LOADER_STALL_SECONDS,
            api_statement_timeout_ms: DEFAULT_API_STATEMENT_TIMEOUT_MS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Defaults, then the TOML file named by `EARSHOT_CONFIG` (if any), then
    /// `EARSHOT_<FIELD>` variables (e.g. `EARSHOT_API_ADDR`), then
    /// `DATABASE_URL` and `REDIS_URL`.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(|k| std::env::var(k).ok())
    }

    pub fn load_from(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(path) = get("EARSHOT_CONFIG") {
            b = b.add_source(config::File::with_name(&path).format(config::FileFormat::Toml));
        }
        let mut env = std::collections::HashMap::new();
        for field in [
            "database_url",
            "database_max_connections",
            "redis_url",
            "api_addr",
            "loader_addr",
            "source",
            "retention_days",
            "signing_keys",
            "pixel_base_url",
            "rate_limit_per_minute",
            "cache_ttl_seconds",
            "poll_interval_seconds",
            "load_concurrency",
            "loader_stall_seconds",
            "api_statement_timeout_ms",
        ] {
            if let Some(v) =
                get(&format!("EARSHOT_{}", field.to_ascii_uppercase())).filter(|v| !v.is_empty())
            {
                env.insert(field.to_string(), v);
            }
        }
        if let Some(v) = get("DATABASE_URL").filter(|v| !v.is_empty()) {
            env.insert("database_url".into(), v);
        }
        if let Some(v) = get("REDIS_URL").filter(|v| !v.is_empty()) {
            env.insert("redis_url".into(), v);
        }
        for (k, v) in env {
            b = b
                .set_override(k, v)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let merged = b.build().map_err(|e| ConfigError(e.to_string()))?;
        // Start from the defaults so a file or environment need only name
        // what it changes.
        let mut value = config::Config::try_from(&Settings::default())
            .map_err(|e| ConfigError(e.to_string()))?;
        value = config::Config::builder()
            .add_source(value)
            .add_source(merged)
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        value
            .try_deserialize()
            .map_err(|e| ConfigError(e.to_string()))
    }
}

impl serde::Serialize for Settings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use secrecy::ExposeSecret;
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Settings", 15)?;
        st.serialize_field("database_url", self.database_url.expose_secret())?;
        st.serialize_field("database_max_connections", &self.database_max_connections)?;
        st.serialize_field(
            "redis_url",
            &self
                .redis_url
                .as_ref()
                .map(|r| r.expose_secret().to_owned()),
        )?;
        st.serialize_field("api_addr", &self.api_addr)?;
        st.serialize_field("loader_addr", &self.loader_addr)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("retention_days", &self.retention_days)?;
        st.serialize_field("signing_keys", self.signing_keys.expose_secret())?;
        st.serialize_field("pixel_base_url", &self.pixel_base_url)?;
        st.serialize_field("rate_limit_per_minute", &self.rate_limit_per_minute)?;
        st.serialize_field("cache_ttl_seconds", &self.cache_ttl_seconds)?;
        st.serialize_field("poll_interval_seconds", &self.poll_interval_seconds)?;
        st.serialize_field("load_concurrency", &self.load_concurrency)?;
        st.serialize_field("loader_stall_seconds", &self.loader_stall_seconds)?;
        st.serialize_field("api_statement_timeout_ms", &self.api_statement_timeout_ms)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_from(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let d = load(&[]).unwrap();
        assert_eq!(d.api_addr, DEFAULT_API_ADDR);
        assert!(d.redis_url.is_none());
        let dir = std::env::temp_dir().join(format!("earshot-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("earshot.toml");
        std::fs::write(
            &file,
            "api_addr = \"127.0.0.1:9000\"\nretention_days = 30\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = load(&[
            ("EARSHOT_CONFIG", f),
            ("EARSHOT_RETENTION_DAYS", "60"),
            ("REDIS_URL", "redis://x"),
        ])
        .unwrap();
        assert_eq!(s.api_addr, "127.0.0.1:9000");
        assert_eq!(s.retention_days, 60);
        assert_eq!(s.redis_url.unwrap().expose_secret(), "redis://x");
        assert_eq!(s.loader_addr, DEFAULT_LOADER_ADDR);
    }

    #[test]
    fn bad_values_say_which_field() {
        let e = load(&[("EARSHOT_RETENTION_DAYS", "forever")]).unwrap_err();
        assert!(e.to_string().contains("retention_days"), "{e}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = load(&[("DATABASE_URL", "postgres://u:hunter2@db/x")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
