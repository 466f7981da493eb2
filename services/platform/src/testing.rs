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
                    // DROP DATABASE waits for every backend on the server to
                    // acknowledge it, and one stuck in a COPY whose client
                    // went silent never does: a failing test must end with
                    // its own message, not hang here. A database left behind
                    // is named in the test's output.
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "SET statement_timeout = '{}s'",
                        DROP_PATIENCE.as_secs()
                    )))
                    .execute(&mut conn)
                    .await;
                    if let Err(e) = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    {
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
    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "t1"),
            "postgres://u@h/t1"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
