//! PostgreSQL: the pool and the migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::Settings;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long start-up waits for PostgreSQL (a pod may start before it).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// A pool for `settings.database_url`, waiting up to [`CONNECT_PATIENCE`]
/// for the database to answer.
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = settings
        .database_url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    let opts = opts.application_name("earshot");
    let started = std::time::Instant::now();
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(settings.database_max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if started.elapsed() < CONNECT_PATIENCE => {
                tracing::warn!(error = %e, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot connect to PostgreSQL (DATABASE_URL): {e}"
                ))
            }
        }
    }
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))
}
