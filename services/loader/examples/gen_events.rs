//! Realistic edge output for the loader benchmark (`scripts/bench loader`).
//!
//! ```sh
//! cargo run --release -p earshot-loader --example gen_events -- \
//!     --out DIR --events 1000000 --files 50 --seed 1 [--day 2026-11-26] [--gzip] \
//!     [--edges 16] [--copy-out FILE]
//! ```
//!
//! Writes `--files` NDJSON objects of consecutive time slices of one UTC day
//! (as Firehose writes them), holding `--events` lines in all:
//!
//! - 12 campaigns with 2–4 creatives, 300 episodes of 25 shows, pre/mid/post;
//! - 250,000 listeners with a skewed (heavy-listener) distribution;
//! - user agents from a weighted list of real podcast players, classified by
//!   `earshot-domain`'s built-in list (app, device, os), ~3% bot user agents
//!   plus a few missing ones (~3.5% bots in all);
//! - ~1% invalid hits (bad or missing signature, unusable campaign id);
//! - ad plays, not lone events: a play is one listener's impression, then
//!   the start, quartiles and complete as far as they got (or a skip, a
//!   click, a VAST error), each hit of it from the same player, minutes
//!   apart at most, as podcast players send them; ~2.3 hits a play, in the
//!   funnel proportions of [`FUNNEL`];
//! - ~10% of events repeat the (listener, creative, episode, event) of a
//!   recent valid event the same day: they are stored but not counted again;
//! - ~0.5% of lines repeat an event of the previous object verbatim (a
//!   Firehose retry after a timeout): the loader keeps each id once;
//! - a diurnal curve (listening peaks in the morning and evening, UTC);
//! - every hit numbered by one of `--edges` edges (Lambda environments, 16
//!   by default; 0 for none, as before numbering), which also end each
//!   object with a heartbeat each: the ledger's work, as real traffic
//!   brings it (docs/COUNTING.md, "How we know nothing was lost").
//!
//! `--copy-out` also writes every line as PostgreSQL COPY text in the column
//! order of the `events` table (`object_id` = the object's number), for the
//! plain-COPY baseline.

use std::io::Write;
use std::path::PathBuf;

use earshot_domain::{
    CampaignId, CountryCode, CreativeId, EdgeId, EventKind, Heartbeat, ListenerId, Placement,
    TrackingEvent, UaClass, UaClassifier, Verdict,
};
use earshot_testkit::{event, gzip_at, ndjson, v7_seeded};
use time::{Date, OffsetDateTime};

/// Real user agents of podcast players (weights are rough shares of
/// downloads), then bots. The classifier decides which is which.
const PLAYER_UAS: &[(&str, u32)] = &[
    ("Podcasts/1555.2.1 CFNetwork/1410.0.3 Darwin/22.6.0", 220),
    ("Podcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0", 90),
    ("AppleCoreMedia/1.0.0.21A329 (iPhone; U; CPU OS 17_0 like Mac OS X; en_us)", 70),
    ("AppleCoreMedia/1.0.0.20G75 (Macintosh; U; Intel Mac OS X 13_5; en_us)", 15),
    ("Spotify/8.8.56 iOS/17.0 (iPhone15,2)", 120),
    ("Spotify/8.8.60 Android/33 (SM-S911B)", 80),
    ("Overcast/3.0 (+http://overcast.fm/; iOS podcast app)", 45),
    ("PocketCasts/1.0 (Pocket Casts Feed Parser; +http://pocketcasts.com/)", 30),
    ("Pocket Casts/7.47 (iOS 17.0)", 20),
    ("PodcastAddict/v5 (+https://podcastaddict.com/; Android podcast app)", 35),
    ("AntennaPod/3.2.0", 15),
    ("CastBox/8.63.3-230901088 (Linux;Android 13) ExoPlayerLib/2.10.4", 15),
    ("Castro 2023.9/1203 CFNetwork/1410.0.3 Darwin/22.6.0", 8),
    ("iHeartRadio/10.33.0 (iPhone; iOS 17.0; Scale/3.00)", 20),
    ("AmazonMusic/23.15.1 (iPhone; iOS 17.0)", 18),
    ("Deezer/9.31.0 (Android; 13; Mobile; fr) SM-A536B", 6),
    ("Podbean/Android App 9.4.1 (http://podbean.com), 6f1b2d", 6),
    ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/117.0.0.0 Mobile Safari/537.36", 25),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/117.0.0.0 Safari/537.36", 20),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15", 15),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:118.0) Gecko/20100101 Firefox/118.0", 6),
    ("Sonos/75.1-43120 (ZPS27)", 5),
    ("Alexa Media Player/2.2.516044.0 (Linux;Android 11) ExoPlayerLib/2.17.1", 8),
    ("stagefright/1.2 (Linux;Android 12)", 6),
    ("Lavf/58.76.100", 2),
];
const BOT_UAS: &[(&str, u32)] = &[
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 30),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 15),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", 10),
    ("curl/8.5.0", 10),
    ("python-requests/2.31.0", 10),
    ("Go-http-client/2.0", 8),
    ("Wget/1.21.3", 4),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/117.0.5938.62 Safari/537.36", 8),
];
/// Share of hits from a bot user agent, and with no user agent at all.
const BOT_UA_SHARE: f64 = 0.03;
const MISSING_UA_SHARE: f64 = 0.005;
/// Share of invalid hits (forged/tampered/unsigned).
const INVALID_SHARE: f64 = 0.01;
/// Share of events repeating a recent counting key (counted once).
const REPEAT_SHARE: f64 = 0.10;
/// Share of lines that repeat an event of the previous object (same id).
const RETRY_SHARE: f64 = 0.005;
/// Recent valid events a repeat is drawn from.
const REPEAT_WINDOW: usize = 20_000;
const CAMPAIGNS: usize = 12;
const SHOWS: u32 = 25;
const EPISODES_PER_SHOW: u32 = 12;
const LISTENERS: u64 = 250_000;
/// Listening by UTC hour (relative weights).
const HOURLY: [u32; 24] = [
    3, 2, 2, 2, 3, 5, 8, 12, 14, 12, 10, 9, 9, 9, 8, 8, 9, 11, 12, 11, 9, 7, 5, 4,
];
const COUNTRIES: &[(&str, u32)] = &[
    ("US", 55),
    ("GB", 9),
    ("CA", 7),
    ("AU", 5),
    ("DE", 6),
    ("FR", 3),
    ("IN", 4),
    ("BR", 3),
    ("NL", 2),
    ("SE", 2),
];
/// Hits per 1,000 by kind, as plays make them: each play opens with an
/// impression; [`funnel`] draws the rest from these proportions.
const FUNNEL: &[(EventKind, u32)] = &[
    (EventKind::Impression, 440),
    (EventKind::Start, 150),
    (EventKind::FirstQuartile, 110),
    (EventKind::Midpoint, 95),
    (EventKind::ThirdQuartile, 85),
    (EventKind::Complete, 80),
    (EventKind::Skip, 20),
    (EventKind::Click, 8),
    (EventKind::Error, 12),
];
/// Plays under way at once: a hit that is not an impression goes to one of
/// them, drawn at random, so a play's hits come about `OPEN_PLAYS / 0.56`
/// hits apart (seconds at a million events a day).
const OPEN_PLAYS: usize = 64;
const INVALID_REASONS: &[&str] = &["bad_signature", "missing_signature", "bad_campaign_id"];

/// How many hits of [`FUNNEL`] of `kind` there are per impression.
fn per_impression(kind: EventKind) -> f64 {
    let w = |k: EventKind| FUNNEL.iter().find(|(f, _)| *f == k).map_or(0, |(_, w)| *w) as f64;
    w(kind) / w(EventKind::Impression)
}

/// The hits of one play after its impression, in the order they come: a
/// VAST error or a start; after a start each quartile with the chance that
/// gives [`FUNNEL`]'s proportions, and a skip for some plays that stop
/// short of the complete; a click for some plays.
fn funnel(rng: &mut fastrand::Rng) -> Vec<EventKind> {
    use EventKind::*;
    let mut kinds = Vec::new();
    let u = rng.f64();
    if u < per_impression(Error) {
        kinds.push(Error);
    } else if u < per_impression(Error) + per_impression(Start) {
        kinds.push(Start);
        let mut reached = Start;
        for next in [FirstQuartile, Midpoint, ThirdQuartile, Complete] {
            if rng.f64() >= per_impression(next) / per_impression(reached) {
                break;
            }
            kinds.push(next);
            reached = next;
        }
        let dropped = per_impression(Start) - per_impression(Complete);
        if reached != Complete && rng.f64() < per_impression(Skip) / dropped {
            kinds.push(Skip);
        }
    }
    if rng.f64() < per_impression(Click) {
        kinds.push(Click);
    }
    kinds
}

/// Keeps `e` among the recent valid events a repeat is drawn from.
fn remember(recent: &mut Vec<TrackingEvent>, next: &mut usize, e: &TrackingEvent) {
    if recent.len() < REPEAT_WINDOW {
        recent.push(e.clone());
    } else {
        recent[*next] = e.clone();
        *next = (*next + 1) % REPEAT_WINDOW;
    }
}

/// A play under way: its first hit, which the others copy, and the kinds
/// still to come, last first.
struct Play {
    first: TrackingEvent,
    to_come: Vec<EventKind>,
}

struct Args {
    out: PathBuf,
    events: usize,
    files: usize,
    seed: u64,
    day: Date,
    gzip: bool,
    edges: usize,
    copy_out: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: gen_events --out DIR --events N --files F --seed S [--day YYYY-MM-DD] [--gzip] [--edges N] [--copy-out FILE]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::new(),
        events: 1_000_000,
        files: 50,
        seed: 1,
        day: OffsetDateTime::now_utc()
            .date()
            .previous_day()
            .expect("a day"),
        gzip: false,
        edges: 16,
        copy_out: None,
    };
    let mut it = std::env::args().skip(1);
    let mut have_out = false;
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--out" => {
                a.out = v().into();
                have_out = true;
            }
            "--events" => a.events = v().parse().unwrap_or_else(|_| usage()),
            "--files" => a.files = v().parse().unwrap_or_else(|_| usage()),
            "--seed" => a.seed = v().parse().unwrap_or_else(|_| usage()),
            "--day" => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                a.day = Date::parse(&v(), &fmt).unwrap_or_else(|_| usage());
            }
            "--gzip" => a.gzip = true,
            "--edges" => a.edges = v().parse().unwrap_or_else(|_| usage()),
            "--copy-out" => a.copy_out = Some(v().into()),
            _ => usage(),
        }
    }
    if !have_out || a.files == 0 || a.events < a.files {
        usage();
    }
    a
}

/// Numbers `e` at an edge drawn at random (none when there are no edges).
fn number(rng: &mut fastrand::Rng, edges: &mut [(EdgeId, u64)], e: &mut TrackingEvent) {
    if edges.is_empty() {
        return;
    }
    let (edge, last) = &mut edges[rng.usize(..edges.len())];
    *last += 1;
    e.sequence = Some(earshot_domain::EdgeSeq {
        edge: *edge,
        seq: *last,
    });
}

fn weighted<T: Copy>(rng: &mut fastrand::Rng, items: &[(T, u32)]) -> T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.u32(..total);
    for (item, w) in items {
        if x < *w {
            return *item;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

struct Campaign {
    id: CampaignId,
    creatives: Vec<CreativeId>,
    /// Shows the campaign runs on.
    shows: Vec<u32>,
}

/// A skewed listener: a few listen a lot (squared uniform draws).
fn listener(rng: &mut fastrand::Rng, seed: u64) -> ListenerId {
    let u = rng.f64();
    let n = ((u * u) * LISTENERS as f64) as u64;
    let h = (n ^ seed.rotate_left(17))
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h2 = h.rotate_left(29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ListenerId::parse(&format!("{h:016x}{h2:016x}")).expect("32 hex digits")
}

/// Timestamps of one day following the diurnal curve, sorted.
fn timestamps(rng: &mut fastrand::Rng, day: Date, n: usize) -> Vec<OffsetDateTime> {
    let hours: Vec<(u32, u32)> = HOURLY
        .iter()
        .enumerate()
        .map(|(h, w)| (h as u32, *w))
        .collect();
    let start = day.midnight().assume_utc();
    let mut ms: Vec<i64> = (0..n)
        .map(|_| weighted(rng, &hours) as i64 * 3_600_000 + rng.i64(0..3_600_000))
        .collect();
    ms.sort_unstable();
    ms.into_iter()
        .map(|m| start + time::Duration::milliseconds(m))
        .collect()
}

/// COPY text escaping (the `events` columns are text, so only these matter).
fn copy_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"\\N"),
        Some(s) => {
            for b in s.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b => out.push(b),
                }
            }
        }
    }
}

/// One `events` row as COPY text, in the column order of `COPY_EVENTS`
/// (services/loader/src/store.rs): id .. trace_id, object_id, region,
/// listener_period.
fn copy_row(out: &mut Vec<u8>, e: &TrackingEvent, object_id: usize) {
    let id = e.id.to_string();
    let ts = earshot_domain::wire::format_ts(e.ts);
    let error_code = e.error_code.map(|c| c.to_string());
    let fields: [Option<&str>; 18] = [
        Some(&id),
        Some(&ts),
        e.campaign.as_ref().map(|x| x.as_str()),
        e.creative.as_ref().map(|x| x.as_str()),
        e.episode.as_ref().map(|x| x.as_str()),
        e.show.as_ref().map(|x| x.as_str()),
        e.placement.map(|x| x.as_str()),
        e.event.map(|x| x.as_str()),
        error_code.as_deref(),
        Some(e.listener.as_str()),
        e.ua.as_deref(),
        e.app.as_deref(),
        e.device.as_deref(),
        e.os.as_deref(),
        e.country.as_ref().map(|c| c.as_str()),
        Some(e.verdict.as_str()),
        e.reason.as_deref(),
        e.trace_id.as_deref(),
    ];
    for f in fields {
        copy_text(out, f);
        out.push(b'\t');
    }
    let _ = write!(out, "{object_id}\t");
    copy_text(out, e.region.as_ref().map(|r| r.as_str()));
    out.push(b'\t');
    copy_text(out, Some(e.listener_period.as_str()));
    out.push(b'\n');
}

fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let classifier = UaClassifier::builtin();

    let campaigns: Vec<Campaign> = (0..CAMPAIGNS)
        .map(|i| Campaign {
            id: CampaignId::parse(&format!(
                "cmp-{:03}-{}",
                i + 1,
                ["spring", "launch", "brand", "promo"][i % 4]
            ))
            .expect("campaign id"),
            creatives: (0..2 + rng.usize(..3))
                .map(|j| {
                    CreativeId::parse(&format!(
                        "cr_{}_{}",
                        [15, 30, 60, 90][j],
                        ["a", "b"][rng.usize(..2)]
                    ))
                    .expect("creative id")
                })
                .collect(),
            shows: (0..3 + rng.u32(..6)).map(|_| rng.u32(..SHOWS)).collect(),
        })
        .collect();
    // Bigger campaigns get more traffic.
    let campaign_weights: Vec<(usize, u32)> = (0..CAMPAIGNS)
        .map(|i| (i, 1 + (CAMPAIGNS - i) as u32 * 3))
        .collect();

    std::fs::create_dir_all(&args.out)?;
    let mut copy = match &args.copy_out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };

    // Each edge's id and last number; hits go to edges at random, as a
    // load balancer spreads them. Drawn from their own generator, so the
    // same seed gives the same traffic with or without numbers (the
    // ledger's cost is the difference of two loads).
    let mut edge_rng = fastrand::Rng::with_seed(args.seed ^ 0x6564_6765);
    let mut edges: Vec<(EdgeId, u64)> = (0..args.edges)
        .map(|_| {
            let id = EdgeId::parse(&format!("{:032x}", edge_rng.u128(..))).expect("32 hex digits");
            (id, 0)
        })
        .collect();
    let ts_all = timestamps(&mut rng, args.day, args.events);
    let mut recent: Vec<TrackingEvent> = Vec::with_capacity(REPEAT_WINDOW);
    let mut recent_next = 0usize;
    let mut plays: Vec<Play> = Vec::with_capacity(OPEN_PLAYS);
    let impression_share = 1.0 / FUNNEL.iter().map(|&(k, _)| per_impression(k)).sum::<f64>();
    let per_file = args.events.div_ceil(args.files);
    let mut previous_object: Vec<TrackingEvent> = Vec::new();
    let (mut bots, mut invalid, mut repeats, mut retries) = (0usize, 0usize, 0usize, 0usize);
    let mut bytes_out = 0u64;

    for (f, slice) in ts_all.chunks(per_file).enumerate() {
        let mut object: Vec<TrackingEvent> = Vec::with_capacity(slice.len());
        for ts in slice {
            let ts = *ts;
            if !previous_object.is_empty() && rng.f64() < RETRY_SHARE {
                object.push(previous_object[rng.usize(..previous_object.len())].clone());
                retries += 1;
                continue;
            }
            let ms = (ts.unix_timestamp_nanos() / 1_000_000) as u64;
            let mut rand = [0u8; 10];
            rng.fill(&mut rand);
            let id = v7_seeded(ts, &rand);
            let trace_id = Some(format!(
                "Root=1-{:08x}-{:024x}",
                ms / 1000,
                rng.u128(..) >> 32
            ));
            if !recent.is_empty() && rng.f64() < REPEAT_SHARE {
                let mut e = recent[rng.usize(..recent.len())].clone();
                e.id = id;
                e.ts = ts;
                e.trace_id = trace_id;
                number(&mut edge_rng, &mut edges, &mut e);
                object.push(e);
                repeats += 1;
                continue;
            }
            // A hit of a play under way, or the impression of a new play:
            // new plays come at the share that keeps FUNNEL's proportion of
            // impressions.
            if !plays.is_empty() && (plays.len() >= OPEN_PLAYS || rng.f64() >= impression_share) {
                let i = rng.usize(..plays.len());
                let play = &mut plays[i];
                let kind = play
                    .to_come
                    .pop()
                    .expect("a play under way has hits to come");
                let mut e = play.first.clone();
                if play.to_come.is_empty() {
                    plays.swap_remove(i);
                }
                e.id = id;
                e.ts = ts;
                e.trace_id = trace_id;
                e.event = Some(kind);
                e.error_code =
                    (kind == EventKind::Error).then(|| [402u16, 405, 900, 301][rng.usize(..4)]);
                match e.verdict {
                    Verdict::Bot => bots += 1,
                    Verdict::Invalid => invalid += 1,
                    Verdict::Valid => remember(&mut recent, &mut recent_next, &e),
                }
                number(&mut edge_rng, &mut edges, &mut e);
                object.push(e);
                continue;
            }
            let c = &campaigns[weighted(&mut rng, &campaign_weights)];
            let show = c.shows[rng.usize(..c.shows.len())];
            let r = rng.f64();
            let ua = if r < MISSING_UA_SHARE {
                None
            } else if r < MISSING_UA_SHARE + BOT_UA_SHARE {
                Some(weighted(&mut rng, BOT_UAS))
            } else {
                Some(weighted(&mut rng, PLAYER_UAS))
            };
            let info = classifier.classify(ua);
            let kind = EventKind::Impression;
            // The builder's calls draw from `rng` in this order, field by field.
            let mut e = event()
                .id(id)
                .ts(ts)
                .campaign(c.id.as_str())
                .creative(c.creatives[rng.usize(..c.creatives.len())].as_str())
                .episode(Some(&format!(
                    "show{show:02}-ep{:03}",
                    rng.u32(..EPISODES_PER_SHOW) + 100
                )))
                .show(&format!("show{show:02}"))
                .placement(weighted(
                    &mut rng,
                    &[
                        (Placement::Pre, 5),
                        (Placement::Mid, 4),
                        (Placement::Post, 2),
                    ],
                ))
                .kind(kind)
                .error_code(
                    (kind == EventKind::Error).then(|| [402u16, 405, 900, 301][rng.usize(..4)]),
                )
                .listener_id(listener(&mut rng, args.seed))
                .ua(ua)
                .trace_id(trace_id)
                .build();
            e.country = (rng.f64() < 0.97)
                .then(|| CountryCode::parse(weighted(&mut rng, COUNTRIES)))
                .flatten();
            if info.class == UaClass::Bot {
                e.verdict = Verdict::Bot;
                e.reason = info.bot_reason.clone();
                bots += 1;
            } else {
                e.app = info.name.clone();
                e.device = info.device.clone();
                e.os = info.os.map(str::to_owned);
                if rng.f64() < INVALID_SHARE {
                    let reason = INVALID_REASONS[rng.usize(..INVALID_REASONS.len())];
                    e.verdict = Verdict::Invalid;
                    e.reason = Some(reason.to_owned());
                    if reason == "bad_campaign_id" {
                        e.campaign = None;
                    }
                    invalid += 1;
                }
            }
            if e.verdict == Verdict::Valid {
                remember(&mut recent, &mut recent_next, &e);
            }
            let mut to_come = funnel(&mut rng);
            if !to_come.is_empty() {
                to_come.reverse();
                plays.push(Play {
                    first: e.clone(),
                    to_come,
                });
            }
            number(&mut edge_rng, &mut edges, &mut e);
            object.push(e);
        }
        let mut data = ndjson(&object);
        let end = slice.last().copied().unwrap_or(OffsetDateTime::UNIX_EPOCH);
        for &(edge, seq) in &edges {
            Heartbeat { edge, seq, ts: end }.write_ndjson(&mut data);
        }
        // Firehose-like names: sorted by time.
        let name = format!("events-{:05}.ndjson", f + 1);
        if args.gzip {
            // flate2's default level, which the bench's figures were made with.
            let gz = gzip_at(&data, 6);
            bytes_out += gz.len() as u64;
            std::fs::write(args.out.join(format!("{name}.gz")), gz)?;
        } else {
            bytes_out += data.len() as u64;
            std::fs::write(args.out.join(name), &data)?;
        }
        if let Some(w) = copy.as_mut() {
            let mut buf = Vec::with_capacity(object.len() * 480);
            for e in &object {
                copy_row(&mut buf, e, f + 1);
            }
            w.write_all(&buf)?;
        }
        previous_object = object;
    }
    if let Some(mut w) = copy {
        w.flush()?;
    }
    let n = args.events as f64;
    println!(
        "events={} files={} bytes={} bytes_per_event={:.0} bots={:.2}% invalid={:.2}% repeated_keys={:.2}% retried_lines={:.2}% day={}",
        args.events,
        args.files,
        bytes_out,
        bytes_out as f64 / n,
        100.0 * bots as f64 / n,
        100.0 * invalid as f64 / n,
        100.0 * repeats as f64 / n,
        100.0 * retries as f64 / n,
        args.day
    );
    Ok(())
}
