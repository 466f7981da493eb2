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

/// Who connects to the database, with the rights of its part
/// (`roles.rs`, docs/OPERATIONS.md "Database roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRole {
    /// Owns the schema: runs the migrations and grants the others theirs.
    Owner,
    /// Writes events and rollups.
    Loader,
    /// Reads the rollups; manages the catalog and the API keys.
    Api,
}

/// The database and the pool (`[database]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Every part's URL unless its own is set: one role for everything,
    /// as in local development.
    pub url: SecretString,
    /// The schema owner's, for `earshot migrate` (falls back to `url`).
    pub migrate_url: Option<SecretString>,
    /// The loader's role, for `earshot load` (falls back to `url`).
    pub loader_url: Option<SecretString>,
    /// The API's role, for `earshot serve` and `earshot admin` (falls
    /// back to `url`).
    pub api_url: Option<SecretString>,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_DATABASE_URL),
            migrate_url: None,
            loader_url: None,
            api_url: None,
            max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
        }
    }
}

impl DatabaseSettings {
    /// Its variables; `DATABASE_URL` wins over `EARSHOT_DATABASE_URL`.
    pub const ENV: &[EnvVar] = &[
        ("EARSHOT_DATABASE_URL", "url"),
        ("DATABASE_URL", "url"),
        ("EARSHOT_MIGRATE_DATABASE_URL", "migrate_url"),
        ("EARSHOT_LOADER_DATABASE_URL", "loader_url"),
        ("EARSHOT_API_DATABASE_URL", "api_url"),
        ("EARSHOT_DATABASE_MAX_CONNECTIONS", "max_connections"),
    ];

    /// The URL `role` connects with: its own, else `url`.
    pub fn url_for(&self, role: DbRole) -> &SecretString {
        let own = match role {
            DbRole::Owner => &self.migrate_url,
            DbRole::Loader => &self.loader_url,
            DbRole::Api => &self.api_url,
        };
        own.as_ref().unwrap_or(&self.url)
    }

    /// These settings as `role` connects: its URL as `url`.
    pub fn as_role(&self, role: DbRole) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url_for(role).clone(),
            ..self.clone()
        }
    }
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
