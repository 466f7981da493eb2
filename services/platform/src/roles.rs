//! The database roles and their rights: the owner runs the migrations and
//! owns every object; the loader writes the event and rollup tables and
//! nothing else; the API reads the rollups and the sequence ledger and
//! manages the catalog and the API keys (docs/OPERATIONS.md, "Database
//! roles").
//!
//! `earshot migrate` applies [`apply`] after the migrations, for each part
//! whose own URL names another role than the owner's
//! (`EARSHOT_LOADER_DATABASE_URL`, `EARSHOT_API_DATABASE_URL`): the role is
//! created (or given the URL's password) when the URL cannot log in yet,
//! and its rights are set to exactly [`TABLES`]' and [`FUNCTIONS`]'
//! (revoked, then granted, in one transaction). Run again, it changes
//! nothing. With one URL for everything (local development) there is
//! nothing to do.
//!
//! Neither role can run DDL: neither owns a table, and `CREATE` on the
//! schema is revoked from `PUBLIC`. The loader makes and drops its day
//! partitions through the functions of migration 20, which run as the
//! owner and do only that. What a role may know of a table it may not
//! read (the count of unnumbered quarantined lines, for the audit) it asks
//! such a function too (migration 25).
//!
//! Every table of the schema is in [`TABLES`], every function that runs
//! as its owner in [`FUNCTIONS`]: a migration that adds one adds its line
//! here (tests compare them).

use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, PgPool};

use crate::config::{DatabaseSettings, DbRole};

/// Reads, inserts, updates and deletes rows; no DDL, no TRUNCATE.
const WRITES: &str = "SELECT, INSERT, UPDATE, DELETE";
/// Creates and changes rows, never deletes them (the catalog and the keys:
/// a key is revoked, not deleted).
const MANAGES: &str = "SELECT, INSERT, UPDATE";
const READS: &str = "SELECT";
const NONE: &str = "";

/// Each table of the schema (partitions follow their parent): the loader's
/// rights on it, then the API's.
pub const TABLES: &[(&str, &str, &str)] = &[
    // The catalog and the keys: the API's to manage (`earshot admin` too).
    ("advertisers", NONE, MANAGES),
    ("campaigns", NONE, MANAGES),
    ("creatives", NONE, MANAGES),
    ("api_keys", NONE, MANAGES),
    // What the loader writes and only it reads.
    ("loaded_objects", WRITES, NONE),
    // Loads tried again in parts (migration 29).
    ("load_attempts", WRITES, NONE),
    ("loaded_object_parts", WRITES, NONE),
    ("quarantine", WRITES, NONE),
    ("events", WRITES, NONE),
    ("counting_keys", WRITES, NONE),
    ("listener_keys", WRITES, NONE),
    // What the loader writes and the reports read.
    ("rollup_hourly", WRITES, READS),
    ("rollup_daily", WRITES, READS),
    ("rollup_blocks", WRITES, READS),
    ("daily_uniques", WRITES, READS),
    ("reach_sketches", WRITES, READS),
    ("reach_sketch_blocks", WRITES, READS),
    ("frequency_sample", WRITES, READS),
    ("campaign_data_versions", WRITES, READS),
    ("counting_state", WRITES, READS),
    // The sequence ledger (migration 23): the loader writes it, `earshot
    // audit` and the API's admin audit read it.
    ("edge_seq_ranges", WRITES, READS),
    ("edge_heartbeats", WRITES, READS),
    // Migration 8's key logs, frozen by migration 11 (its trigger refuses
    // appends); the loader drops their day partitions through migration
    // 20's function.
    ("counted_keys", NONE, NONE),
    ("daily_listeners", NONE, NONE),
    // sqlx's ledger of applied migrations.
    ("_sqlx_migrations", NONE, NONE),
];

/// The functions of the schema that run as their owner (SECURITY DEFINER;
/// PUBLIC may not call them), each with whether the loader may, then
/// whether the API may.
pub const FUNCTIONS: &[(&str, bool, bool)] = &[
    // Migration 20: the loader makes and drops its partitions with these.
    ("earshot_create_events_partition(date)", true, false),
    ("earshot_drop_day_partition(text, date)", true, false),
    ("earshot_new_key_partition(text, date)", true, false),
    ("earshot_attach_key_partition(text, date)", true, false),
    // Migration 25: the sequence audit's count of unnumbered quarantined
    // lines. The API's admin audit needs that count, not the lines: they
    // are raw input (user agents, trace ids, whatever reached the bucket),
    // so the API gets this count and no right on `quarantine`.
    (
        "earshot_quarantined_unnumbered(timestamptz, timestamptz)",
        true,
        true,
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("{var} is not a PostgreSQL URL: {detail}")]
    BadUrl { var: &'static str, detail: String },
    #[error("{var} names role {role:?}, a superuser: its rights cannot be limited; give the part a role of its own")]
    Superuser { var: &'static str, role: String },
    #[error("{var}: creating or updating role {role:?} failed (the migration role needs CREATEROLE, or create it yourself): {source}")]
    CannotCreate {
        var: &'static str,
        role: String,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What [`apply`] did for one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The part connects as the owner (or with `DATABASE_URL`): nothing to
    /// grant.
    SameAsOwner,
    /// The role's rights were set; `created` says whether the role was
    /// created (or its password set) first.
    Granted { role: String, created: bool },
}

/// The variable a role's URL comes from.
fn var(role: DbRole) -> &'static str {
    match role {
        DbRole::Owner => "EARSHOT_MIGRATE_DATABASE_URL",
        DbRole::Loader => "EARSHOT_LOADER_DATABASE_URL",
        DbRole::Api => "EARSHOT_API_DATABASE_URL",
    }
}

/// The password a PostgreSQL URL carries, if any (percent-decoded).
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(
        percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Sets the loader's and the API's rights, creating their roles when their
/// URL cannot log in yet (see the module's doc). `owner` is the pool of
/// the migrations' role.
pub async fn apply(
    owner: &PgPool,
    settings: &DatabaseSettings,
) -> Result<Vec<(DbRole, Applied)>, RolesError> {
    let owner_name: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(owner)
        .await?;
    let mut done = Vec::new();
    for role in [DbRole::Loader, DbRole::Api] {
        let own = match role {
            DbRole::Loader => &settings.loader_url,
            DbRole::Api => &settings.api_url,
            DbRole::Owner => &None,
        };
        let Some(url) = own else {
            done.push((role, Applied::SameAsOwner));
            continue;
        };
        let url = url.expose_secret();
        let opts: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| RolesError::BadUrl {
            var: var(role),
            detail: e.to_string(),
        })?;
        let name = opts.get_username().to_owned();
        if name == owner_name {
            done.push((role, Applied::SameAsOwner));
            continue;
        }
        let created = ensure_login(owner, role, &name, url_password(url), opts).await?;
        grant(owner, role, &name).await?;
        done.push((
            role,
            Applied::Granted {
                role: name,
                created,
            },
        ));
    }
    if done
        .iter()
        .any(|(_, a)| matches!(a, Applied::Granted { .. }))
    {
        // PostgreSQL 15 and later already keep CREATE on `public` from
        // everyone; earlier versions gave it to PUBLIC.
        sqlx::query("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            .execute(owner)
            .await?;
    }
    Ok(done)
}

/// Makes sure `name` can log in with `opts`: if it cannot, creates the role
/// or sets its password (the one the URL carries). Returns whether it had
/// to.
async fn ensure_login(
    owner: &PgPool,
    role: DbRole,
    name: &str,
    password: Option<String>,
    opts: PgConnectOptions,
) -> Result<bool, RolesError> {
    let super_or_missing: Option<bool> =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_optional(owner)
            .await?;
    if super_or_missing == Some(true) {
        return Err(RolesError::Superuser {
            var: var(role),
            role: name.to_owned(),
        });
    }
    if super_or_missing.is_some() && opts.connect().await.is_ok() {
        return Ok(false);
    }
    let verb = if super_or_missing.is_some() {
        "ALTER"
    } else {
        "CREATE"
    };
    // format() quotes the name and the password on the server.
    let sql: String = sqlx::query_scalar(
        "SELECT format('%s ROLE %I LOGIN', $1::text, $2::text)
                || CASE WHEN $3::text IS NULL THEN '' ELSE format(' PASSWORD %L', $3::text) END",
    )
    .bind(verb)
    .bind(name)
    .bind(password)
    .fetch_one(owner)
    .await?;
    sqlx::query(AssertSqlSafe(sql))
        .execute(owner)
        .await
        .map_err(|source| RolesError::CannotCreate {
            var: var(role),
            role: name.to_owned(),
            source,
        })?;
    tracing::info!(role = name, verb, "database role ready to log in");
    Ok(true)
}

/// The rights `role` has on a table of [`TABLES`].
fn rights(role: DbRole, loader: &'static str, api: &'static str) -> &'static str {
    match role {
        DbRole::Loader => loader,
        DbRole::Api => api,
        DbRole::Owner => NONE,
    }
}

/// Sets `name`'s rights to exactly `role`'s, in one transaction: no moment
/// without them, and nothing left from before.
async fn grant(owner: &PgPool, role: DbRole, name: &str) -> Result<(), RolesError> {
    let quoted: String = sqlx::query_scalar("SELECT quote_ident($1)")
        .bind(name)
        .fetch_one(owner)
        .await?;
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    )
    .fetch_all(owner)
    .await?;
    let mut statements = vec![
        format!("GRANT USAGE ON SCHEMA public TO {quoted}"),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"),
    ];
    for &(table, loader, api) in TABLES {
        let privileges = rights(role, loader, api);
        if privileges.is_empty() || !existing.iter().any(|t| t == table) {
            continue;
        }
        // Table names are this file's constants.
        statements.push(format!("GRANT {privileges} ON {table} TO {quoted}"));
        if privileges.contains("INSERT") {
            let sequences: Vec<String> = sqlx::query_scalar(
                "SELECT pg_get_serial_sequence($1, a.attname) FROM pg_attribute a
                 WHERE a.attrelid = $1::regclass AND a.attidentity <> '' AND NOT a.attisdropped",
            )
            .bind(table)
            .fetch_all(owner)
            .await?;
            for s in sequences {
                statements.push(format!("GRANT USAGE ON SEQUENCE {s} TO {quoted}"));
            }
        }
    }
    for &(function, loader, api) in FUNCTIONS {
        let allowed = match role {
            DbRole::Loader => loader,
            DbRole::Api => api,
            DbRole::Owner => false,
        };
        // Function signatures are this file's constants.
        statements.push(if allowed {
            format!("GRANT EXECUTE ON FUNCTION {function} TO {quoted}")
        } else {
            format!("REVOKE EXECUTE ON FUNCTION {function} FROM {quoted}")
        });
    }
    for table in &existing {
        if !TABLES.iter().any(|(t, _, _)| t == table) {
            tracing::warn!(
                table,
                role = name,
                "a table roles.rs does not know: no rights on it"
            );
        }
    }
    let mut tx = owner.begin().await?;
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!(role = name, part = ?role, "database role's rights set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_a_url_is_read_decoded() {
        assert_eq!(
            url_password("postgres://loader:s%40cr%2Ft@db:5432/earshot?sslmode=require").as_deref(),
            Some("s@cr/t")
        );
        assert_eq!(url_password("postgres://loader@db/earshot"), None);
        assert_eq!(url_password("postgres://db/earshot"), None);
        assert_eq!(
            url_password("postgres://u:p@ss@db/earshot").as_deref(),
            Some("p@ss")
        );
    }
}
