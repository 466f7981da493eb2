//! The real loader in tests: loading a directory of objects, and the books
//! balance check every scenario ends with (feature `loader`).

use std::path::Path;

use earshot_loader::source::{Object, Source, SourceSpec};
use earshot_loader::{LoadOptions, Loader, LoaderSettings, RunSummary};
use earshot_platform::DatabaseSettings;
use sqlx::{AssertSqlSafe, PgPool};

/// A loader's options in tests: process what is there (`--once`), quick
/// polls, the service's defaults otherwise.
pub fn load_options() -> LoadOptions {
    let defaults = LoaderSettings::default()
        .options(true, &DatabaseSettings::default())
        .expect("the defaults work");
    LoadOptions {
        poll_interval: std::time::Duration::from_millis(50),
        ..defaults
    }
}

/// A loader of the objects in `dir`.
pub async fn loader(pool: &PgPool, dir: &Path, opts: LoadOptions) -> Loader {
    let src = Source::open(&SourceSpec::Dir(dir.to_owned()))
        .await
        .expect("open the directory");
    Loader::new(pool.clone(), src, opts)
}

/// Loads every object in `dir` with `opts`, as `earshot load --once` does.
pub async fn load_dir_with(pool: &PgPool, dir: &Path, opts: LoadOptions) -> RunSummary {
    let mut loader = loader(pool, dir, opts).await;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    loader.run(rx).await.expect("the load runs")
}

/// Loads every object in `dir` with [`load_options`].
pub async fn load_dir(pool: &PgPool, dir: &Path) -> RunSummary {
    load_dir_with(pool, dir, load_options()).await
}

/// The object `name` in `dir`, as the directory source names it.
pub fn dir_object(dir: &Path, name: &str) -> Object {
    Object {
        source: format!(
            "dir:{}",
            std::fs::canonicalize(dir)
                .expect("the dir exists")
                .display()
        ),
        key: name.into(),
        etag: None,
    }
}

/// The one number `sql` selects.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("a count")
}

/// The books balance: rollups and uniques equal `earshot verify`'s recount
/// of the raw events.
pub async fn assert_books_balance(pool: &PgPool) {
    let mismatches = earshot_loader::verify::verify(pool, None)
        .await
        .expect("verify runs");
    assert!(
        mismatches.is_empty(),
        "rollups disagree with raw events: {mismatches:#?}"
    );
}
