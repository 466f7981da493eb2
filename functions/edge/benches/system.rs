//! Whole-binary figures for the edge, each against a baseline measured in
//! the same run:
//!
//! - init: process start to the runtime's first `/invocation/next` poll
//!   under the Lambda Runtime API emulator (median of ≥ 20 runs; goal ≤ 15 ms);
//! - local HTTP throughput of `GET /v1/t` vs `GET /healthz` in the same
//!   binary, with wrk on loopback (goal ≥ 0.8×);
//! - Firehose billed bytes per event, buffered vs one event per record,
//!   counted at the network by the fault proxy in front of moto (goal ≤ 0.15×);
//! - the binary's size.
//!
//! `cargo bench -p earshot-edge --bench system` (release build of the binary).
//! `EARSHOT_EDGE_BIN` measures another build of it instead (scripts/bench edge
//! uses that for the `AWS_LC_SYS_NO_JITTER_ENTROPY=1` variant);
//! `EARSHOT_BENCH_ONLY=init,http,billing,size` picks sections. Needs moto
//! (see earshot-testkit) and `wrk` on PATH.

use std::path::{Path, PathBuf};

use earshot_edge::sink::firehose::billed_bytes;
use earshot_testkit::edge::{
    mixed_hits, send_concurrently, send_sequentially, signed_query, BENCH_LISTENER_SECRET,
    BENCH_SIGNING_KEYS,
};
use earshot_testkit::{FirehoseFaultProxy, LambdaRuntimeEmulator, LocalEdge, Moto};

const INIT_RUNS: usize = 25;
const WRK_ROUNDS: usize = 8;
const WRK_SECONDS: u32 = 3;
const WRK_CONNECTIONS: u32 = 32;
const BILLING_HITS: usize = 600;
const UA: &str = "Podcasts/1650.20 CFNetwork/1333.0.4 Darwin/21.5.0";

fn edge_bin() -> PathBuf {
    std::env::var_os("EARSHOT_EDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_earshot-edge")))
}

fn wanted(section: &str) -> bool {
    match std::env::var("EARSHOT_BENCH_ONLY") {
        Ok(v) if !v.is_empty() => v.split(',').any(|s| s.trim() == section),
        _ => true,
    }
}

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    (v[n / 4], v[n / 2], v[(3 * n) / 4])
}

/// Environment variables for a child process.
type Env = Vec<(String, String)>;

fn kv(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ---------------------------------------------------------------- init

async fn init_once(bin: &Path, env: &[(String, String)]) -> f64 {
    let emulator = LambdaRuntimeEmulator::start("earshot-edge").await.unwrap();
    let mut f = emulator.spawn_function(bin, env.to_vec()).unwrap();
    let d = f.wait_ready().await.expect("the function starts");
    f.shutdown().await.unwrap();
    d.as_secs_f64() * 1e3
}

/// Process start to the end of the first invocation (init, the handler, and
/// in sync mode the first PutRecordBatch, to moto over plain HTTP).
async fn first_invoke_once(bin: &Path, env: &[(String, String)], event: &serde_json::Value) -> f64 {
    let emulator = LambdaRuntimeEmulator::start("earshot-edge").await.unwrap();
    let mut f = emulator.spawn_function(bin, env.to_vec()).unwrap();
    let resp = f.invoke(event).await.expect("first invocation");
    let d = f.spawned_at().elapsed();
    assert_eq!(resp["statusCode"], 200);
    f.shutdown().await.unwrap();
    d.as_secs_f64() * 1e3
}

/// Baseline: the same binary started and stopped by a configuration error
/// (EARSHOT_LISTENER_SECRET missing under Lambda): exec, the dynamic loader,
/// the tokio runtime and logging, without building the app.
async fn exec_baseline_once(bin: &Path) -> f64 {
    let spec = earshot_testkit::ProcessSpec::new(bin)
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("EARSHOT_FIREHOSE_STREAM", "x");
    let t = std::time::Instant::now();
    let mut p = earshot_testkit::ChildProcess::spawn(&spec).unwrap();
    let status = p.wait().await.unwrap();
    let d = t.elapsed();
    assert!(!status.success());
    d.as_secs_f64() * 1e3
}

fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn init_row(name: &str, v: Vec<f64>, baseline: Option<f64>) -> f64 {
    let (p25, med, p75) = quartiles(v);
    let ratio = baseline.map_or(String::new(), |b| format!("  {:.2}× baseline", med / b));
    println!("  {name:<48} median {med:>6.2} ms  (p25 {p25:.2}, p75 {p75:.2}){ratio}");
    med
}

async fn init_section(bin: &Path) {
    println!("init: process start → first /runtime/invocation/next, {INIT_RUNS} runs each");
    let mut base = kv(&[
        ("EARSHOT_FIREHOSE_STREAM", "earshot-events"),
        ("EARSHOT_LISTENER_SECRET", BENCH_LISTENER_SECRET),
        ("EARSHOT_SIGNING_KEYS", BENCH_SIGNING_KEYS),
    ]);
    // As under Lambda: credentials and region, no custom endpoint (so the
    // Firehose client trusts the AWS roots, EARSHOT_TLS_ROOTS=aws). Nothing
    // is called at init.
    base.extend(
        earshot_testkit::moto::aws_env("http://127.0.0.1:9")
            .into_iter()
            .filter(|(k, _)| k != "AWS_ENDPOINT_URL"),
    );
    let mut cases: Vec<(&str, &str, Env)> = vec![
        ("sync", "sync, compiled-in OPAWG lists", base.clone()),
        ("buffered", "buffered (+ shutdown extension)", {
            let mut e = base.clone();
            e.push(("EARSHOT_FLUSH".into(), "buffered".into()));
            e
        }),
    ];
    cases.push((
        "system_roots",
        "sync, host certificate store (EARSHOT_TLS_ROOTS=system)",
        {
            let mut e = base.clone();
            e.push(("EARSHOT_TLS_ROOTS".into(), "system".into()));
            e
        },
    ));
    // What the lists cost: the same start with 8 patterns in place of ~950.
    cases.push(
        ("tiny_lists", "sync, 8-pattern lists (opawg-mini folder)", {
            let mut e = base.clone();
            let dir = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata/opawg-mini"
            );
            e.push(("EARSHOT_UA_PATTERNS_DIR".into(), dir.into()));
            e
        }),
    );
    // The same lists read from a folder at start (EARSHOT_UA_PATTERNS_DIR).
    cases.push((
        "patterns_dir",
        "sync, OPAWG lists from EARSHOT_UA_PATTERNS_DIR",
        {
            let mut e = base.clone();
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/opawg");
            e.push(("EARSHOT_UA_PATTERNS_DIR".into(), dir.into()));
            e
        },
    ));
    // A warm-up run each: the first exec pays for the page cache.
    exec_baseline_once(bin).await;
    for (_, _, env) in &cases {
        init_once(bin, env).await;
    }
    let mut v = Vec::new();
    for _ in 0..INIT_RUNS {
        v.push(exec_baseline_once(bin).await);
    }
    let baseline = init_row("baseline: exec → exit on a config error", v, None);
    println!("RESULT init_exec_baseline_ms {baseline:.2}");
    for (key, name, env) in &cases {
        let mut v = Vec::new();
        for _ in 0..INIT_RUNS {
            v.push(init_once(bin, env).await);
        }
        let med = init_row(name, v, Some(baseline));
        println!(
            "RESULT init_{key}_ms {med:.2}  (goal ≤ 15 ms: {})",
            if med <= 15.0 { "meets" } else { "MISSES" }
        );
    }

    // The cold start as a caller sees it: init plus the first hit, whose
    // sync-mode PutRecordBatch is the process's first AWS call.
    let moto = Moto::start().await.expect("moto");
    moto.create_firehose_to_s3("earshot-events", "earshot-raw", "events/")
        .await
        .unwrap();
    let mut env = base.clone();
    env.retain(|(k, _)| !k.starts_with("AWS_"));
    env.extend(moto.aws_env());
    let event = fixture("function-url-get.json");
    first_invoke_once(bin, &env, &event).await;
    let mut v = Vec::new();
    for _ in 0..INIT_RUNS {
        v.push(first_invoke_once(bin, &env, &event).await);
    }
    let med = init_row(
        "cold start + first sync hit (Firehose = moto)",
        v,
        Some(baseline),
    );
    println!("RESULT cold_first_hit_ms {med:.2}");
    println!();
}

// ---------------------------------------------------------------- http

fn signed_pixel_path() -> String {
    let q = "c=spring-sale-2026&cr=cr_30s_v2&ep=ep-101&sh=dailytech&pos=mid&ev=impression";
    format!(
        "/v1/t?{}&cb=1700000000",
        signed_query(BENCH_SIGNING_KEYS, q)
    )
}

/// Requests per second and requests served, from wrk's summary; fails on
/// any non-2xx answer.
fn wrk(url: &str) -> (f64, f64) {
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{WRK_SECONDS}s"),
            "-H",
            &format!("User-Agent: {UA}"),
            url,
        ])
        .output()
        .expect("wrk on PATH (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(!text.contains("Non-2xx"), "errors under load: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output: {text}"));
    // "  123456 requests in 3.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output: {text}"));
    (rps, requests)
}

/// CPU seconds (user + system) process `pid` has used, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name is in parentheses and may hold spaces: count from
    // after its closing one, where field 3 (state) is the first.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a comm field") + 1..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(14 - 3) + ticks(15 - 3)) / rustix::param::clock_ticks_per_second() as f64
}

/// One wrk run against `url`: requests per second, and the edge's CPU
/// microseconds per request served.
fn load_round(url: &str, pid: u32) -> (f64, f64) {
    let before = process_cpu_seconds(pid);
    let (rps, requests) = wrk(url);
    let cpu = process_cpu_seconds(pid) - before;
    (rps, cpu * 1e6 / requests)
}

async fn http_section(bin: &Path) {
    println!(
        "local HTTP: wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s on loopback, {WRK_ROUNDS} rounds of /healthz and /v1/t"
    );
    for (mode, flush) in [
        ("buffered", &[("EARSHOT_FLUSH", "buffered")][..]),
        ("sync", &[("EARSHOT_FLUSH", "sync")][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = kv(&[
            ("EARSHOT_LISTENER_SECRET", BENCH_LISTENER_SECRET),
            ("EARSHOT_SIGNING_KEYS", BENCH_SIGNING_KEYS),
        ]);
        env.push((
            "EARSHOT_SINK".into(),
            format!("dir:{}", dir.path().display()),
        ));
        env.extend(kv(flush));
        let mut edge = LocalEdge::spawn(bin, env).await.expect("edge starts");
        let pid = edge.process.pid().expect("the edge is running");
        let base = edge.base_url();
        let pixel = format!("{base}{}", signed_pixel_path());
        let health = format!("{base}/healthz");
        let (mut h, mut p, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut h_cpu, mut p_cpu, mut extra_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..WRK_ROUNDS {
            // Alternate which goes first so drift (and other load on the
            // machine) hits both alike; the ratio is taken per round.
            let ((hr, hc), (pr, pc)) = if round % 2 == 0 {
                let hx = load_round(&health, pid);
                (hx, load_round(&pixel, pid))
            } else {
                let px = load_round(&pixel, pid);
                (load_round(&health, pid), px)
            };
            h.push(hr);
            p.push(pr);
            ratios.push(pr / hr);
            h_cpu.push(hc);
            p_cpu.push(pc);
            extra_cpu.push(pc - hc);
        }
        edge.stop().await.unwrap();
        let (_, hm, _) = quartiles(h);
        let (_, pm, _) = quartiles(p);
        let (r25, rm, r75) = quartiles(ratios);
        let (_, hcm, _) = quartiles(h_cpu);
        let (_, pcm, _) = quartiles(p_cpu);
        let (x25, xm, x75) = quartiles(extra_cpu);
        println!("  {mode:<8} GET /healthz median {hm:>9.0} req/s  edge CPU {hcm:.2} µs/request");
        println!(
            "  {mode:<8} GET /v1/t    median {pm:>9.0} req/s  edge CPU {pcm:.2} µs/request  {rm:.2}× /healthz (per-round ratio: p25 {r25:.2}, p75 {r75:.2})"
        );
        // Requests per second swing with whatever else the machine runs;
        // the edge's own CPU per request swings less, and says what a pixel
        // hit adds over the trivial route.
        println!(
            "  {mode:<8} a pixel hit adds {xm:.2} µs of edge CPU over /healthz (per-round p25 {x25:.2}, p75 {x75:.2})"
        );
        println!("RESULT http_{mode}_extra_cpu_us {xm:.2}  ({pcm:.2} vs {hcm:.2} µs of edge CPU per request)");
        println!(
            "RESULT http_{mode}_ratio {rm:.2}  ({pm:.0} vs {hm:.0} req/s; goal ≥ 0.8×: {})",
            if rm >= 0.8 { "meets" } else { "MISSES" }
        );
    }
    println!();
}

// ---------------------------------------------------------------- billing

async fn billed_via_proxy(
    bin: &Path,
    moto: &Moto,
    stream: &str,
    flush: &[(&str, &str)],
    concurrent: bool,
) -> (usize, usize, usize) {
    moto.create_firehose_to_s3(stream, &format!("{stream}-bucket"), "events/")
        .await
        .unwrap();
    let proxy = FirehoseFaultProxy::start(moto.endpoint()).await.unwrap();
    let mut env = proxy.aws_env();
    env.extend(kv(&[
        ("EARSHOT_SINK", "firehose"),
        ("EARSHOT_FIREHOSE_STREAM", stream),
        ("EARSHOT_LISTENER_SECRET", BENCH_LISTENER_SECRET),
    ]));
    env.extend(kv(flush));
    let mut edge = LocalEdge::spawn(bin, env).await.unwrap();
    let hits = mixed_hits(BILLING_HITS, "spring-sale-2026");
    if concurrent {
        send_concurrently(&hits, &edge.base_url()).await.unwrap();
    } else {
        send_sequentially(&hits, &edge.base_url()).await.unwrap();
    }
    edge.stop().await.unwrap();
    let stats = proxy.stats();
    let bytes: usize = stats.forwarded_record_sizes.iter().sum();
    let billed: usize = stats
        .forwarded_record_sizes
        .iter()
        .map(|s| billed_bytes(*s))
        .sum();
    (stats.forwarded_record_sizes.len(), bytes, billed)
}

async fn billing_section(bin: &Path) {
    println!("Firehose billed bytes per event ({BILLING_HITS} hits, counted by the proxy in front of moto)");
    let moto = Moto::start().await.expect("moto");
    let mut rows = Vec::new();
    for (name, stream, flush, concurrent) in [
        (
            "sync, hits one at a time (Lambda: 1/record)",
            "sync-seq",
            &[("EARSHOT_FLUSH", "sync")][..],
            false,
        ),
        (
            "sync, all hits at once (group commit)",
            "sync-conc",
            &[("EARSHOT_FLUSH", "sync")][..],
            true,
        ),
        (
            "buffered (flush at 1000 events or 1 s)",
            "buffered",
            &[("EARSHOT_FLUSH", "buffered")][..],
            false,
        ),
    ] {
        let (records, bytes, billed) =
            billed_via_proxy(bin, &moto, stream, flush, concurrent).await;
        let per = billed as f64 / BILLING_HITS as f64;
        rows.push(per);
        println!(
            "  {name:<44} {records:>4} records, {:>6.0} B sent/event, {per:>7.0} B billed/event{}",
            bytes as f64 / BILLING_HITS as f64,
            if rows.len() > 1 {
                format!("  {:.3}× the first row", per / rows[0])
            } else {
                String::new()
            }
        );
    }
    let ratio = rows[2] / rows[0];
    println!(
        "RESULT billed_ratio {ratio:.3}  ({:.0} vs {:.0} B/event; goal ≤ 0.15×: {})",
        rows[2],
        rows[0],
        if ratio <= 0.15 { "meets" } else { "MISSES" }
    );
    println!();
}

fn size_section(bin: &Path) {
    let len = std::fs::metadata(bin).unwrap().len();
    println!(
        "binary: {} ({:.2} MiB)",
        bin.display(),
        len as f64 / (1 << 20) as f64
    );
    println!("RESULT binary_mib {:.2}", len as f64 / (1 << 20) as f64);
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bin = edge_bin();
    println!("edge binary: {}\n", bin.display());
    if wanted("init") {
        init_section(&bin).await;
    }
    if wanted("http") {
        http_section(&bin).await;
    }
    if wanted("billing") {
        billing_section(&bin).await;
    }
    if wanted("size") {
        size_section(&bin);
    }
}
