//! Reach sketches and the frequency sample of a large campaign, for the
//! reach benchmark of `scripts/bench api`.
//!
//! ```sh
//! cargo run --release -p earshot-reporting --example seed_reach -- \
//!     --campaign bench --from 2026-09-01 --days 90 --listeners 10000000 \
//!     --seed 1 --out DIR
//! ```
//!
//! Writes `DIR/reach_sketches.copy` and `DIR/frequency_sample.copy`, COPY
//! text in the columns of those tables, as the loader would have left them
//! after `--days` days of a campaign heard by exactly `--listeners`
//! distinct listeners (monthly listener ids, the default period):
//!
//! - each listener is heard on 1 day (60%), 2 (20%), 3–5 (10%), 6–10 (7%)
//!   or 11–30 (3%) days of the range, drawn at random, 2.6 on average, and
//!   on each of them once (85%) or twice;
//! - each hearing is of one of 5 creatives (`cr1`..`cr5`, as the rollups
//!   of the benchmark), and each listener lives in one of 20 countries
//!   (skewed to the first);
//! - one sketch per day for the campaign, each creative and each country;
//!   the frequency sample holds the counted impressions of the listeners
//!   [`in_frequency_sample`], per day.
//!
//! It prints the exact figures a report must approximate: distinct
//! listeners, listener-days and impressions.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use earshot_platform::sketch::{
    in_frequency_sample, listener_hash, Sketch, DIM_CAMPAIGN, DIM_COUNTRY, DIM_CREATIVE,
};
use time::{Date, Duration};

const CREATIVES: [&str; 5] = ["cr1", "cr2", "cr3", "cr4", "cr5"];
/// The countries of `scripts/bench api`'s rollups.
const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "ES", "IT", "BR", "MX", "IN", "JP", "IE", "NZ",
    "NO", "DK", "FI", "BE",
];
/// Days a listener is heard on: (share in percent, fewest, most).
const DAYS_HEARD: [(u32, usize, usize); 5] =
    [(60, 1, 1), (20, 2, 2), (10, 3, 5), (7, 6, 10), (3, 11, 30)];

struct Args {
    campaign: String,
    from: Date,
    days: usize,
    listeners: u64,
    seed: u64,
    out: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut campaign = "bench".to_owned();
    let mut from = None;
    let mut days = 90;
    let mut listeners = 10_000_000;
    let mut seed = 1;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--campaign" => campaign = value()?,
            "--from" => {
                from = Some(Date::parse(
                    &value()?,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )?)
            }
            "--days" => days = value()?.parse()?,
            "--listeners" => listeners = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--out" => out = Some(PathBuf::from(value()?)),
            other => anyhow::bail!(
                "unknown flag {other}; usage: seed_reach --from YYYY-MM-DD --out DIR \
                 [--campaign bench] [--days 90] [--listeners 10000000] [--seed 1]"
            ),
        }
    }
    Ok(Args {
        campaign,
        from: from.ok_or_else(|| anyhow::anyhow!("--from YYYY-MM-DD is required"))?,
        days,
        listeners,
        seed,
        out: out.ok_or_else(|| anyhow::anyhow!("--out DIR is required"))?,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    anyhow::ensure!(
        args.days >= 30,
        "--days must be at least 30 (a listener's most)"
    );
    std::fs::create_dir_all(&args.out)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);

    // Per (day, dim, value), the day's listeners.
    let mut sketches: HashMap<(usize, &str, &str), Sketch> = HashMap::new();
    let mut sample = BufWriter::new(std::fs::File::create(
        args.out.join("frequency_sample.copy"),
    )?);
    let (mut listener_days, mut impressions) = (0u64, 0u64);
    let mut heard: Vec<usize> = Vec::with_capacity(30);
    for n in 0..args.listeners {
        let id = format!(
            "{:032x}",
            u128::from(n) * 0x9e37_79b9_7f4a_7c15 + u128::from(args.seed)
        );
        let hash = listener_hash(&id);
        let country = COUNTRIES[(rng.f64().powi(2) * COUNTRIES.len() as f64) as usize];
        let pick = rng.u32(..100);
        let mut acc = 0;
        let &(_, fewest, most) = DAYS_HEARD
            .iter()
            .find(|(share, _, _)| {
                acc += share;
                pick < acc
            })
            .expect("shares sum to 100");
        heard.clear();
        let want = rng.usize(fewest..=most);
        while heard.len() < want {
            let d = rng.usize(..args.days);
            if !heard.contains(&d) {
                heard.push(d);
            }
        }
        for &d in &heard {
            let times = if rng.u8(..100) < 85 { 1 } else { 2 };
            for _ in 0..times {
                let creative = CREATIVES[rng.usize(..CREATIVES.len())];
                sketches
                    .entry((d, DIM_CREATIVE, creative))
                    .or_default()
                    .insert(hash);
            }
            sketches
                .entry((d, DIM_CAMPAIGN, ""))
                .or_default()
                .insert(hash);
            sketches
                .entry((d, DIM_COUNTRY, country))
                .or_default()
                .insert(hash);
            listener_days += 1;
            impressions += times;
            if in_frequency_sample(hash) {
                let day = args.from + Duration::days(d as i64);
                writeln!(sample, "{}\t{day}\t{id}\t{times}", args.campaign)?;
            }
        }
    }
    sample.flush()?;

    let mut out = BufWriter::new(std::fs::File::create(args.out.join("reach_sketches.copy"))?);
    let mut keys: Vec<_> = sketches.keys().copied().collect();
    keys.sort_unstable();
    let mut hex = String::new();
    for key @ (d, dim, value) in keys {
        let day = args.from + Duration::days(d as i64);
        hex.clear();
        for b in sketches[&key].to_bytes() {
            write!(hex, "{b:02x}")?;
        }
        // COPY text: a bytea in hex form, its backslash escaped; monthly ids.
        writeln!(
            out,
            "{}\t{day}\t{dim}\t{value}\t\\\\x{hex}\tf\tt",
            args.campaign
        )?;
    }
    out.flush()?;
    println!(
        "{} distinct listeners, {listener_days} listener-days, {impressions} impressions over {} days from {}; {} sketches",
        args.listeners,
        args.days,
        args.from,
        sketches.len()
    );
    Ok(())
}
