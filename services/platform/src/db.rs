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
    connect_with(settings, connect_options(settings)?).await
}

/// The API's pool: as [`connect`], with generic plans for its prepared
/// statements. The API runs the same few report statements over and over
/// with different parameters; PostgreSQL's default (`auto`) keeps re-planning
/// the report statement on every call (its day-block arrays make the generic
/// plan look costlier than it is), which was ~20% of its database time.
/// Not for the loader: a generic plan over the partitioned `events` table
/// locks every partition before pruning.
pub async fn connect_api(settings: &Settings) -> anyhow::Result<PgPool> {
    let opts = connect_options(settings)?.options([("plan_cache_mode", "force_generic_plan")]);
    connect_with(settings, opts).await
}

fn connect_options(settings: &Settings) -> anyhow::Result<PgConnectOptions> {
    let opts: PgConnectOptions = settings
        .database_url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    Ok(opts.application_name("earshot"))
}

async fn connect_with(settings: &Settings, opts: PgConnectOptions) -> anyhow::Result<PgPool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both pools negotiate TLS whenever the server offers it (sqlx's
    /// default, `sslmode=prefer`, which `connect_options` keeps), so the
    /// suite runs the TLS path that production takes, where sqlx 0.8 could
    /// hang a COPY for good (vendor/README.md).
    #[tokio::test]
    async fn connections_use_tls_when_the_server_offers_it() {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| crate::config::DEFAULT_DATABASE_URL.to_owned());
        let settings = Settings::load_from(|k| (k == "DATABASE_URL").then(|| url.clone())).unwrap();
        for pool in [
            connect(&settings).await.unwrap(),
            connect_api(&settings).await.unwrap(),
        ] {
            let offered: String = sqlx::query_scalar("SHOW ssl")
                .fetch_one(&pool)
                .await
                .unwrap();
            let used: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(used, offered == "on", "server ssl = {offered}");
        }
    }
}
