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
    /// Recount from raw events and compare with the rollups, over the days
    /// whose raw events PostgreSQL keeps; without --campaign, also check
    /// that each day's counting and listener keys are the keys of its raw
    /// events. With --recount, compare the rollups with a recount from S3
    /// instead (`earshot athena-sql`). Exits 1 on any difference.
    Verify {
        /// Only this campaign (skips the key check: keys are hashes).
        #[arg(long, conflicts_with = "recount")]
        campaign: Option<String>,
        /// A recount of campaign-days as Athena writes its CSV, compared
        /// with the rollups of exactly those days.
        #[arg(long, value_name = "FILE")]
        recount: Option<std::path::PathBuf>,
    },
    /// What the edges numbered against what was stored, per UTC hour, per
    /// edge and in total: stored, duplicates, quarantined, and missing
    /// numbers in flight or lost (docs/COUNTING.md, "How we know nothing
    /// was lost"). Exits 1 when anything is lost, so it can run as a
    /// CronJob and alert.
    Audit {
        /// The UTC hours audited: this many, up to and including the
        /// current one.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// Missing numbers younger than this are in flight, older ones
        /// lost: Firehose's buffer interval plus the loader's lag.
        #[arg(long, default_value_t = earshot_platform::audit::DEFAULT_IN_FLIGHT.as_secs() / 60)]
        in_flight_minutes: u64,
        /// Print the audit as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the Athena query that recounts a campaign's UTC day from the
    /// raw events in S3, for `earshot verify --recount`.
    AthenaSql {
        #[arg(long)]
        campaign: String,
        /// The UTC day, YYYY-MM-DD.
        #[arg(long, value_parser = admin_cli::parse_date)]
        day: time::Date,
        /// The Glue database of the SAM template (parameter GlueDatabaseName).
        #[arg(long, default_value = "earshot")]
        database: String,
    },
    /// Rebuild the multi-day blocks of the daily rollup and of the reach
    /// sketches from the days, for every day up to --through (default: the
    /// last day loaded), and mark them done up to there. The repair when
    /// verify reports day_blocks or reach_blocks, and a step of rolling
    /// back past migration 10 (docs/OPERATIONS.md).
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
        Command::Verify {
            campaign,
            recount: None,
        } => commands::verify(&settings, campaign.as_deref()).await,
        Command::Verify {
            recount: Some(file),
            ..
        } => commands::verify_recount(&settings, &file).await,
        Command::AthenaSql {
            campaign,
            day,
            database,
        } => commands::athena_sql(&campaign, day, &database),
        Command::Audit {
            hours,
            in_flight_minutes,
            json,
        } => commands::audit(&settings, hours, in_flight_minutes, json).await,
        Command::RebuildBlocks { through } => commands::rebuild_blocks(&settings, through).await,
        Command::Load { once, source } => commands::load(&settings, once, source.as_deref()).await,
    }
}
