//! PostgreSQL: the pool and the migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool};

use crate::DatabaseSettings;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long start-up waits for PostgreSQL (a pod may start before it).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// A pool for the database of `settings`, waiting up to
/// [`CONNECT_PATIENCE`] for it to answer.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    connect_with(settings, connect_options(settings)?, PgPoolOptions::new()).await
}

/// The API's pool: as [`connect`], with generic plans for its prepared
/// statements. The API runs the same few report statements over and over
/// with different parameters; PostgreSQL's default (`auto`) keeps re-planning
/// the report statement on every call (its day-block arrays make the generic
/// plan look costlier than it is), which was ~20% of its database time.
/// Not for the loader: a generic plan over the partitioned `events` table
/// locks every partition before pruning.
///
/// Every statement is also bounded by `statement_timeout`
/// (`EARSHOT_API_STATEMENT_TIMEOUT_MS`; PostgreSQL's `statement_timeout`,
/// waiting on locks included; zero: none): a report made slow on purpose
/// or by a lock is cancelled and answers 503, instead of holding one of
/// the pool's connections for as long as it runs.
pub async fn connect_api(
    settings: &DatabaseSettings,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let opts = connect_options(settings)?.options([
        ("plan_cache_mode", "force_generic_plan".to_owned()),
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        ),
    ]);
    connect_with(settings, opts, PgPoolOptions::new()).await
}

/// How long PostgreSQL keeps a loader session that is idle inside a
/// transaction, as a multiple of the stall limit. A running loader never
/// idles in a transaction longer than one step, and its watchdog exits it
/// when a step passes the stall limit (`EARSHOT_LOADER_STALL_SECONDS`); a
/// session idle for twice that belongs to a loader that is frozen (a
/// stopped process, a paused node) yet still answers TCP, and would
/// otherwise hold its locks (the counting keys it inserted, which another
/// loader inserting the same key waits on; the blocks' mark, which the
/// day's fold waits on) until someone noticed.
pub const LOADER_IDLE_IN_TRANSACTION_STALL_LIMITS: u64 = 2;

/// TCP keepalives PostgreSQL sends on loader sessions: first probe after a
/// minute of silence, then every 10 s, the peer given up after 6 missed.
/// A loader whose node died without closing its sockets is dropped within
/// about two minutes, instead of Linux's default of over two hours, and
/// its transaction rolled back (the same path as a crash).
pub const LOADER_TCP_KEEPALIVES: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "60"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "6"),
];

/// How often PostgreSQL checks, while a loader's statement runs, that the
/// loader is still connected (`client_connection_check_interval`,
/// PostgreSQL 14+). Without it a killed loader's backend runs its statement
/// to the end (a key insert or a merge can take seconds on a large day)
/// before it notices the closed socket, holding the counting keys it
/// inserted, which the restarted loader inserting the same object's keys
/// waits on: in a crash loop, every life would spend part of its window
/// waiting for its predecessor's ghost.
pub const LOADER_CLIENT_CHECK: &str = "250ms";

/// The loader's pool: as [`connect`], with the session limits above, so a
/// loader that stops answering cannot hold its locks for good.
/// `stall_limit` is the loader's (`EARSHOT_LOADER_STALL_SECONDS`).
///
/// A connection back in the pool gives up the buffers a load grew: a
/// connection keeps its read and write buffers at the largest message it
/// has carried, and a load's reach megabytes (a piece of an object's
/// `events` COPY, a round of day sketches read and written back: up to 128
/// of 16 KiB). Kept, every pooled connection held that much for good
/// (docs/BENCHMARKS.md, "Scale envelope"); dropped, the next load
/// allocates them again, which costs nothing next to its statements.
pub async fn connect_loader(
    settings: &DatabaseSettings,
    stall_limit: Duration,
) -> anyhow::Result<PgPool> {
    let idle = stall_limit
        .as_secs()
        .saturating_mul(LOADER_IDLE_IN_TRANSACTION_STALL_LIMITS);
    let opts = connect_options(settings)?
        .options([
            ("idle_in_transaction_session_timeout", format!("{idle}s")),
            (
                "client_connection_check_interval",
                LOADER_CLIENT_CHECK.to_owned(),
            ),
        ])
        .options(LOADER_TCP_KEEPALIVES);
    let pool = PgPoolOptions::new().after_release(|conn, _| {
        Box::pin(async move {
            conn.shrink_buffers();
            Ok(true)
        })
    });
    connect_with(settings, opts, pool).await
}

fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let opts: PgConnectOptions = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    Ok(opts.application_name("earshot"))
}

async fn connect_with(
    settings: &DatabaseSettings,
    opts: PgConnectOptions,
    pool: PgPoolOptions,
) -> anyhow::Result<PgPool> {
    let started = std::time::Instant::now();
    loop {
        let attempt = pool
            .clone()
            .max_connections(settings.max_connections)
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
    /// Settings for this machine's `DATABASE_URL` (or the default).
    fn test_settings() -> DatabaseSettings {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| crate::config::DEFAULT_DATABASE_URL.to_owned());
        DatabaseSettings {
            url: url.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn connections_use_tls_when_the_server_offers_it() {
        let settings = test_settings();
        for pool in [
            connect(&settings).await.unwrap(),
            connect_api(&settings, Duration::from_secs(10))
                .await
                .unwrap(),
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

    #[tokio::test]
    async fn loader_sessions_carry_their_limits_and_other_sessions_do_not() {
        let settings = test_settings();
        let show = |pool: PgPool| async move {
            let mut v = Vec::new();
            for name in [
                "idle_in_transaction_session_timeout",
                "client_connection_check_interval",
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
            ] {
                let s: String = sqlx::query_scalar("SELECT current_setting($1)")
                    .bind(name)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                v.push(s);
            }
            v
        };
        let pool = connect_loader(&settings, Duration::from_secs(600))
            .await
            .unwrap();
        // TCP keepalives only apply to TCP sessions; over a Unix socket
        // PostgreSQL reports 0 whatever was asked.
        let tcp: bool = sqlx::query_scalar("SELECT inet_client_addr() IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
        let loader = show(pool).await;
        assert_eq!(loader[..2], ["20min", LOADER_CLIENT_CHECK]);
        if tcp {
            assert_eq!(loader[2..], ["60", "10", "6"]);
        }
        let api = show(
            connect_api(&settings, Duration::from_secs(10))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(api[..2], ["0", "0"]);
    }

    /// Starts a 60 s statement on a connection of `pool`, drops the
    /// connection mid-statement as a killed process would, and says whether
    /// its backend still runs 2 s later (ending it if so).
    async fn backend_outlives_its_client(pool: PgPool, watcher: &PgPool) -> bool {
        let mut conn = pool.acquire().await.unwrap().detach();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let sleep = sqlx::query("SELECT pg_sleep(60)").execute(&mut conn);
        assert!(tokio::time::timeout(Duration::from_millis(300), sleep)
            .await
            .is_err());
        drop(conn);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let alive: bool = sqlx::query_scalar(
            "SELECT pg_terminate_backend($1) FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_optional(watcher)
        .await
        .unwrap()
        .unwrap_or(false);
        alive
    }

    #[tokio::test]
    async fn a_killed_loaders_statement_ends_soon_after_its_connection_closes() {
        let settings = test_settings();
        let watcher = connect(&settings).await.unwrap();
        let loader = connect_loader(&settings, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(!backend_outlives_its_client(loader, &watcher).await);
        // Without the check, PostgreSQL would run the statement to its end.
        let plain = connect(&settings).await.unwrap();
        assert!(backend_outlives_its_client(plain, &watcher).await);
    }

    #[tokio::test]
    async fn api_sessions_carry_the_statement_timeout_and_loader_sessions_do_not() {
        let timeout = |pool: PgPool| async move {
            sqlx::query_scalar::<_, String>("SELECT current_setting('statement_timeout')")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let settings = test_settings();
        let api = |ms| connect_api(&settings, Duration::from_millis(ms));
        assert_eq!(timeout(api(10_000).await.unwrap()).await, "10s");
        assert_eq!(timeout(api(250).await.unwrap()).await, "250ms");
        let loader = connect_loader(&settings, Duration::from_secs(600));
        assert_eq!(timeout(loader.await.unwrap()).await, "0");
    }

    #[tokio::test]
    async fn postgres_ends_a_loader_session_idle_in_a_transaction_past_its_limit() {
        // A stall limit of 1 s: PostgreSQL ends the session after 2 s idle
        // in a transaction, rolling it back.
        let pool = connect_loader(&test_settings(), Duration::from_secs(1))
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let err = sqlx::query("SELECT 1")
            .execute(&mut *tx)
            .await
            .expect_err("the session was ended");
        assert!(
            err.to_string().contains("idle-in-transaction timeout")
                || matches!(err, sqlx::Error::Io(_)),
            "{err}"
        );
        let still_there: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!still_there, "backend {pid} still runs");
    }
}
