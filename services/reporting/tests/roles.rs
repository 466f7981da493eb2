//! The database roles `earshot migrate` sets up (`earshot_platform::roles`):
//! the loader and the API each do their work with their own role, and
//! nothing else.

mod support;

use earshot_platform::roles::{self, Applied};
use earshot_platform::{DatabaseSettings, DbRole};
use earshot_testkit::loader::{assert_books_balance, load_dir};
use secrecy::SecretString;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::*;
use time::{Duration, OffsetDateTime};

/// `url` with `user:password` as its user.
fn as_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

/// The roles of one test's database, dropped when the test ends (roles are
/// the server's, not the database's); ones that a killed run left behind,
/// whose database is gone, are dropped first.
struct TestRoles {
    server: String,
    database: String,
    names: Vec<String>,
}

impl TestRoles {
    async fn new(database: &str, names: Vec<String>) -> Self {
        let server = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| earshot_platform::config::DEFAULT_DATABASE_URL.to_owned());
        let mut conn = PgConnection::connect(&server).await.unwrap();
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'earshot\\_test\\_%'
             AND NOT EXISTS (SELECT 1 FROM pg_database
                             WHERE datname = substring(rolname from '^earshot_test_[0-9a-f]+'))",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for role in stale {
            // Names from the server's list, matched above.
            let _ = sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                .execute(&mut conn)
                .await;
        }
        Self {
            server,
            database: database.to_owned(),
            names,
        }
    }
}

impl Drop for TestRoles {
    fn drop(&mut self) {
        let (server, database, names) = (
            self.server.clone(),
            self.database.clone(),
            self.names.clone(),
        );
        // As TestDb's clean-up: on a thread of its own, with a runtime of
        // its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // Its rights in the test's database first: a role that
                // holds some cannot be dropped.
                if let Ok(mut conn) = PgConnection::connect(&server_db(&server, &database)).await {
                    for role in &names {
                        // Test-made names: the database's and a suffix.
                        let _ = sqlx::query(AssertSqlSafe(format!("DROP OWNED BY {role}")))
                            .execute(&mut conn)
                            .await;
                    }
                }
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    for role in &names {
                        let _ = sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// `server` (a URL) with its database replaced by `database`.
fn server_db(server: &str, database: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap();
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    format!("{scheme}://{authority}/{database}")
}

/// The SQLSTATE of what `sql` fails with as the session `conn`.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => panic!("allowed: {sql}"),
        Err(sqlx::Error::Database(e)) => e.code().unwrap_or_default().into_owned(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// PostgreSQL's insufficient_privilege.
const DENIED: &str = "42501";

#[tokio::test]
async fn the_loader_and_the_api_each_do_their_work_and_no_ddl() {
    let app = spawn_app(AppOptions::default()).await;
    let (loader_role, api_role) = (
        format!("{}_loader", app.db.name),
        format!("{}_api", app.db.name),
    );
    let _cleanup = TestRoles::new(&app.db.name, vec![loader_role.clone(), api_role.clone()]).await;
    let loader_url = as_user(&app.db.url, &loader_role, "loader-secret");
    let api_url = as_user(&app.db.url, &api_role, "api-secret");
    let settings = DatabaseSettings {
        url: SecretString::from(app.db.url.as_str()),
        loader_url: Some(SecretString::from(loader_url.as_str())),
        api_url: Some(SecretString::from(api_url.as_str())),
        ..DatabaseSettings::default()
    };

    // As `earshot migrate` does, after the migrations, twice: the second
    // run finds the roles able to log in and sets the same rights.
    let first = roles::apply(&app.db.pool, &settings).await.unwrap();
    let granted = |created| {
        vec![
            (
                DbRole::Loader,
                Applied::Granted {
                    role: loader_role.clone(),
                    created,
                },
            ),
            (
                DbRole::Api,
                Applied::Granted {
                    role: api_role.clone(),
                    created,
                },
            ),
        ]
    };
    assert_eq!(first, granted(true));
    assert_eq!(
        roles::apply(&app.db.pool, &settings).await.unwrap(),
        granted(false)
    );

    // The loader loads with its role: today's events (partitions made
    // through migration 20's functions) and an old day's, whose keys are
    // built from its raw events; its upkeep drops the closed days' keys.
    let loader_pool = sqlx::PgPool::connect(&loader_url).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let mut events = synthetic_events("acme", now - Duration::hours(2), 1, 40, 7);
    events.extend(synthetic_events("acme", now - Duration::days(9), 1, 20, 8));
    let dir = earshot_testkit::temp_dir("roles");
    std::fs::write(dir.join("a.ndjson"), earshot_testkit::ndjson(&events)).unwrap();
    let loaded = load_dir(&loader_pool, &dir).await;
    assert_eq!(loaded.events_new as usize, events.len());
    assert_books_balance(&loader_pool).await;

    // The API serves with its role: the catalog it manages, the reports.
    let base = app.replica_as(AppOptions::default(), &api_url).await;
    let created = app
        .client
        .post(format!("{base}/v1/advertisers"))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let (_a, key) = app.advertiser("Acme 2", &["acme"]).await;
    let (from, to) = (
        (now - Duration::days(10)).date(),
        // The events run up to 21 hours past now: past tomorrow's start
        // after 03:00 UTC.
        (now + Duration::days(2)).date(),
    );
    let report = app
        .client
        .get(format!(
            "{base}/v1/campaigns/acme/report?granularity=total&from={from}&to={to}"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let report: serde_json::Value = report.json().await.unwrap();
    assert_eq!(
        report["totals"]["raw_hits"].as_i64().unwrap(),
        events.len() as i64,
        "{report}"
    );

    // What the API's role may not do.
    let mut api = PgConnection::connect(&api_url).await.unwrap();
    for sql in [
        "INSERT INTO events (id, ts, listener, verdict, object_id)
         VALUES (gen_random_uuid(), now(), 'x', 'valid', 1)",
        "SELECT count(*) FROM events",
        "SELECT raw_line FROM quarantine",
        "UPDATE rollup_hourly SET raw_hits = raw_hits + 1",
        "DELETE FROM rollup_daily",
        "INSERT INTO loaded_objects (source, object_key, etag, bytes) VALUES ('s', 'k', 'e', 1)",
        "DELETE FROM api_keys",
        "CREATE TABLE stolen (a int)",
        "ALTER TABLE campaigns ADD COLUMN stolen int",
        "SELECT earshot_create_events_partition(current_date + 400)",
    ] {
        assert_eq!(refused(&mut api, sql).await, DENIED, "API: {sql}");
    }
    // What the loader's role may not do: any DDL, the catalog, the keys.
    let mut loader = PgConnection::connect(&loader_url).await.unwrap();
    for sql in [
        "CREATE TABLE stolen (a int)",
        "CREATE TABLE events_p20991231 PARTITION OF events
         FOR VALUES FROM ('2099-12-31 00:00:00+00') TO ('2100-01-01 00:00:00+00')",
        "ALTER TABLE events ADD COLUMN stolen int",
        "DROP TABLE rollup_hourly",
        "TRUNCATE rollup_daily",
        "CREATE INDEX stolen ON events (ua)",
        "SELECT count(*) FROM api_keys",
        "INSERT INTO campaigns (id, advertiser_id, name) VALUES ('x', gen_random_uuid(), 'x')",
        "UPDATE advertisers SET name = 'x'",
    ] {
        assert_eq!(refused(&mut loader, sql).await, DENIED, "loader: {sql}");
    }
    // A name outside the functions' list is refused there.
    assert_eq!(
        refused(
            &mut loader,
            "SELECT earshot_drop_day_partition('api_keys', current_date)"
        )
        .await,
        "22023"
    );
}

/// Every table the migrations make has its line in `roles::TABLES`, and
/// every line names one: a new table gets no rights until it is given some
/// there (a part could not use it).
#[tokio::test]
async fn every_table_of_the_schema_has_its_rights_defined() {
    let db = earshot_platform::testing::TestDb::new().await;
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    tables.sort();
    let mut defined: Vec<String> = roles::TABLES
        .iter()
        .map(|(t, _, _)| t.to_string())
        .collect();
    defined.sort();
    assert_eq!(tables, defined);
}

/// The API's admin audit counts the quarantined lines that carry no
/// sequence number (migration 25's function) though its role may not read
/// them: they are raw input.
#[tokio::test]
async fn the_api_role_counts_unnumbered_quarantined_lines_without_reading_them() {
    let app = spawn_app(AppOptions::default()).await;
    let api_role = format!("{}_api", app.db.name);
    let _cleanup = TestRoles::new(&app.db.name, vec![api_role.clone()]).await;
    let api_url = as_user(&app.db.url, &api_role, "api-secret");
    let settings = DatabaseSettings {
        url: SecretString::from(app.db.url.as_str()),
        api_url: Some(SecretString::from(api_url.as_str())),
        ..DatabaseSettings::default()
    };
    roles::apply(&app.db.pool, &settings).await.unwrap();

    // An object of events with two lines no edge wrote: quarantined now,
    // neither with a number.
    let now = OffsetDateTime::now_utc();
    let events = synthetic_events("acme", now - Duration::hours(1), 1, 10, 9);
    let mut object = earshot_testkit::ndjson(&events);
    object.extend_from_slice(b"not json at all\n{\"v\":1,\"ua\":\"someone's user agent\"}\n");
    let dir = earshot_testkit::temp_dir("roles-quarantine");
    std::fs::write(dir.join("a.ndjson"), object).unwrap();
    let loaded = load_dir(&app.db.pool, &dir).await;
    assert_eq!(
        (loaded.events_new as usize, loaded.quarantined),
        (events.len(), 2)
    );

    let base = app.replica_as(AppOptions::default(), &api_url).await;
    let r = app
        .client
        .get(format!("{base}/v1/admin/audit?hours=2"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit: serde_json::Value = r.json().await.unwrap();
    assert_eq!(audit["quarantined_unnumbered"], 2, "{audit:#}");
    let by_hour: Vec<(&str, u64)> = audit["hours"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["quarantined_unnumbered"] != 0)
        .map(|h| {
            (
                h["hour"].as_str().unwrap(),
                h["quarantined_unnumbered"].as_u64().unwrap(),
            )
        })
        .collect();
    let quarantined_at: OffsetDateTime =
        sqlx::query_scalar("SELECT max(quarantined_at) FROM quarantine")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let hour = earshot_platform::audit::hour_of(quarantined_at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(by_hour, [(hour.as_str(), 2)], "{audit:#}");

    // The count, and nothing of the lines.
    let mut api = PgConnection::connect(&api_url).await.unwrap();
    assert_eq!(
        refused(&mut api, "SELECT raw_line FROM quarantine").await,
        DENIED
    );
    let counted: i64 = sqlx::query_scalar(
        "SELECT sum(lines)::bigint FROM earshot_quarantined_unnumbered(now() - interval '1 day', now() + interval '1 hour')",
    )
    .fetch_one(&mut api)
    .await
    .unwrap();
    assert_eq!(counted, 2);
}

/// Every function that runs as its owner has its line in
/// `roles::FUNCTIONS`, and every line names one: PUBLIC may call none of
/// them, so a part may only if it is given the right there.
#[tokio::test]
async fn every_owner_function_of_the_schema_has_its_callers_defined() {
    let db = earshot_platform::testing::TestDb::new().await;
    let mut functions: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prosecdef",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    functions.sort();
    // As PostgreSQL prints them (a name that is no function fails here).
    let mut defined: Vec<String> =
        sqlx::query_scalar("SELECT f::regprocedure::text FROM unnest($1::text[]) f")
            .bind(
                roles::FUNCTIONS
                    .iter()
                    .map(|(f, _, _)| *f)
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&db.pool)
            .await
            .unwrap();
    defined.sort();
    assert_eq!(functions, defined);
    let public: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prosecdef
           AND has_function_privilege('public', p.oid, 'EXECUTE')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(public, Vec::<String>::new(), "PUBLIC may call these");
}
