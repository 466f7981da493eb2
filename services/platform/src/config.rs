//! Layered configuration for the services: defaults < TOML file
//! (`EARSHOT_CONFIG`) < environment. Each part of a service reads a section
//! of its own (`[database]` here, `[api]` and `[loader]` in their crates);
//! `EARSHOT_…` variables keep their flat names, each mapped to one field.

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Connections per process. About twice the cores of a small PostgreSQL
/// server, the PostgreSQL wiki's pool-sizing rule (cores × 2 + spindles):
/// more connections than the server can run at once add queueing in its
/// scheduler, not throughput: 4 instead of 10 cut the uncached report's
/// p99 from ~21 to ~14 ms at the same request rate on a 2-core host
/// (docs/BENCHMARKS.md, "Reporting API"). The loader uses two per run of
/// loads, plus one.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 4;

/// The database and the pool (`[database]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_DATABASE_URL),
            max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
        }
    }
}

impl DatabaseSettings {
    /// Its variables; `DATABASE_URL` wins over `EARSHOT_DATABASE_URL`.
    pub const ENV: &[EnvVar] = &[
        ("EARSHOT_DATABASE_URL", "url"),
        ("DATABASE_URL", "url"),
        ("EARSHOT_DATABASE_MAX_CONNECTIONS", "max_connections"),
    ];
}

/// An environment variable and the field of its section it sets.
pub type EnvVar = (&'static str, &'static str);

/// A section of the settings: its name in the file and its variables.
pub type Section = (&'static str, &'static [EnvVar]);

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(detail: impl Into<String>) -> Self {
        Self(detail.into())
    }
}

/// Reads `T` (whose fields are `sections`, each defaulting where neither
/// the file nor the environment names it): the TOML file named by
/// `EARSHOT_CONFIG`, then each section's variables, where a later variable
/// of the same field wins. `get` reads a variable (the process environment
/// in [`load`]).
pub fn load_from<T: DeserializeOwned>(
    get: impl Fn(&str) -> Option<String>,
    sections: &[Section],
) -> Result<T, ConfigError> {
    let mut b = config::Config::builder();
    if let Some(path) = get("EARSHOT_CONFIG") {
        b = b.add_source(config::File::with_name(&path).format(config::FileFormat::Toml));
    }
    for (section, vars) in sections {
        for (var, field) in *vars {
            if let Some(v) = get(var).filter(|v| !v.is_empty()) {
                b = b
                    .set_override(format!("{section}.{field}"), v)
                    .map_err(|e| ConfigError(e.to_string()))?;
            }
        }
    }
    b.build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError(e.to_string()))
}

/// [`load_from`] the process environment.
pub fn load<T: DeserializeOwned>(sections: &[Section]) -> Result<T, ConfigError> {
    load_from(|k| std::env::var(k).ok(), sections)
}
