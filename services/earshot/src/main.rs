//! earshot: wires configuration, telemetry and the subcommands.

mod admin_cli;
mod loader_ops;

use anyhow::Context;
use clap::{Parser, Subcommand};
use earshot_loader::watchdog::Stalled;
use earshot_loader::{LoadOptions, Loader, Source, SourceSpec};
use earshot_platform::{db, shutdown, telemetry, Settings};

#[derive(Parser)]
#[command(
    name = "earshot",
    version,
    about = "earshot reporting tier: migrate, load, serve, admin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations, then exit.
    Migrate,
    /// Load events from the source into PostgreSQL.
    Load {
        /// Process what is there now, then exit 0.
        #[arg(long)]
        once: bool,
        /// Overrides EARSHOT_SOURCE: sqs:QUEUE_URL, s3://bucket/prefix or dir:PATH.
        #[arg(long)]
        source: Option<String>,
    },
    /// Serve the reporting API on EARSHOT_API_ADDR.
    Serve,
    /// Bootstrap and manage the catalog and keys from a shell. Each command
    /// prints the new id or key alone on the last line of stdout.
    Admin {
        #[command(subcommand)]
        command: admin_cli::AdminCommand,
    },
    /// Recount from raw events and compare with the rollups; without
    /// --campaign, also check that each day's counting and listener keys
    /// are the keys of its raw events. Exits 1 on any difference.
    Verify {
        /// Only this campaign (skips the key check: keys are hashes).
        #[arg(long)]
        campaign: Option<String>,
    },
    /// Rebuild the multi-day blocks of the daily rollup from it, for every
    /// day up to --through (default: the last day loaded), and mark them
    /// done up to there. The repair when verify reports day_blocks, and a
    /// step of rolling back past migration 10 (docs/OPERATIONS.md).
    RebuildBlocks {
        /// Last day (YYYY-MM-DD, UTC) the blocks are to hold.
        #[arg(long, value_parser = admin_cli::parse_date)]
        through: Option<time::Date>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let settings = Settings::load()?;
    match cli.command {
        Command::Migrate => {
            let pool = db::connect(&settings).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            let pool = db::connect_api(&settings).await?;
            let app = earshot_reporting::Application::build(&settings, pool).await?;
            tracing::info!(port = app.port, addr = %settings.api_addr, "earshot API listening");
            app.server.await?;
            Ok(())
        }
        Command::Admin { command } => {
            let pool = db::connect(&settings).await?;
            admin_cli::run(&pool, command).await
        }
        Command::Verify { campaign } => {
            let pool = db::connect(&settings).await?;
            let mismatches = earshot_loader::verify::verify(&pool, campaign.as_deref()).await?;
            for m in &mismatches {
                println!(
                    "{}\t{}\tevents={}\trollups={}",
                    m.what, m.key, m.from_events, m.from_rollups
                );
            }
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
        Command::RebuildBlocks { through } => {
            let pool = db::connect(&settings).await?;
            let r = earshot_loader::daily::rebuild_blocks(&pool, through).await?;
            tracing::info!(was = %r.was, through = %r.through, deleted = r.deleted, rows = r.rows, "day blocks rebuilt");
            println!(
                "rebuilt rollup_blocks through {} ({} rows; {} deleted; the mark was {})",
                r.through, r.rows, r.deleted, r.was
            );
            Ok(())
        }
        Command::Load { once, source } => {
            let spec: SourceSpec = source.unwrap_or_else(|| settings.source.clone()).parse()?;
            // Each concurrent run of loads holds two transactions at once
            // (one finishing, the next beginning); one more connection
            // serves the ledger checks and partition DDL.
            let needed = 2 * settings.load_concurrency + 1;
            anyhow::ensure!(
                needed <= settings.database_max_connections,
                "EARSHOT_LOAD_CONCURRENCY={} needs {needed} connections (two per run of loads, plus one); \
                 EARSHOT_DATABASE_MAX_CONNECTIONS is {}",
                settings.load_concurrency,
                settings.database_max_connections
            );
            anyhow::ensure!(
                settings.loader_stall_seconds > 0,
                "EARSHOT_LOADER_STALL_SECONDS must be at least 1 (seconds one loader step may run)"
            );
            let pool = db::connect_loader(&settings).await?;
            let src = Source::open(&spec).await?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown::signal().await;
                tracing::info!("stopping after the object in hand");
                let _ = stop_tx.send(true);
            });
            if !once {
                let addr = settings.loader_addr.clone();
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("EARSHOT_LOADER_ADDR: cannot listen on {addr}"))?;
                tokio::spawn(loader_ops::serve(
                    listener,
                    earshot_platform::metrics::prometheus(),
                ));
            } else {
                earshot_platform::metrics::prometheus();
            }
            let mut loader = Loader::new(
                pool,
                src,
                LoadOptions {
                    once,
                    poll_interval: std::time::Duration::from_secs(settings.poll_interval_seconds),
                    retention_days: settings.retention_days,
                    concurrency: settings.load_concurrency as usize,
                    stall_limit: std::time::Duration::from_secs(settings.loader_stall_seconds),
                },
            );
            let summary = match loader.run(stop_rx).await {
                Ok(s) => s,
                // Exit now rather than return: returning drops the runtime,
                // which waits for its blocking threads, and the stuck step
                // may be one of them.
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
    }
}
