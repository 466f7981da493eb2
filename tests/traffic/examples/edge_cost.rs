//! Measures what the edge costs per hit, for `scripts/bench cost`: the
//! real `earshot-edge` binary (pass the release build) in Lambda mode under
//! testkit's Runtime API emulator, fed Function URL events made from
//! generated traffic, writing through the Firehose fault proxy (passing
//! everything) to moto. For `sync` and `buffered` flushing it measures:
//!
//! - CPU time of the edge process per hit (all its threads, from
//!   `/proc/PID/task/*/schedstat`, so the harness's own cost is not in it);
//! - wall time from invoke to response (median and p99, on loopback);
//! - the Firehose records the proxy forwarded: their sizes, so bytes and
//!   billed bytes (5 KB increments) per event;
//! - bytes the edge wrote to stdout/stderr per hit (what CloudWatch Logs
//!   would ingest from the function itself);
//! - the edge's own FirehoseLatencyMs (against moto: not AWS's latency).
//!
//! Usage: cargo run -p earshot-traffic --example edge_cost -- EDGE_BIN HITS OUT.json

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use earshot_domain::SigningKeys;
use earshot_testkit::edge::decode_objects;
use earshot_testkit::{FirehoseFaultProxy, InvokeOptions, LambdaRuntimeEmulator, Moto};
use earshot_traffic::{Amount, Generator, Hit, Plan};
use serde_json::{json, Value};

const STREAM: &str = "earshot-edge-cost";
const BUCKET: &str = "earshot-events-cost";
const KEYS: &str = "k1:cost-signing-secret-0123456789";
const WARMUP: u64 = 300;
/// Buffered mode's age limit (the SAM default): the measured phase starts
/// after the warm-up's events were flushed by age.
const MAX_AGE_MS: u64 = 1000;

/// Firehose bills each record rounded up to 5 KB (the edge's own constant
/// is `earshot_edge::sink::firehose::BILLING_INCREMENT`).
const BILLING_INCREMENT: usize = 5 * 1024;

fn billed(len: usize) -> usize {
    len.div_ceil(BILLING_INCREMENT).max(1) * BILLING_INCREMENT
}

/// A Lambda Function URL event (payload format 2.0) for one hit, shaped as
/// `functions/edge/tests/fixtures/function-url-get.json`.
fn function_url_event(h: &Hit) -> Value {
    let ip = h.client_ip.to_string();
    let mut headers = json!({
        "accept": "*/*",
        "host": "abcdefg.lambda-url.us-east-1.on.aws",
        "x-amzn-trace-id": h.trace_id,
        "x-forwarded-for": ip,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    });
    if let Some(ua) = h.user_agent {
        headers["user-agent"] = json!(ua);
    }
    let params: serde_json::Map<String, Value> = form_urlencoded::parse(h.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/t",
        "rawQueryString": h.query,
        "headers": headers,
        "queryStringParameters": params,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdefg",
            "domainName": "abcdefg.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefg",
            "http": {
                "method": "GET",
                "path": "/v1/t",
                "protocol": "HTTP/1.1",
                "sourceIp": ip,
                "userAgent": h.user_agent.unwrap_or(""),
            },
            "requestId": format!("req-{}", h.seq),
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795737600000u64,
        },
        "isBase64Encoded": false,
    })
}

/// The hit's trace id as the runtime's X-Ray id (lambda_http puts that in
/// the request's `x-amzn-trace-id`, as API Gateway and Function URLs do).
fn trace(h: &Hit) -> InvokeOptions {
    InvokeOptions {
        trace_id: Some(h.trace_id.clone()),
        ..InvokeOptions::default()
    }
}

/// CPU time of every thread of `pid`, from schedstat (nanoseconds on CPU).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut ns: u64 = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let s = std::fs::read_to_string(t?.path().join("schedstat"))?;
        ns += s
            .split_whitespace()
            .next()
            .context("schedstat is empty")?
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(ns))
}

fn output_bytes(p: &earshot_testkit::ChildProcess) -> usize {
    p.stdout_lines()
        .iter()
        .chain(p.stderr_lines().iter())
        .map(|l| l.len() + 1)
        .sum()
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn measure(
    edge: &Path,
    moto: &Moto,
    proxy: &FirehoseFaultProxy,
    hits: &[Hit],
    buffered: bool,
) -> anyhow::Result<Value> {
    let emulator = LambdaRuntimeEmulator::start("earshot-edge-cost").await?;
    let mut env = proxy.aws_env();
    env.extend(
        [
            ("EARSHOT_SINK", "firehose"),
            ("EARSHOT_FIREHOSE_STREAM", STREAM),
            ("EARSHOT_FLUSH", if buffered { "buffered" } else { "sync" }),
            ("EARSHOT_BUFFER_MAX_AGE_MS", &MAX_AGE_MS.to_string()),
            ("EARSHOT_LISTENER_SECRET", "cost-listener-secret-0123456789"),
            ("EARSHOT_SIGNING_KEYS", KEYS),
            ("RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut f = emulator.spawn_function(edge, env)?;
    let init = f.wait_ready().await?;
    let pid = f.process().pid().context("the edge has no pid")?;
    let (warm, measured) = hits.split_at(WARMUP as usize);
    for h in warm {
        f.invoke_with(&function_url_event(h), trace(h)).await?;
    }
    // Let the warm-up's buffered events go out by age, so every record
    // after this point holds only measured events.
    tokio::time::sleep(Duration::from_millis(MAX_AGE_MS * 2)).await;
    let before_records = proxy.stats().forwarded_record_sizes.len();
    let before_out = output_bytes(f.process());
    let cpu0 = cpu_time(pid)?;
    let mut walls = Vec::with_capacity(measured.len());
    let started = Instant::now();
    for h in measured {
        let t = Instant::now();
        let r = f.invoke_with(&function_url_event(h), trace(h)).await?;
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        if r["statusCode"] != 200 {
            bail!("the edge answered {r}");
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid)? - cpu0;
    // Buffered: what is left goes out by age; then shut down (graceful
    // shutdown delivers anything else).
    tokio::time::sleep(Duration::from_millis(MAX_AGE_MS * 2)).await;
    let log_bytes = output_bytes(f.process()) - before_out;
    let latency: Vec<f64> = f
        .process()
        .stdout_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["FirehoseLatencyMs"].as_f64())
        .collect();
    // Everything was flushed above (sync: before each answer; buffered: by
    // age). Without a registered extension the emulator kills the process,
    // as Lambda does; with one, the edge must exit cleanly on SIGTERM.
    let report = f.shutdown().await?;
    if report.sigterm && !report.status.success() {
        bail!(
            "the edge exited with {}\n{}",
            report.status,
            f.process().output_text()
        );
    }
    let sizes: Vec<usize> = proxy.stats().forwarded_record_sizes[before_records..].to_vec();
    let n = measured.len();
    // Every measured hit is in S3 exactly once: the records counted above
    // are theirs.
    let traces: std::collections::HashSet<&str> =
        measured.iter().map(|h| h.trace_id.as_str()).collect();
    let in_s3 = decode_objects(&moto.read_all_objects(BUCKET, "events/").await?)?
        .into_iter()
        .filter(|e| e.trace_id.as_deref().is_some_and(|t| traces.contains(t)))
        .count();
    if in_s3 != n {
        let all = decode_objects(&moto.read_all_objects(BUCKET, "events/").await?)?;
        bail!(
            "{in_s3} of {n} measured hits reached S3 ({} events there, e.g. trace {:?}; sent e.g. {:?})",
            all.len(),
            all.last().and_then(|e| e.trace_id.clone()),
            measured.last().map(|h| &h.trace_id)
        );
    }
    let bytes: usize = sizes.iter().sum();
    let billed_bytes: usize = sizes.iter().map(|s| billed(*s)).sum();
    Ok(json!({
        "mode": if buffered { "buffered" } else { "sync" },
        "hits": n,
        "init_ms": init.as_secs_f64() * 1000.0,
        "cpu_ms_per_hit": cpu.as_secs_f64() * 1000.0 / n as f64,
        "wall_ms_p50": percentile(&mut walls, 0.5),
        "wall_ms_p99": percentile(&mut walls, 0.99),
        "hits_per_second_sequential": n as f64 / elapsed.as_secs_f64(),
        "records": sizes.len(),
        "events_per_record": n as f64 / sizes.len().max(1) as f64,
        "bytes_per_event": bytes as f64 / n as f64,
        "billed_bytes_per_event": billed_bytes as f64 / n as f64,
        "log_bytes_per_hit": log_bytes as f64 / n as f64,
        "moto_firehose_latency_ms": if latency.is_empty() { Value::Null } else { json!(latency.iter().sum::<f64>() / latency.len() as f64) },
    }))
}

/// The edge as a long-running server (what a container would run):
/// local mode, buffered, hits over HTTP from the sender (unpaced, 8 in
/// flight). CPU per hit bounds how many hits a container's vCPU serves.
async fn measure_local(
    edge: &Path,
    proxy: &FirehoseFaultProxy,
    hits: &[Hit],
) -> anyhow::Result<Value> {
    let mut env = proxy.aws_env();
    env.extend(
        [
            ("EARSHOT_SINK", "firehose"),
            ("EARSHOT_FIREHOSE_STREAM", STREAM),
            ("EARSHOT_FLUSH", "buffered"),
            ("EARSHOT_LISTENER_SECRET", "cost-listener-secret-0123456789"),
            ("EARSHOT_SIGNING_KEYS", KEYS),
            ("EARSHOT_TRUSTED_PROXY_HOPS", "1"),
            ("EARSHOT_TRUST_CLOUDFRONT", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut server = earshot_testkit::LocalEdge::spawn(edge, env).await?;
    let pid = server.process.pid().context("the edge has no pid")?;
    let opts = earshot_traffic::SendOptions {
        concurrency: 8,
        paced: false,
        ..earshot_traffic::SendOptions::new(format!("{}/v1/t", server.base_url()))
    };
    let (warm, measured) = hits.split_at(WARMUP as usize);
    earshot_traffic::send(warm, &opts).await?;
    let cpu0 = cpu_time(pid)?;
    let started = Instant::now();
    let report = earshot_traffic::send(measured, &opts).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid)? - cpu0;
    server.stop().await?;
    if report.answered() != measured.len() {
        bail!("{} of {} hits answered", report.answered(), measured.len());
    }
    let n = measured.len();
    Ok(json!({
        "mode": "local-buffered",
        "hits": n,
        "cpu_ms_per_hit": cpu.as_secs_f64() * 1000.0 / n as f64,
        "hits_per_second_8_in_flight": n as f64 / elapsed.as_secs_f64(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [edge, hits, out] = args.as_slice() else {
        bail!("usage: edge_cost EDGE_BIN HITS OUT.json");
    };
    let edge = PathBuf::from(edge);
    let n: u64 = hits.parse().context("HITS")?;
    let moto = Moto::start().await?;
    moto.create_firehose_to_s3(STREAM, BUCKET, "events/")
        .await?;
    let proxy = FirehoseFaultProxy::start(moto.endpoint()).await?;
    let keys = SigningKeys::parse(KEYS)?;
    let mut modes = Vec::new();
    for (seed, buffered) in [(1, false), (2, true)] {
        // A seed per mode: trace ids differ, so each mode finds its own events.
        let plan = Plan {
            seed,
            amount: Amount::Total(WARMUP + n),
            ..Plan::default()
        };
        let hits = Generator::all(&plan, &keys)?;
        let m = measure(&edge, &moto, &proxy, &hits, buffered).await?;
        eprintln!("{m}");
        modes.push(m);
    }
    let plan = Plan {
        seed: 3,
        amount: Amount::Total(WARMUP + n),
        ..Plan::default()
    };
    let local = measure_local(&edge, &proxy, &Generator::all(&plan, &keys)?).await?;
    eprintln!("{local}");
    modes.push(local);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let doc = json!({
        "edge_binary": edge.display().to_string(),
        "arch": std::env::consts::ARCH,
        "cpu": cpu_model,
        "measured_at": time::OffsetDateTime::now_utc().date().to_string(),
        "modes": modes,
    });
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}
