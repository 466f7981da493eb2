//! Test support: a fresh, migrated database per test, on the server that
//! `DATABASE_URL` names (default: local PostgreSQL), dropped afterwards.

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool};

use crate::config::DEFAULT_DATABASE_URL;

pub struct TestDb {
    pub pool: PgPool,
    /// A URL for this database, for child processes (`DATABASE_URL`).
    pub url: String,
    pub name: String,
    admin: PgConnectOptions,
}

fn base_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

/// `base` with its database replaced by `name` (query string kept).
fn with_database(base: &str, name: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, format!("?{q}")),
        None => (base, String::new()),
    };
    let authority = main.find("://").map_or(0, |i| i + 3);
    match main[authority..].find('/') {
        Some(j) => format!("{}/{name}{query}", &main[..authority + j]),
        None => format!("{main}/{name}{query}"),
    }
}

impl TestDb {
    pub async fn new() -> Self {
        let base = base_url();
        let admin: PgConnectOptions = base.parse().expect("DATABASE_URL parses");
        let name = format!("earshot_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin
            .connect()
            .await
            .expect("connect to PostgreSQL (DATABASE_URL)");
        drop_stale(&mut conn).await;
        // `name` is made here from a UUID's hex digits: nothing to inject.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let opts = admin.clone().database(&name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts.clone().application_name("earshot-test"))
            .await
            .expect("connect to the test database");
        crate::db::migrate(&pool).await.expect("migrations apply");
        let url = with_database(&base, &name);
        Self {
            pool,
            url,
            name,
            admin,
        }
    }
}

/// A test database older than this was left by a run that was killed or
/// hung (nextest ends a test after 10 minutes), not by one still running.
pub const STALE_TEST_DATABASE_AGE: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Of `names`, the test databases created more than
/// [`STALE_TEST_DATABASE_AGE`] before `now`: their names carry the UUIDv7
/// they were made with, and so the time.
pub fn stale_test_databases<'a>(
    names: impl IntoIterator<Item = &'a str>,
    now: std::time::SystemTime,
) -> Vec<&'a str> {
    names
        .into_iter()
        .filter(|name| {
            let Some(created) = name
                .strip_prefix("earshot_test_")
                .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
                .and_then(|id| id.get_timestamp())
            else {
                return false;
            };
            let (secs, nanos) = created.to_unix();
            let created = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            now.duration_since(created)
                .is_ok_and(|age| age > STALE_TEST_DATABASE_AGE)
        })
        .collect()
}

/// Drops the test databases that killed or hung runs left on the server,
/// so they do not pile up on a developer's PostgreSQL. Best effort: a
/// failure is printed and the test goes on.
async fn drop_stale(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'earshot\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("listing test databases: {e}");
            return;
        }
    };
    let stale = stale_test_databases(
        names.iter().map(String::as_str),
        std::time::SystemTime::now(),
    );
    for name in stale {
        // Names come from the server's list and matched a UUID's hex
        // digits above: nothing to inject.
        match drop_database(conn, name).await {
            Ok(()) => eprintln!("dropped {name}, a test database a killed run left"),
            Err(e) => eprintln!("could not drop the stale test database {name}: {e}"),
        }
    }
}

/// Drops database `name` (made from a UUID's hex digits: nothing to
/// inject), giving up after [`DROP_PATIENCE`]. DROP DATABASE waits for
/// every backend on the server to acknowledge it, and one stuck in a COPY
/// whose client went silent never does: a failing test must end with its
/// own message, not hang in its clean-up.
async fn drop_database(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SET statement_timeout = '{}s'",
        DROP_PATIENCE.as_secs()
    )))
    .execute(&mut *conn)
    .await?;
    let dropped = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut *conn)
    .await;
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    dropped.map(|_| ())
}

/// How long dropping a test database may take before it is left behind.
const DROP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop needs async; run it on a thread of its own so it works from
        // inside or outside a runtime. The pool is left alone: it belongs to
        // the test's runtime, which is blocked here; FORCE ends its sessions.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    // A database left behind is named in the test's output.
                    if let Err(e) = drop_database(&mut conn, &name).await {
                        eprintln!("test database {name} was not dropped: {e}");
                    }
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn made_at(t: SystemTime) -> String {
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
        format!("earshot_test_{}", uuid::Uuid::new_v7(ts).simple())
    }

    #[test]
    fn only_test_databases_older_than_the_limit_are_stale() {
        let now = SystemTime::now();
        let old = made_at(now - STALE_TEST_DATABASE_AGE - Duration::from_secs(60));
        let recent = made_at(now - Duration::from_secs(600));
        let v4 = format!("earshot_test_{}", uuid::Uuid::nil().simple());
        let names = [
            old.as_str(),
            recent.as_str(),
            v4.as_str(),
            "earshot_test_nothex",
            "earshot",
            "postgres",
        ];
        assert_eq!(stale_test_databases(names, now), vec![old.as_str()]);
    }

    #[tokio::test]
    async fn a_new_test_database_drops_the_stale_ones_a_killed_run_left() {
        let admin: PgConnectOptions = base_url().parse().unwrap();
        let old = made_at(SystemTime::now() - STALE_TEST_DATABASE_AGE - Duration::from_secs(60));
        let mut conn = admin.connect().await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {old}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let fresh = TestDb::new().await;
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname = ANY($1) ORDER BY datname",
        )
        .bind(vec![old.clone(), fresh.name.clone()])
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(left, vec![fresh.name.clone()], "{old} was dropped");
    }

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
