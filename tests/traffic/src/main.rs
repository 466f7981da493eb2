//! earshot-traffic: wires the command line to the generator and the sender.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use earshot_domain::SigningKeys;
use earshot_traffic::{Amount, Burst, CampaignSpec, Expected, Generator, Mix, Plan, SendOptions};

/// Sends realistic podcast ad traffic to an earshot edge and prints the
/// report the API must then return.
///
/// The edge must take the client from X-Forwarded-For and the country from
/// CloudFront-Viewer-Country (EARSHOT_TRUSTED_PROXY_HOPS=1,
/// EARSHOT_TRUST_CLOUDFRONT=true): each listener is one address and one
/// user agent, sent in those headers.
#[derive(Parser)]
#[command(name = "earshot-traffic", version)]
struct Cli {
    /// The pixel endpoint.
    #[arg(
        long,
        env = "EARSHOT_PIXEL_BASE_URL",
        default_value = "http://127.0.0.1:8787/v1/t"
    )]
    pixel_url: String,
    /// The edge's signing keys (`id:secret,...`); the last one signs. Empty: unsigned URLs.
    #[arg(
        long,
        env = "EARSHOT_SIGNING_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    signing_keys: String,
    /// CAMPAIGN:CREATIVE[,CREATIVE...][@WEIGHT]; repeat for several.
    #[arg(long = "campaign", default_value = "demo-spring-sale:cr_30s,cr_60s")]
    campaigns: Vec<String>,
    /// Base rate, hits per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Send for this many seconds (at the rate, plus the burst).
    #[arg(long, conflicts_with = "total")]
    duration: Option<f64>,
    /// Send exactly this many hits (default 1000 when --duration is not given).
    #[arg(long)]
    total: Option<u64>,
    /// Start a peak this many seconds into the run.
    #[arg(long)]
    burst_at: Option<f64>,
    /// Length of the peak, seconds.
    #[arg(long, default_value_t = 5.0)]
    burst_seconds: f64,
    /// Peak rate as a multiple of the base rate.
    #[arg(long, default_value_t = 10.0)]
    burst_factor: f64,
    /// Same seed, same hits.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Send as fast as concurrency allows, ignoring the rate.
    #[arg(long)]
    unpaced: bool,
    #[arg(long, default_value_t = 500)]
    listeners: u32,
    #[arg(long, default_value_t = 40)]
    bots: u32,
    #[arg(long, default_value_t = 4)]
    shows: u32,
    #[arg(long, default_value_t = 6)]
    episodes_per_show: u32,
    /// Share of ad plays by bots.
    #[arg(long, default_value_t = Mix::default().bot_share)]
    bot_share: f64,
    /// Share of hits with a forged, tampered, unknown-key or missing signature.
    #[arg(long, default_value_t = Mix::default().forged_share)]
    forged_share: f64,
    /// Share of hits fired twice.
    #[arg(long, default_value_t = Mix::default().duplicate_share)]
    duplicate_share: f64,
    /// Share of ad plays with a click.
    #[arg(long, default_value_t = Mix::default().click_rate)]
    click_rate: f64,
    /// Write the expected report (and the run's numbers) as JSON here.
    #[arg(long)]
    expect_out: Option<PathBuf>,
    /// Send nothing; print the report the hits would give today.
    #[arg(long)]
    dry_run: bool,
    /// Send nothing over HTTP: record each hit with the edge's own recorder
    /// into this directory (its directory sink), at a time spread over the
    /// --days days that end now; load it with
    /// `earshot load --once --source dir:DIR`. Edge variables such as
    /// EARSHOT_LISTENER_SECRET are read from the environment.
    #[arg(long, conflicts_with = "dry_run")]
    record_dir: Option<PathBuf>,
    /// With --record-dir: how many days of history the hits make.
    #[arg(long, default_value_t = 90, requires = "record_dir", value_parser = clap::value_parser!(u32).range(1..=400))]
    days: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let keys = SigningKeys::parse(&cli.signing_keys).context("EARSHOT_SIGNING_KEYS")?;
    let campaigns = cli
        .campaigns
        .iter()
        .map(|c| CampaignSpec::parse(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plan = Plan {
        seed: cli.seed,
        campaigns,
        shows: cli.shows,
        episodes_per_show: cli.episodes_per_show,
        listeners: cli.listeners,
        bots: cli.bots,
        mix: Mix {
            bot_share: cli.bot_share,
            forged_share: cli.forged_share,
            duplicate_share: cli.duplicate_share,
            click_rate: cli.click_rate,
            ..Mix::default()
        },
        rate: cli.rate,
        amount: match (cli.duration, cli.total) {
            (Some(s), _) => Amount::Seconds(s),
            (None, n) => Amount::Total(n.unwrap_or(1000)),
        },
        burst: cli.burst_at.map(|at| Burst {
            at,
            seconds: cli.burst_seconds,
            factor: cli.burst_factor,
        }),
        open_plays: (cli.concurrency as u32 * 4).max(8),
    };
    let hits = Generator::all(&plan, &keys)?;
    let last = hits.last().map_or(0.0, |h| h.offset.as_secs_f64());
    eprintln!(
        "earshot-traffic: {} hits over {:.1} s (base {} hits/s{}), seed {}, {} listeners, {} bots, to {}",
        hits.len(),
        last,
        plan.rate,
        plan.burst
            .map(|b| format!(", x{} for {} s at {} s", b.factor, b.seconds, b.at))
            .unwrap_or_default(),
        plan.seed,
        plan.listeners,
        plan.bots,
        match &cli.record_dir {
            Some(dir) => format!("the edge's recorder, into {}", dir.display()),
            None => cli.pixel_url.clone(),
        }
    );
    let today = time::OffsetDateTime::now_utc().date();
    let (expected, run) = if cli.dry_run {
        (
            Expected::compute(hits.iter().map(|h| (h, today))),
            serde_json::json!({"dry_run": true}),
        )
    } else if let Some(dir) = &cli.record_dir {
        let times = earshot_traffic::record::spread(
            &hits,
            time::OffsetDateTime::now_utc(),
            time::Duration::days(cli.days.into()),
        );
        earshot_traffic::record::record(&hits, &times, &cli.signing_keys, dir, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
        .await?;
        let (first, last) = (times.first().copied(), times.last().copied());
        eprintln!(
            "recorded {} hits from {} to {} into {}; load them with `earshot load --once --source dir:{}`",
            hits.len(),
            first.map(|t| t.to_string()).unwrap_or_default(),
            last.map(|t| t.to_string()).unwrap_or_default(),
            dir.display(),
            dir.display()
        );
        (
            Expected::compute(hits.iter().zip(&times).map(|(h, t)| (h, t.date()))),
            serde_json::json!({"recorded": hits.len(), "days": cli.days}),
        )
    } else {
        let opts = SendOptions {
            concurrency: cli.concurrency,
            paced: !cli.unpaced,
            ..SendOptions::new(cli.pixel_url.clone())
        };
        let report = earshot_traffic::send(&hits, &opts).await?;
        let failures = report.failures();
        eprintln!(
            "sent {} hits in {:.1} s ({:.0} hits/s, at most {:.1} s behind schedule): {} answered, {} failed, {} across a UTC midnight",
            hits.len(),
            report.elapsed.as_secs_f64(),
            report.rate(),
            report.max_lag.as_secs_f64(),
            report.answered(),
            failures.len(),
            report.straddled()
        );
        for (i, why) in failures.iter().take(5) {
            eprintln!("  hit {i} failed: {why}");
        }
        let expected = Expected::compute(
            hits.iter()
                .enumerate()
                .filter_map(|(i, h)| report.day_of(i).map(|d| (h, d))),
        );
        let run = serde_json::json!({
            "answered": report.answered(),
            "failed": failures.len(),
            "straddled_midnight": report.straddled(),
            "elapsed_seconds": report.elapsed.as_secs_f64(),
            "hits_per_second": report.rate(),
        });
        (expected, run)
    };
    println!("{}", expected.table());
    if let Some(path) = &cli.expect_out {
        let doc = serde_json::json!({"plan": plan, "run": run, "expected": expected});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if run["failed"].as_u64().unwrap_or(0) > 0 {
        anyhow::bail!("some hits failed: the edge may or may not have recorded them, so the expected report above leaves them out");
    }
    Ok(())
}
