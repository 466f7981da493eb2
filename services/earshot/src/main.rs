//! earshot: wires configuration, telemetry and the subcommands.

mod admin_cli;
mod commands;
mod loader_ops;
mod settings;

use clap::{Parser, Subcommand};
use earshot_platform::telemetry;
use settings::Settings;

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
        Command::Migrate => commands::migrate(&settings).await,
        Command::Serve => commands::serve(&settings).await,
        Command::Admin { command } => commands::admin(&settings, command).await,
        Command::Verify { campaign } => commands::verify(&settings, campaign.as_deref()).await,
        Command::RebuildBlocks { through } => commands::rebuild_blocks(&settings, through).await,
        Command::Load { once, source } => commands::load(&settings, once, source.as_deref()).await,
    }
}
