//! Handler CPU per hit: `Recorder::record_ndjson`, what the edge runs per hit
//! (parse the query, verify the signature, look up the address's country
//! and data-center network, hash the listener, classify the user agent,
//! build and encode the event), against encoding one fixed
//! event, measured in the same run. Goal: ≤ 2 µs per hit.
//!
//! A plain `harness = false` bench: R runs of N iterations each, the mean
//! per iteration of each run in thread CPU time (so other processes on a
//! shared machine do not inflate it the way wall time would), and the median
//! over runs. Each run comes right after a baseline run; the ratio printed is
//! the median of those pairs.
//!
//! `cargo bench -p earshot-edge --bench handler`
//!
//! Instruction counts, which unlike times are the same on every run of one
//! binary whatever else the machine does: with `EARSHOT_BENCH_HITS=N` the
//! bench only records and encodes N hits (built-in lists) and exits, so
//! under `valgrind --tool=callgrind` the difference between two N, divided
//! by their difference, is the instructions of one hit
//! (`scripts/bench edge instructions` does that). The user-agent lists are
//! the OPAWG lists compiled into `earshot-domain`, as in the edge.

use std::hint::black_box;
use std::net::IpAddr;

use earshot_domain::{ListenerHasher, ListenerSecret, PixelParams, SigningKeys, UaClassifier};
use earshot_edge::config::{SigningConfig, TrustConfig};
use earshot_edge::hit::{HitRequest, Recorder, LINE_CAPACITY};
use earshot_testkit::edge::{signed_query, BENCH_LISTENER_SECRET, BENCH_SIGNING_KEYS};
use http::{HeaderMap, Method};

const RUNS: usize = 31;
const ITERS: usize = 20_000;
const NEW_UA_ITERS: usize = 2_000;
const GOAL_NS: f64 = 2_000.0;
/// Issue 30: numbering events may add at most this much CPU per hit.
const NUMBERING_GOAL_NS: f64 = 50.0;
/// Issue 28: the geography lookup may add at most this much CPU per hit,
const GEO_GOAL_NS: f64 = 1_000.0;
/// and loading its data at most this much to the Lambda INIT.
const GEO_INIT_GOAL_MS: f64 = 5.0;

/// Real podcast-client user agents (OPAWG examples and common players).
const USER_AGENTS: &[&str] = &[
    "Podcasts/1650.20 CFNetwork/1333.0.4 Darwin/21.5.0",
    "Spotify/8.8.56 iOS/16.1 (iPhone14,2)",
    "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
    "AppleCoreMedia/1.0.0.20E252 (iPhone; U; CPU OS 16_4_1 like Mac OS X; en_us)",
    "PocketCasts/1.0 (Pocket Casts - Android; +https://pocketcasts.com)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "AntennaPod/3.2.0",
    "okhttp/4.9.3",
];

fn recorder(ua: UaClassifier) -> Recorder {
    Recorder {
        listener: ListenerHasher::new(
            ListenerSecret::new(BENCH_LISTENER_SECRET).unwrap(),
            earshot_edge::config::DEFAULT_LISTENER_PERIOD,
        ),
        signing: SigningConfig {
            keys: SigningKeys::parse(BENCH_SIGNING_KEYS).unwrap(),
            required: true,
        },
        ua,
        trust: TrustConfig::default(),
        geo: earshot_edge::geo::Geo::builtin(),
        sequencer: earshot_edge::sequence::Sequencer::new(),
    }
}

/// A signed pixel query, as the ad server writes it (with a filled cache buster).
fn pixel_query(i: usize) -> String {
    let events = [
        "impression",
        "start",
        "firstQuartile",
        "midpoint",
        "complete",
    ];
    let q = format!(
        "c=spring-sale-2026&cr=cr_30s_v2&ep=ep-{}&sh=dailytech&pos=mid&ev={}",
        100 + i % 50,
        events[i % events.len()]
    );
    format!(
        "{}&cb={}",
        signed_query(BENCH_SIGNING_KEYS, &q),
        1_700_000_000 + i
    )
}

/// One hit as the edge runs it: record and encode into a fresh line.
fn record_line(rec: &Recorder, req: &HitRequest<'_>, now: time::OffsetDateTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINE_CAPACITY);
    black_box(rec.record_ndjson(req, now, &mut out));
    out
}

struct Req {
    query: String,
    headers: HeaderMap,
    ip: IpAddr,
}

/// `n` hits from public addresses, so each one's country and data-center
/// lookups run as a listener's would (the edge skips documentation and
/// other special-purpose ranges).
fn requests(n: usize, ua: impl Fn(usize) -> String) -> Vec<Req> {
    let public = public_addresses(n);
    (0..n)
        .map(|i| {
            let mut headers = HeaderMap::new();
            headers.insert("user-agent", ua(i).parse().unwrap());
            headers.insert(
                "x-amzn-trace-id",
                format!("Root=1-6745d2a0-{i:024x}").parse().unwrap(),
            );
            headers.insert("accept", "*/*".parse().unwrap());
            Req {
                query: pixel_query(i),
                headers,
                ip: public[i],
            }
        })
        .collect()
}

/// `n` public addresses (two in three IPv4), spread over the address
/// space by a multiplicative hash, skipping special-purpose ones.
fn public_addresses(n: usize) -> Vec<IpAddr> {
    (0u64..)
        .map(|i| {
            let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if i % 3 == 0 {
                // Global unicast, 2000::/3.
                let bits = (0x2000_u128 << 112) | (u128::from(h >> 3) << 64);
                IpAddr::from(std::net::Ipv6Addr::from(bits))
            } else {
                IpAddr::from(std::net::Ipv4Addr::from((h >> 32) as u32))
            }
        })
        .filter(|ip| !earshot_edge::geo::is_special_purpose(*ip))
        .take(n)
        .collect()
}

fn hit(r: &Req) -> HitRequest<'_> {
    HitRequest {
        method: &Method::GET,
        path: "/v1/t",
        query: Some(&r.query),
        headers: &r.headers,
        source_ip: Some(r.ip),
        runtime_trace_id: None,
        deadline: None,
    }
}

/// This thread's CPU time: time spent descheduled (other processes on a
/// shared machine) does not count, which wall-clock time would.
fn cpu_now() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// Median (and quartiles) over `RUNS` of the mean CPU time per iteration,
/// and the median of its ratio to the baseline run just before each run.
struct Stats {
    median: f64,
    p25: f64,
    p75: f64,
    ratio: Option<f64>,
}

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 4], v[v.len() / 2], v[3 * v.len() / 4])
}

fn one_run(iters: usize, run: usize, f: &mut impl FnMut(usize, usize)) -> f64 {
    let t = cpu_now();
    for i in 0..iters {
        f(run, i);
    }
    (cpu_now() - t) / iters as f64
}

/// Runs `f` `RUNS` times (after a warm-up), each run preceded by a run of
/// `baseline` when given, so drift on the machine hits both alike.
fn measure(
    iters: usize,
    mut baseline: Option<&mut dyn FnMut()>,
    mut f: impl FnMut(usize, usize),
) -> Stats {
    for i in 0..iters / 10 {
        f(usize::MAX, i);
    }
    let mut per = Vec::with_capacity(RUNS);
    let mut ratios = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let base = baseline.as_mut().map(|b| {
            let t = cpu_now();
            for _ in 0..ITERS {
                b();
            }
            (cpu_now() - t) / ITERS as f64
        });
        let x = one_run(iters, run, &mut f);
        per.push(x);
        if let Some(b) = base {
            ratios.push(x / b);
        }
    }
    let (p25, median, p75) = quartiles(per);
    let ratio = (!ratios.is_empty()).then(|| quartiles(ratios).1);
    Stats {
        median,
        p25,
        p75,
        ratio,
    }
}

fn row(name: &str, s: &Stats) {
    let ratio = s
        .ratio
        .map_or(String::new(), |r| format!("  {r:5.2}× baseline"));
    println!(
        "{name:<48} median {:>8.0} ns/hit  (p25 {:>6.0}, p75 {:>6.0}){ratio}",
        s.median, s.p25, s.p75
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would run us too,
    // with nothing to prove: only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    if let Ok(n) = std::env::var("EARSHOT_BENCH_HITS") {
        let n: usize = n.parse().expect("EARSHOT_BENCH_HITS is a number of hits");
        // The same requests whatever N, so only the hits differ between two N.
        let reqs = requests(ITERS, |i| USER_AGENTS[i % USER_AGENTS.len()].to_owned());
        let rec = recorder(UaClassifier::builtin());
        for i in 0..n {
            black_box(record_line(&rec, black_box(&hit(&reqs[i % ITERS])), now));
        }
        return;
    }
    println!(
        "handler CPU per hit (thread CPU time): {RUNS} runs × {ITERS} hits, median of the runs' mean;\n\
         each run follows a baseline run, and the ratio is the median of those pairs\n"
    );

    let fixed = {
        let rec = recorder(UaClassifier::builtin());
        let reqs = requests(1, |_| USER_AGENTS[0].to_owned());
        rec.record(&hit(&reqs[0]), now)
    };
    let mut base = || {
        black_box(black_box(&fixed).to_ndjson());
    };
    let baseline = measure(ITERS, None, |_, _| base());
    row("encode a fixed event (baseline)", &baseline);
    let b = baseline.median;

    let cached = requests(ITERS, |i| USER_AGENTS[i % USER_AGENTS.len()].to_owned());
    let builtin = recorder(UaClassifier::builtin());
    let s_builtin = measure(ITERS, Some(&mut base), |_, i| {
        black_box(record_line(&builtin, black_box(&hit(&cached[i])), now));
    });
    row("record+encode, OPAWG lists (seen UA)", &s_builtin);

    let mut unsigned = recorder(UaClassifier::builtin());
    unsigned.signing.required = false;
    let s = measure(ITERS, Some(&mut base), |_, i| {
        black_box(record_line(&unsigned, black_box(&hit(&cached[i])), now));
    });
    row("record+encode, seen UA, signature not required", &s);

    let results = vec![("OPAWG", s_builtin.median, s_builtin.ratio)];
    // A user agent never seen before: the pattern lists run. Each run gets
    // its own strings so nothing is served from the cache.
    let fresh: Vec<Vec<Req>> = (0..=RUNS)
        .map(|run| {
            requests(NEW_UA_ITERS, |i| {
                format!("{} (r{run}i{i})", USER_AGENTS[i % USER_AGENTS.len()])
            })
        })
        .collect();
    let s_new = measure(NEW_UA_ITERS, Some(&mut base), |run, i| {
        let set = if run == usize::MAX { RUNS } else { run };
        black_box(record_line(
            &builtin,
            black_box(&hit(&fresh[set][i % NEW_UA_ITERS])),
            now,
        ));
    });
    row("record+encode, OPAWG lists (new UA)", &s_new);
    let new_ua = Some((s_new.median, s_new.ratio));

    // Where the time goes (seen UA).
    println!("\nbreakdown (seen UA):");
    let keys = SigningKeys::parse(BENCH_SIGNING_KEYS).unwrap();
    let s = measure(ITERS, Some(&mut base), |_, i| {
        black_box(PixelParams::parse(black_box(&cached[i].query)).check(&keys, true));
    });
    row("  parse query + verify signature", &s);
    let hasher = ListenerHasher::new(
        ListenerSecret::new(BENCH_LISTENER_SECRET).unwrap(),
        earshot_edge::config::DEFAULT_LISTENER_PERIOD,
    );
    let day = now.date();
    let s = measure(ITERS, Some(&mut base), |_, i| {
        black_box(hasher.listener_id(day, cached[i].ip, USER_AGENTS[i % USER_AGENTS.len()]));
    });
    row("  listener id (HMAC-SHA256)", &s);
    let s = measure(ITERS, Some(&mut base), |_, _| {
        black_box(earshot_edge::hit::response(black_box(
            earshot_edge::hit::Route::PixelGet,
        )));
    });
    row("  pixel response (status, headers, GIF)", &s);
    let ua = UaClassifier::builtin();
    let s = measure(ITERS, Some(&mut base), |_, i| {
        black_box(ua.classify(Some(USER_AGENTS[i % USER_AGENTS.len()])));
    });
    row("  classify UA (cached)", &s);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.unix_timestamp() as u64, 0);
    let s = measure(ITERS, Some(&mut base), |_, _| {
        black_box(uuid::Uuid::new_v7(black_box(ts)));
    });
    row("  event id: Uuid::new_v7 (getrandom per id)", &s);
    let ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
    let s = measure(ITERS, Some(&mut base), |_, _| {
        let mut random = [0u8; 10];
        fastrand::fill(&mut random);
        black_box(uuid::Builder::from_unix_timestamp_millis(black_box(ms), &random).into_uuid());
    });
    row("  event id: v7 from a userspace RNG (fastrand)", &s);
    // Numbering (issue 30): the atomic increment, plus writing `edge` and
    // `seq` instead of two nulls.
    let sequencer = earshot_edge::sequence::Sequencer::new();
    let s_next = measure(ITERS, Some(&mut base), |_, _| {
        black_box(black_box(&sequencer).next());
    });
    row("  edge seq: Sequencer::next (AtomicU64)", &s_next);
    let unnumbered = earshot_domain::TrackingEvent {
        sequence: None,
        ..fixed.clone()
    };
    let mut line = Vec::with_capacity(LINE_CAPACITY);
    let s_plain = measure(ITERS, Some(&mut base), |_, _| {
        line.clear();
        black_box(&unnumbered).write_ndjson(&mut line);
        black_box(&line);
    });
    row("  encode the fixed event without edge, seq", &s_plain);
    let s_numbered = measure(ITERS, Some(&mut base), |_, _| {
        line.clear();
        black_box(&fixed).write_ndjson(&mut line);
        black_box(&line);
    });
    row("  encode the fixed event with edge, seq", &s_numbered);
    // The encoding's difference from the ratios to the baseline run beside
    // each run, so a change in the machine's speed between the two
    // measurements (other work on a shared machine) does not count as the
    // cost of two fields.
    let ratio_gap = s_numbered.ratio.unwrap_or(0.0) - s_plain.ratio.unwrap_or(0.0);
    let numbering_ns = s_next.median + ratio_gap * b;

    // Geography (issue 28): the country database and the data-center list
    // looked up per hit, part of every record above.
    let geo = earshot_edge::geo::Geo::builtin();
    let s_geo = measure(ITERS, Some(&mut base), |_, i| {
        let ip = black_box(cached[i].ip);
        black_box(geo.places.locate(ip));
        black_box(geo.datacenters.contains(ip));
    });
    row("  geography: country + data-center lookup", &s_geo);

    // Init cost of the compiled-in lists (part of the Lambda cold start):
    // parsing their JSON, and all of it (parse and compile).
    let (_, report) = UaClassifier::load(None).expect("the compiled-in lists load");
    let median_ms = |f: &mut dyn FnMut()| {
        let mut v: Vec<f64> = (0..11)
            .map(|_| {
                let t = cpu_now();
                f();
                (cpu_now() - t) / 1e6
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[5]
    };
    let parse_ms = median_ms(&mut || {
        for file in ["bots", "apps", "libraries", "browsers", "devices"] {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/opawg");
            let json =
                std::fs::read(format!("{dir}/{file}.json")).expect("the compiled-in lists' source");
            black_box(serde_json::from_slice::<serde_json::Value>(&json).unwrap());
        }
    });
    let build_ms = median_ms(&mut || {
        black_box(UaClassifier::builtin());
    });
    println!(
        "\ninit: UaClassifier::builtin() ({} patterns, {} skipped) in {build_ms:.2} ms CPU, \
         of which reading and parsing the JSON {parse_ms:.2} ms (medians of 11)",
        report.patterns,
        report.skipped.len()
    );
    let geo_init_ms = median_ms(&mut || {
        black_box(earshot_edge::geo::Geo::builtin());
    });
    println!(
        "init: Geo::builtin() (the compiled-in country database and data-center list) in \
         {geo_init_ms:.4} ms CPU (median of 11; the data is static, only its header is read)"
    );

    println!();
    println!("RESULT baseline_encode_ns {:.0}", b);
    println!(
        "RESULT numbering_ns {numbering_ns:.1}  (Sequencer::next + encoding edge and seq; goal ≤ {NUMBERING_GOAL_NS:.0} ns: {})",
        if numbering_ns <= NUMBERING_GOAL_NS { "meets" } else { "MISSES" }
    );
    println!(
        "RESULT geo_ns {:.0}  (country + data-center lookup per hit; goal ≤ {GEO_GOAL_NS:.0} ns: {})",
        s_geo.median,
        if s_geo.median <= GEO_GOAL_NS { "meets" } else { "MISSES" }
    );
    println!(
        "RESULT geo_init_ms {geo_init_ms:.4}  (loading the compiled-in geography; goal ≤ {GEO_INIT_GOAL_MS:.0} ms: {})",
        if geo_init_ms <= GEO_INIT_GOAL_MS { "meets" } else { "MISSES" }
    );
    for (name, ns, ratio) in results {
        let verdict = if ns <= GOAL_NS { "meets" } else { "MISSES" };
        println!(
            "RESULT handler_{}_ns {:.0}  ({:.2}× baseline; goal ≤ {GOAL_NS:.0} ns: {verdict})",
            name.to_lowercase().replace('-', "_"),
            ns,
            ratio.unwrap_or(ns / b)
        );
    }
    if let Some((ns, ratio)) = new_ua {
        println!(
            "RESULT handler_opawg_new_ua_ns {ns:.0}  ({:.2}× baseline; first sight of a user agent)",
            ratio.unwrap_or(ns / b)
        );
    }
}
