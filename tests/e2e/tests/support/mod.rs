//! A whole earshot stack per test, from real processes: moto (Firehose, S3,
//! SQS, with the S3 → SQS notification), optionally the Firehose
//! fault-injecting proxy, `earshot-edge` in local mode writing to Firehose,
//! `earshot load` on the SQS source, `earshot serve`, a fresh database, and
//! the catalog and keys made with `earshot admin`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context};
use earshot_domain::{TrackingEvent, Verdict};
use earshot_platform::testing::TestDb;
use earshot_testkit::edge::{dead_lettered_events, decode_objects};
use earshot_testkit::s3_notify::{notify_queue_on_object_created, queue_depth};
use earshot_testkit::{ChildProcess, FirehoseFaultProxy, LocalEdge, Moto, ProcessSpec};
use earshot_traffic::{CampaignReport, Counts, Expected, Hit, HitKind, Plan};
use serde_json::Value;

/// A guard against hangs, never a speed assertion: every wait polls for an
/// exact condition and gives up only after this long.
pub const PATIENCE: Duration = Duration::from_secs(300);

pub const BUCKET: &str = "earshot-events-e2e";
pub const STREAM: &str = "earshot-edge-e2e";
pub const QUEUE: &str = "earshot-events-e2e";
/// Firehose's S3 prefix; moto appends `YYYY/MM/DD/HH/` itself, as the SAM
/// template's `!{timestamp:…}` prefix does on AWS.
pub const PREFIX: &str = "events/";
/// Two keys, as during a rotation: the newest signs, both verify.
pub const SIGNING_KEYS: &str =
    "e2e-2025:old-e2e-secret-0123456789,e2e-2026:new-e2e-secret-0123456789";
pub const LISTENER_SECRET: &str = "e2e-listener-secret-0123456789";
/// Seconds before a received but unacknowledged notification (a killed
/// loader's) is handed out again: short, so a restart picks it up soon.
pub const VISIBILITY_TIMEOUT_S: u32 = 5;

// ------------------------------------------------------------- binaries

/// The real binaries the tests run.
pub struct Bins {
    pub edge: PathBuf,
    pub earshot: PathBuf,
}

/// `earshot-edge` and `earshot`, from the target directory this test was
/// built in. Cargo gives `CARGO_BIN_EXE_*` only to a package's own tests,
/// and artifact dependencies are unstable, so they are found next to this
/// test executable (`<target>/<profile>/deps/…` → `<target>/<profile>/`).
/// `cargo test --workspace` and `cargo nextest run --workspace` (what
/// `scripts/test` runs) build them before any test runs. When one is
/// missing, or older than a source file it is built from (`cargo test -p
/// earshot-e2e` after an edit), the test builds them first with `cargo
/// build -p earshot-edge -p earshot` in the same profile and target
/// directory. `EARSHOT_E2E_EDGE_BIN` and `EARSHOT_E2E_EARSHOT_BIN` override both.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| locate_or_build().unwrap_or_else(|e| panic!("{e:#}")))
}

fn locate_or_build() -> anyhow::Result<Bins> {
    if let (Some(edge), Some(earshot)) = (
        std::env::var_os("EARSHOT_E2E_EDGE_BIN"),
        std::env::var_os("EARSHOT_E2E_EARSHOT_BIN"),
    ) {
        return Ok(Bins {
            edge: edge.into(),
            earshot: earshot.into(),
        });
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .with_context(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?
        .to_owned();
    let bins = Bins {
        edge: profile_dir.join("earshot-edge"),
        earshot: profile_dir.join("earshot"),
    };
    let built_at = [&bins.edge, &bins.earshot]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min());
    let newest_source = newest_source_change();
    let fresh = matches!((built_at, newest_source), (Some(b), Some(s)) if b >= s);
    if !fresh {
        let target_dir = profile_dir.parent().context("target dir")?;
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!(
            "e2e: building earshot-edge and earshot ({profile}) into {}",
            target_dir.display()
        );
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "earshot-edge",
                "-p",
                "earshot",
                "--profile",
                &profile,
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(repo_root())
            .status()
            .context("running cargo build")?;
        ensure!(
            status.success(),
            "cargo build -p earshot-edge -p earshot failed: {status}"
        );
    }
    for p in [&bins.edge, &bins.earshot] {
        ensure!(p.exists(), "{} is missing after the build", p.display());
    }
    Ok(bins)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The newest modification among the sources the two binaries are built
/// from (Rust sources of their crates and the migrations). Manifests and
/// tests are left out: changing them does not relink the binaries.
fn newest_source_change() -> Option<SystemTime> {
    let root = repo_root();
    let mut newest: Option<SystemTime> = None;
    let mut stack: Vec<PathBuf> = ["shared/src", "functions/edge/src", "migrations"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    if let Ok(rd) = std::fs::read_dir(root.join("services")) {
        stack.extend(rd.flatten().map(|e| e.path().join("src")));
    }
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("rs" | "sql")) {
                if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                    newest = Some(newest.map_or(t, |n| n.max(t)));
                }
            }
        }
    }
    newest
}

// ---------------------------------------------------------------- stack

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    Sync,
    Buffered { max_events: usize, max_age_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    pub flush: Flush,
    /// Route the edge's Firehose calls through a [`FirehoseFaultProxy`].
    pub firehose_proxy: bool,
}

/// The loader's last words, kept when it is replaced.
struct PastProcess {
    label: String,
    output: String,
}

pub struct Stack {
    pub moto: Moto,
    pub db: TestDb,
    pub proxy: Option<FirehoseFaultProxy>,
    pub edge: Option<LocalEdge>,
    pub loader: Option<ChildProcess>,
    pub api: ChildProcess,
    pub api_url: String,
    pub queue_url: String,
    pub advertiser_key: String,
    pub admin_key: String,
    past: Vec<PastProcess>,
    opts: StackOptions,
}

fn env_pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The last `n` lines of a process's output, for failure messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut s = String::new();
    if from > 0 {
        s.push_str(&format!("… ({from} lines before)\n"));
    }
    s.push_str(&lines[from..].join("\n"));
    s
}

impl Stack {
    /// Starts everything and creates the campaigns of `plan` (one
    /// advertiser, one key for it, one admin key).
    pub async fn start(plan: &Plan, opts: StackOptions) -> anyhow::Result<Self> {
        let bins = bins();
        let moto = Moto::start().await?;
        moto.create_firehose_to_s3(STREAM, BUCKET, PREFIX).await?;
        let queue_url =
            notify_queue_on_object_created(&moto, BUCKET, QUEUE, VISIBILITY_TIMEOUT_S).await?;
        let db = TestDb::new().await;
        let proxy = if opts.firehose_proxy {
            Some(FirehoseFaultProxy::start(moto.endpoint()).await?)
        } else {
            None
        };
        let api = ChildProcess::spawn(&ProcessSpec::new(&bins.earshot).arg("serve").envs(
            env_pairs(&[
                ("DATABASE_URL", &db.url),
                ("REDIS_URL", &redis_url()),
                ("EARSHOT_API_ADDR", "127.0.0.1:0"),
                ("EARSHOT_SIGNING_KEYS", SIGNING_KEYS),
                ("RUST_LOG", "info,sqlx=warn"),
            ]),
        ))?;
        let port: u16 = api
            .wait_for_stderr(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["message"] == "earshot API listening")
                    .then(|| v["port"].as_u64())??
                    .try_into()
                    .ok()
            })
            .await
            .context("waiting for earshot serve to listen")?;
        let mut stack = Self {
            moto,
            db,
            proxy,
            edge: None,
            loader: None,
            api,
            api_url: format!("http://127.0.0.1:{port}"),
            queue_url,
            advertiser_key: String::new(),
            admin_key: String::new(),
            past: Vec::new(),
            opts,
        };
        stack.create_catalog(plan).await?;
        stack.start_edge().await?;
        stack.start_loader()?;
        Ok(stack)
    }

    /// `earshot ARGS` against this stack's database; its last stdout line.
    pub async fn earshot(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut p = ChildProcess::spawn(
            &ProcessSpec::new(&bins().earshot)
                .args(args.iter().copied())
                .envs(env_pairs(&[
                    ("DATABASE_URL", &self.db.url),
                    ("RUST_LOG", "warn"),
                ])),
        )?;
        let status = tokio::time::timeout(PATIENCE, p.wait())
            .await
            .with_context(|| format!("earshot {args:?} hung"))??;
        ensure!(
            status.success(),
            "earshot {args:?}: {status}\n{}",
            p.output_text()
        );
        p.stdout_lines()
            .last()
            .cloned()
            .with_context(|| format!("earshot {args:?} printed nothing"))
    }

    async fn create_catalog(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let advertiser = self
            .earshot(&["admin", "advertiser", "create", "E2E Audio Co"])
            .await?;
        for c in &plan.campaigns {
            self.earshot(&[
                "admin",
                "campaign",
                "create",
                "--advertiser",
                &advertiser,
                &c.id,
            ])
            .await?;
            for cr in &c.creatives {
                self.earshot(&["admin", "creative", "create", "--campaign", &c.id, cr])
                    .await?;
            }
        }
        self.advertiser_key = self
            .earshot(&[
                "admin",
                "key",
                "create",
                "--advertiser",
                &advertiser,
                "--name",
                "e2e",
            ])
            .await?;
        self.admin_key = self
            .earshot(&["admin", "key", "create", "--admin", "--name", "e2e-admin"])
            .await?;
        Ok(())
    }

    async fn start_edge(&mut self) -> anyhow::Result<()> {
        let endpoint = match &self.proxy {
            Some(p) => p.endpoint(),
            None => self.moto.endpoint().to_owned(),
        };
        let mut env = earshot_testkit::moto::aws_env(&endpoint);
        env.extend(env_pairs(&[
            ("EARSHOT_SINK", "firehose"),
            ("EARSHOT_FIREHOSE_STREAM", STREAM),
            ("EARSHOT_LISTENER_SECRET", LISTENER_SECRET),
            ("EARSHOT_SIGNING_KEYS", SIGNING_KEYS),
            ("EARSHOT_TRUSTED_PROXY_HOPS", "1"),
            ("EARSHOT_TRUST_CLOUDFRONT", "true"),
        ]));
        match self.opts.flush {
            Flush::Sync => env.extend(env_pairs(&[("EARSHOT_FLUSH", "sync")])),
            Flush::Buffered {
                max_events,
                max_age_ms,
            } => env.extend(env_pairs(&[
                ("EARSHOT_FLUSH", "buffered"),
                ("EARSHOT_BUFFER_MAX_EVENTS", &max_events.to_string()),
                ("EARSHOT_BUFFER_MAX_AGE_MS", &max_age_ms.to_string()),
            ])),
        }
        self.edge = Some(LocalEdge::spawn(&bins().edge, env).await?);
        Ok(())
    }

    /// `http://127.0.0.1:PORT/v1/t`
    pub fn pixel_url(&self) -> String {
        format!(
            "{}/v1/t",
            self.edge.as_ref().expect("the edge runs").base_url()
        )
    }

    /// Starts `earshot load` on the SQS source (long-running).
    pub fn start_loader(&mut self) -> anyhow::Result<()> {
        let mut env = self.moto.aws_env();
        env.extend(env_pairs(&[
            ("DATABASE_URL", &self.db.url),
            ("RUST_LOG", "info,sqlx=warn"),
            ("EARSHOT_LOADER_ADDR", "127.0.0.1:0"),
            // As deployed: only the events bucket and prefix are read.
            ("EARSHOT_EVENTS_BUCKET", BUCKET),
            ("EARSHOT_EVENTS_PREFIX", PREFIX),
        ]));
        let spec = ProcessSpec::new(&bins().earshot)
            .args(["load", "--source", &format!("sqs:{}", self.queue_url)])
            .envs(env);
        self.loader = Some(ChildProcess::spawn(&spec)?);
        Ok(())
    }

    /// SIGKILL: no chance to finish the object in hand or to acknowledge.
    pub async fn kill_loader(&mut self) -> anyhow::Result<()> {
        let mut p = self.loader.take().context("no loader running")?;
        let status = p.kill().await?;
        self.past.push(PastProcess {
            label: format!("killed loader ({status})"),
            output: p.output_text(),
        });
        Ok(())
    }

    /// Objects the loader has committed.
    pub async fn ledger_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM loaded_objects")
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// SIGTERM to the edge: it delivers what it holds and exits. Returns
    /// what its metrics said it recorded, and the events it dead-lettered.
    pub async fn stop_edge(&mut self) -> anyhow::Result<EdgeTally> {
        let mut edge = self.edge.take().context("the edge is not running")?;
        let stopped = edge.stop().await;
        let stdout = edge.process.stdout_lines();
        let stderr = edge.process.stderr_lines();
        self.past.push(PastProcess {
            label: "edge".into(),
            output: edge.process.output_text(),
        });
        stopped?;
        let mut tally = EdgeTally::default();
        for line in &stdout {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v.get("_aws").is_none() {
                continue;
            }
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            tally.valid += n("HitsValid");
            tally.bot += n("HitsBot");
            tally.invalid += n("HitsInvalid");
            tally.firehose_retries += n("FirehoseRetries");
            tally.dead_lettered += n("DeadLetteredEvents");
        }
        tally.dead_letters = dead_lettered_events(&stderr)?;
        Ok(tally)
    }

    /// Every event in S3 (after the edge stopped, this is final), and the
    /// number of objects.
    pub async fn events_in_s3(&self) -> anyhow::Result<(usize, Vec<TrackingEvent>)> {
        let objects = self.moto.read_all_objects(BUCKET, PREFIX).await?;
        Ok((objects.len(), decode_objects(&objects)?))
    }

    /// Waits until the loader has taken in everything S3 holds: every
    /// object in the ledger, every distinct event in `events`, and no
    /// notification left on the queue (visible or in flight).
    pub async fn wait_drained(&self, objects: usize, distinct_events: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ledger = self.ledger_count().await?;
            let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                .fetch_one(&self.db.pool)
                .await?;
            let depth = queue_depth(&self.moto, &self.queue_url).await?;
            if ledger == objects as i64 && events == distinct_events as i64 && depth == (0, 0) {
                return Ok(());
            }
            ensure!(
                ledger <= objects as i64 && events <= distinct_events as i64,
                "the database holds more than S3: {ledger} objects (S3 {objects}), {events} events (S3 {distinct_events})\n{}",
                self.logs()
            );
            if let Some(l) = &self.loader {
                ensure!(
                    l.stderr_lines().len() < 1_000_000,
                    "the loader is logging without end\n{}",
                    self.logs()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the loader did not drain: ledger {ledger}/{objects} objects, {events}/{distinct_events} events, queue (visible, in flight) {depth:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `GET /v1/campaigns/{campaign}/report?{query}` with the advertiser's key.
    pub async fn report(&self, campaign: &str, query: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/campaigns/{campaign}/report?{query}", self.api_url);
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(&url)
            .bearer_auth(&self.advertiser_key)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.text().await?;
        ensure!(
            status == 200,
            "GET {url}: {status}\n{body}\n{}",
            self.logs()
        );
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// The API's report for every campaign of `expected`, by day and
    /// creative, by creative in total, and the totals; compared with what
    /// the generator expects, row by row.
    pub async fn assert_reports_equal(&self, expected: &Expected) -> anyhow::Result<()> {
        let (Some(first), Some(last)) = (&expected.first_day, &expected.last_day) else {
            bail!("nothing was expected");
        };
        let to = time::Date::parse(
            last,
            &time::macros::format_description!("[year]-[month]-[day]"),
        )?
        .next_day()
        .context("a day after the last")?;
        let to = earshot_traffic::expected::day_string(to);
        let mut problems = Vec::new();
        for (campaign, want) in &expected.campaigns {
            let range = format!("from={first}&to={to}&group_by=creative");
            let by_day = self
                .report(campaign, &format!("{range}&granularity=day"))
                .await?;
            let total = self
                .report(campaign, &format!("{range}&granularity=total"))
                .await?;
            let got = CampaignReport {
                by_day: rows_by_day(&by_day)?,
                by_creative: rows_by_creative(&total)?,
                totals: counts_of(&by_day["totals"])?,
            };
            ensure!(
                counts_of(&total["totals"])? == got.totals,
                "{campaign}: totals differ between granularity=day and total"
            );
            diff_reports(campaign, want, &got, &mut problems);
        }
        ensure!(
            problems.is_empty(),
            "the API's reports differ from the generator's:\n{}\n\nexpected:\n{}",
            problems.join("\n"),
            expected.table()
        );
        Ok(())
    }

    /// Every process's output (the tail of it), for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let mut add = |label: &str, text: &str| {
            s.push_str(&format!("\n===== {label} =====\n{}\n", tail(text, 60)));
        };
        for p in &self.past {
            add(&p.label, &p.output);
        }
        if let Some(e) = &self.edge {
            add("edge", &e.process.output_text());
        }
        if let Some(l) = &self.loader {
            add("loader", &l.output_text());
        }
        add("api", &self.api.output_text());
        add("moto", &self.moto.output_text());
        if let Some(p) = &self.proxy {
            s.push_str(&format!(
                "\n===== firehose proxy =====\n{:?}\n",
                summarize(&p.stats())
            ));
        }
        s
    }
}

fn summarize(s: &earshot_testkit::ProxyStats) -> String {
    format!(
        "calls {} (throttled {}), records received {}, forwarded {}, failed {}, other calls {}",
        s.put_record_batch_calls,
        s.throttled_calls,
        s.records_received,
        s.records_forwarded,
        s.records_failed,
        s.other_calls
    )
}

/// What the edge's metrics (EMF lines on stdout) and logs said.
#[derive(Debug, Default)]
pub struct EdgeTally {
    pub valid: u64,
    pub bot: u64,
    pub invalid: u64,
    pub firehose_retries: u64,
    pub dead_lettered: u64,
    pub dead_letters: Vec<TrackingEvent>,
}

impl EdgeTally {
    pub fn hits(&self) -> u64 {
        self.valid + self.bot + self.invalid
    }
}

// ------------------------------------------------------------ reports

fn counts_of(v: &Value) -> anyhow::Result<Counts> {
    Counts::from_fn(|f| {
        v[f].as_u64()
            .with_context(|| format!("{f} is not a count in {v}"))
    })
}

fn rows(report: &Value) -> anyhow::Result<&Vec<Value>> {
    ensure!(
        report["next_page_token"].is_null(),
        "the report has more than one page"
    );
    report["rows"].as_array().context("rows")
}

fn rows_by_day(report: &Value) -> anyhow::Result<BTreeMap<String, BTreeMap<String, Counts>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
    for r in rows(report)? {
        let bucket = r["bucket"].as_str().context("bucket")?;
        let day = bucket
            .strip_suffix("T00:00:00Z")
            .with_context(|| format!("day bucket {bucket}"))?;
        out.entry(day.to_owned())
            .or_default()
            .insert(creative_of(r)?, counts_of(r)?);
    }
    Ok(out)
}

fn rows_by_creative(report: &Value) -> anyhow::Result<BTreeMap<String, Counts>> {
    rows(report)?
        .iter()
        .map(|r| Ok((creative_of(r)?, counts_of(r)?)))
        .collect()
}

/// A report row's creative: null is the row of no creative (invalid hits,
/// which roll up under their campaign alone), '' in the expectation.
fn creative_of(row: &Value) -> anyhow::Result<String> {
    match &row["creative"] {
        Value::Null => Ok(String::new()),
        c => Ok(c.as_str().context("creative")?.to_owned()),
    }
}

fn diff_counts(what: &str, want: Option<&Counts>, got: Option<&Counts>, out: &mut Vec<String>) {
    if want == got {
        return;
    }
    let (w, g) = (
        want.cloned().unwrap_or_default(),
        got.cloned().unwrap_or_default(),
    );
    let fields: Vec<String> = Counts::fields()
        .iter()
        .zip(w.values().iter().zip(g.values()))
        .filter(|(_, (a, b))| a != b)
        .map(|(f, (a, b))| format!("{f}: expected {a}, got {b}"))
        .collect();
    let presence = match (want, got) {
        (None, Some(_)) => " (row not expected)",
        (Some(_), None) => " (row missing)",
        _ => "",
    };
    out.push(format!("{what}{presence}: {}", fields.join(", ")));
}

fn diff_reports(
    campaign: &str,
    want: &CampaignReport,
    got: &CampaignReport,
    out: &mut Vec<String>,
) {
    let days: HashSet<&String> = want.by_day.keys().chain(got.by_day.keys()).collect();
    let mut days: Vec<_> = days.into_iter().collect();
    days.sort();
    for day in days {
        let (w, g) = (want.by_day.get(day), got.by_day.get(day));
        let crs: HashSet<&String> = w.into_iter().chain(g).flat_map(|m| m.keys()).collect();
        let mut crs: Vec<_> = crs.into_iter().collect();
        crs.sort();
        for cr in crs {
            diff_counts(
                &format!("{campaign} {day} {cr}"),
                w.and_then(|m| m.get(cr)),
                g.and_then(|m| m.get(cr)),
                out,
            );
        }
    }
    let crs: HashSet<&String> = want
        .by_creative
        .keys()
        .chain(got.by_creative.keys())
        .collect();
    let mut crs: Vec<_> = crs.into_iter().collect();
    crs.sort();
    for cr in crs {
        diff_counts(
            &format!("{campaign} total {cr}"),
            want.by_creative.get(cr),
            got.by_creative.get(cr),
            out,
        );
    }
    diff_counts(
        &format!("{campaign} totals"),
        Some(&want.totals),
        Some(&got.totals),
        out,
    );
}

// ------------------------------------------------------------- checks

/// Matches the events in S3 to the hits, one to one by trace id, checks
/// each verdict against what the hit was, and returns the day the edge
/// gave each hit (by position in `hits`).
pub fn match_hits(hits: &[Hit], events: &[TrackingEvent]) -> anyhow::Result<Vec<time::Date>> {
    let by_trace: HashMap<&str, usize> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trace_id.as_str(), i))
        .collect();
    let mut day: Vec<Option<time::Date>> = vec![None; hits.len()];
    let mut ids = HashSet::new();
    let mut problems = Vec::new();
    for e in events {
        if !ids.insert(e.id) {
            // Firehose delivered a record twice (a retried call that had
            // in fact succeeded): the loader keeps the id once.
            continue;
        }
        let trace = e.trace_id.as_deref().unwrap_or("");
        let Some(&i) = by_trace.get(trace) else {
            problems.push(format!("event {} has an unknown trace id {trace:?}", e.id));
            continue;
        };
        if day[i].replace(e.ts.date()).is_some() {
            problems.push(format!("hit {i} ({trace}) has two events"));
        }
        let h = &hits[i];
        let want = match h.kind {
            HitKind::Valid => (Verdict::Valid, None),
            HitKind::Bot => (
                Verdict::Bot,
                earshot_traffic::agents::BOTS
                    .iter()
                    .find(|b| b.user_agent == h.user_agent)
                    .map(|b| b.reason),
            ),
            HitKind::Forged(f) => (Verdict::Invalid, Some(f.reason())),
        };
        if (e.verdict, e.reason.as_deref()) != want
            || e.campaign.as_ref().map(|c| c.as_str()) != Some(h.campaign.as_str())
            || e.creative.as_ref().map(|c| c.as_str()) != Some(h.creative.as_str())
            || e.event != Some(h.event)
        {
            problems.push(format!(
                "hit {i} ({:?} {} {} {}) was recorded as {:?} {:?} {:?} {:?} {:?}",
                h.kind,
                h.campaign,
                h.creative,
                h.event,
                e.verdict,
                e.reason,
                e.campaign,
                e.creative,
                e.event
            ));
        }
    }
    let missing: Vec<usize> = day
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(i, _)| i)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} hits have no event in S3, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    ensure!(
        problems.is_empty(),
        "S3 does not hold exactly one event per hit:\n{}",
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(day.into_iter().map(|d| d.expect("checked")).collect())
}

/// The report the hits must produce, each on the day the edge gave it.
pub fn expected_for(hits: &[Hit], days: &[time::Date]) -> Expected {
    Expected::compute(hits.iter().zip(days.iter().copied()))
}
