//! What each subcommand does, from its settings.

use anyhow::Context;
use earshot_loader::watchdog::Stalled;
use earshot_loader::{Loader, Source, SourceSpec};
use earshot_platform::{db, roles, shutdown, DbRole};

use crate::admin_cli::{self, AdminCommand};
use crate::loader_ops;
use crate::settings::Settings;

/// `earshot migrate`: the migrations, as the schema's owner, then the
/// loader's and the API's roles and rights (`earshot_platform::roles`).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database.as_role(DbRole::Owner)).await?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    for (part, applied) in roles::apply(&pool, &settings.database).await? {
        match applied {
            roles::Applied::SameAsOwner => {
                tracing::info!(?part, "connects as the migrations' role: no rights to set")
            }
            roles::Applied::Granted { role, created } => {
                tracing::info!(?part, role, created, "database role's rights set")
            }
        }
    }
    Ok(())
}

/// `earshot serve`: the API until SIGTERM.
pub async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect_api(
        &settings.database.as_role(DbRole::Api),
        settings.api.statement_timeout(),
    )
    .await?;
    let app = earshot_reporting::Application::build(&settings.api, pool).await?;
    tracing::info!(port = app.port, addr = %settings.api.addr, "earshot API listening");
    app.server.await?;
    Ok(())
}

/// `earshot admin …`, with the API's role: it manages the same catalog
/// and keys.
pub async fn admin(settings: &Settings, command: AdminCommand) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database.as_role(DbRole::Api)).await?;
    admin_cli::run(&pool, command).await
}

/// One line per mismatch: what, key, the recount's figure (labelled
/// `source`) and the rollups'.
fn print_mismatches(mismatches: &[earshot_loader::verify::Mismatch], source: &str) {
    for m in mismatches {
        println!(
            "{}\t{}\t{source}={}\trollups={}",
            m.what, m.key, m.from_events, m.from_rollups
        );
    }
}

/// `earshot verify`: prints every mismatch; an error when there is one.
/// With the loader's role, which reads everything it recounts.
pub async fn verify(settings: &Settings, campaign: Option<&str>) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database.as_role(DbRole::Loader)).await?;
    let mismatches = earshot_loader::verify::verify(&pool, campaign).await?;
    print_mismatches(&mismatches, "events");
    if mismatches.is_empty() {
        println!("ok: rollups and uniques equal a recount of the raw events");
        Ok(())
    } else {
        anyhow::bail!(
            "{} mismatches between raw events and rollups",
            mismatches.len()
        )
    }
}

/// `earshot verify --recount FILE`: the rollups of the file's
/// campaign-days against its counts; an error when they differ.
pub async fn verify_recount(settings: &Settings, file: &std::path::Path) -> anyhow::Result<()> {
    let recount = earshot_loader::recount::Recount::read(file)?;
    let pool = db::connect(&settings.database.as_role(DbRole::Loader)).await?;
    let mismatches = recount.compare(&pool).await?;
    print_mismatches(&mismatches, "recount");
    let days = recount.days().len();
    if mismatches.is_empty() {
        println!("ok: the rollups of {days} campaign-days equal the recount");
        Ok(())
    } else {
        anyhow::bail!(
            "{} mismatches between the recount and the rollups",
            mismatches.len()
        )
    }
}

/// `earshot audit`: prints the audit; an error (exit 1) when anything was
/// lost. With the loader's role (the API's would do as well).
pub async fn audit(
    settings: &Settings,
    hours: u32,
    in_flight_minutes: u64,
    json: bool,
) -> anyhow::Result<()> {
    use earshot_platform::audit::{self, AuditOptions};
    let pool = db::connect(&settings.database.as_role(DbRole::Loader)).await?;
    let now = time::OffsetDateTime::now_utc();
    let to = audit::hour_of(now) + time::Duration::hours(1);
    let report = audit::audit(
        &pool,
        AuditOptions {
            from: to - time::Duration::hours(i64::from(hours.max(1))),
            to,
            now,
            in_flight: std::time::Duration::from_secs(in_flight_minutes * 60),
        },
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", audit::render(&report));
    }
    if report.any_lost() {
        anyhow::bail!(
            "{} sequence numbers lost (numbered by an edge, older than {in_flight_minutes} min, never stored)",
            report.total.lost
        )
    }
    Ok(())
}

/// `earshot athena-sql`.
pub fn athena_sql(campaign: &str, day: time::Date, database: &str) -> anyhow::Result<()> {
    println!(
        "{};",
        earshot_loader::recount::athena_sql(database, campaign, day)?
    );
    Ok(())
}

/// `earshot rebuild-blocks`, with the loader's role, which writes them.
pub async fn rebuild_blocks(
    settings: &Settings,
    through: Option<time::Date>,
) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database.as_role(DbRole::Loader)).await?;
    let r = earshot_loader::daily::rebuild_blocks(&pool, through).await?;
    tracing::info!(was = %r.was, through = %r.through, deleted = r.deleted, rows = r.rows, "day blocks rebuilt");
    println!(
        "rebuilt rollup_blocks and reach_sketch_blocks through {} ({} rollup rows; {} deleted; the mark was {})",
        r.through, r.rows, r.deleted, r.was
    );
    Ok(())
}

/// `earshot load`: until SIGTERM, or what is there with `once`; prints the
/// run's totals.
pub async fn load(settings: &Settings, once: bool, source: Option<&str>) -> anyhow::Result<()> {
    let spec = settings.loader.source(source)?;
    if let SourceSpec::Sqs { admits: None, .. } = &spec {
        tracing::warn!("EARSHOT_EVENTS_BUCKET is not set: S3 notifications naming any bucket will be loaded and counted; set it (and EARSHOT_EVENTS_PREFIX, default events/) in production");
    }
    let opts = settings.loader.options(once, &settings.database)?;
    let pool =
        db::connect_loader(&settings.database.as_role(DbRole::Loader), opts.stall_limit).await?;
    let src = Source::open(&spec).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown::signal().await;
        tracing::info!("stopping after the object in hand");
        let _ = stop_tx.send(true);
    });
    if !once {
        let addr = &settings.loader.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("EARSHOT_LOADER_ADDR: cannot listen on {addr}"))?;
        tokio::spawn(loader_ops::serve(
            listener,
            earshot_platform::metrics::prometheus(),
        ));
    } else {
        earshot_platform::metrics::prometheus();
    }
    let mut loader = Loader::new(pool, src, opts);
    let summary = match loader.run(stop_rx).await {
        Ok(s) => s,
        // Exit now rather than return: returning drops the runtime, which
        // waits for its blocking threads, and the stuck step may be one of
        // them.
        Err(e) if e.is::<Stalled>() => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
        Err(e) => return Err(e),
    };
    tracing::info!(?summary, "loader stopped");
    println!(
        "objects_loaded={} objects_skipped={} events_new={} duplicates={} quarantined={} counted={}",
        summary.objects_loaded,
        summary.objects_skipped,
        summary.events_new,
        summary.duplicates,
        summary.quarantined,
        summary.counted
    );
    Ok(())
}
