//! Helpers for the real `earshot-edge` binary: start it in local mode, and
//! read back the events it wrote (S3 objects, dead-letter log lines).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use earshot_domain::{Heartbeat, TrackingEvent};
use serde_json::Value;

use crate::process::{ChildProcess, ProcessSpec};

/// The edge in local mode, listening on a port it chose.
pub struct LocalEdge {
    pub process: ChildProcess,
    pub addr: SocketAddr,
}

impl LocalEdge {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_earshot-edge")`) with
    /// `EARSHOT_EDGE_ADDR=127.0.0.1:0`, JSON logs, and `env`; returns once it
    /// logged the address it listens on (an `env` `RUST_LOG` must keep info
    /// level, or that line never comes).
    pub async fn spawn(
        binary: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let spec = ProcessSpec::new(binary)
            .env("EARSHOT_EDGE_ADDR", "127.0.0.1:0")
            .env("EARSHOT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env);
        let process = ChildProcess::spawn(&spec)?;
        let addr = process
            .wait_for_stderr(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                if v["message"] != "earshot-edge listening (local mode)" {
                    return None;
                }
                v["addr"].as_str()?.parse().ok()
            })
            .await
            .context("waiting for the edge to listen")?;
        Ok(Self { process, addr })
    }

    /// `http://ADDR`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM (the edge delivers what it holds, then exits); fails unless
    /// it exits with success.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let status = self.process.terminate().await?;
        if !status.success() {
            bail!(
                "the edge exited with {status}\n{}",
                self.process.output_text()
            );
        }
        Ok(())
    }
}

/// Decodes NDJSON (every line must be a valid event or heartbeat; empty
/// input is none): the events, heartbeats left out.
pub fn decode_ndjson(bytes: &[u8]) -> anyhow::Result<Vec<TrackingEvent>> {
    Ok(decode_lines(bytes)?.0)
}

/// Decodes NDJSON into its events and its heartbeats (every line must be
/// one or the other).
pub fn decode_lines(bytes: &[u8]) -> anyhow::Result<(Vec<TrackingEvent>, Vec<Heartbeat>)> {
    let mut events = Vec::new();
    let mut heartbeats = Vec::new();
    for l in bytes
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        let what = || format!("decoding {:?}", String::from_utf8_lossy(l));
        match Heartbeat::decode(l).with_context(what)? {
            Some(h) => heartbeats.push(h),
            None => events.push(TrackingEvent::decode(l).with_context(what)?),
        }
    }
    Ok((events, heartbeats))
}

/// Every file in a directory sink's `dir`, in name order, once its edge has
/// stopped: all must be finalized events files (`events-*.ndjson`); a
/// temporary or unknown file is an error.
pub fn sink_dir_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        files.push(entry?.path());
    }
    files.sort();
    for f in &files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        if !(name.starts_with("events-") && name.ends_with(".ndjson")) {
            bail!("unexpected file in the sink dir (unfinished?): {name}");
        }
    }
    Ok(files)
}

/// The events a directory sink wrote to `dir`, once its edge has stopped
/// ([`sink_dir_files`] checks every file is finalized).
pub fn events_in_sink_dir(dir: &Path) -> anyhow::Result<Vec<TrackingEvent>> {
    let mut events = Vec::new();
    for f in sink_dir_files(dir)? {
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        events.extend(decode_ndjson(&bytes).with_context(|| format!("in {}", f.display()))?);
    }
    Ok(events)
}

/// The events in S3 objects as [`crate::Moto::read_all_objects`] returns them.
pub fn decode_objects(objects: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<TrackingEvent>> {
    let mut out = Vec::new();
    for (key, bytes) in objects {
        if !bytes.ends_with(b"\n") {
            bail!("object {key} does not end with a newline");
        }
        out.extend(decode_ndjson(bytes).with_context(|| format!("object {key}"))?);
    }
    Ok(out)
}

/// The events held by the edge's dead-letter log lines (JSON logs with
/// `"dead_letter":true` and the NDJSON in `ndjson`), in log order.
pub fn dead_lettered_events(stderr_lines: &[String]) -> anyhow::Result<Vec<TrackingEvent>> {
    let mut out = Vec::new();
    for line in stderr_lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["dead_letter"] != Value::Bool(true) {
            continue;
        }
        let ndjson = v["ndjson"]
            .as_str()
            .with_context(|| format!("dead-letter line without ndjson: {line}"))?;
        // `events` counts lines: the edge's heartbeats are dead-lettered too.
        let (events, heartbeats) = decode_lines(ndjson.as_bytes())?;
        if v["events"].as_u64() != Some((events.len() + heartbeats.len()) as u64) {
            bail!(
                "dead-letter line says {} events but holds {} (and {} heartbeats): {line}",
                v["events"],
                events.len(),
                heartbeats.len()
            );
        }
        out.extend(events);
    }
    Ok(out)
}

/// One pixel hit to send, and what the edge must record for it. The trace
/// id is unique per hit, so each recorded event can be matched to its hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitSpec {
    pub query: String,
    pub user_agent: Option<String>,
    pub trace_id: String,
    pub verdict: earshot_domain::Verdict,
    pub reason: Option<String>,
    pub campaign: Option<String>,
    pub event: Option<earshot_domain::EventKind>,
}

/// A user agent the edge's user-agent lists know as a podcast app.
pub const APP_UA: &str = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)";
/// A user agent the edge's user-agent lists know as a bot (`ua_listed:curl`).
pub const BOT_UA: &str = "curl/8.5.0";

/// The signing keys (`EARSHOT_SIGNING_KEYS`) the edge's benches run with.
pub const BENCH_SIGNING_KEYS: &str = "k1:bench-signing-secret-0123456789";
/// The listener secret (`EARSHOT_LISTENER_SECRET`) the edge's benches run with.
pub const BENCH_LISTENER_SECRET: &str = "bench-listener-secret-0123456789";

/// `query` signed with the newest of `keys` (`EARSHOT_SIGNING_KEYS`
/// syntax): `k` and `sig` appended, as the ad server writes them.
pub fn signed_query(keys: &str, query: &str) -> String {
    let keys = earshot_domain::SigningKeys::parse(keys).expect("signing keys");
    let key = keys.newest().expect("a signing key");
    let sig = key.sign(
        &earshot_domain::PixelParams::parse(query)
            .signed_fields()
            .canonical(),
    );
    format!("{query}&k={}&sig={sig}", key.id().as_str())
}

/// `n` hits cycling valid, bot, invalid (unsigned: for an edge without
/// signing keys), on campaign `campaign`, cycling through the VAST events.
pub fn mixed_hits(n: usize, campaign: &str) -> Vec<HitSpec> {
    use earshot_domain::{EventKind, Verdict};
    (0..n)
        .map(|i| {
            let kind = EventKind::ALL[i % EventKind::ALL.len()];
            let trace_id = format!("Root=1-00000000-{:024x}", i + 1);
            match i % 3 {
                0 => HitSpec {
                    query: format!(
                        "c={campaign}&cr=cr_30s&ep=ep{i}&sh=show1&pos=pre&ev={kind}&cb={i}"
                    ),
                    user_agent: Some(APP_UA.to_owned()),
                    trace_id,
                    verdict: Verdict::Valid,
                    reason: None,
                    campaign: Some(campaign.to_owned()),
                    event: Some(kind),
                },
                1 => HitSpec {
                    query: format!("c={campaign}&cr=cr_30s&ev={kind}"),
                    user_agent: Some(BOT_UA.to_owned()),
                    trace_id,
                    verdict: Verdict::Bot,
                    reason: Some("ua_listed:curl".to_owned()),
                    campaign: Some(campaign.to_owned()),
                    event: Some(kind),
                },
                _ => HitSpec {
                    query: format!("c=not%20a%20campaign&cr=cr_30s&ev={kind}"),
                    user_agent: Some(APP_UA.to_owned()),
                    trace_id,
                    verdict: Verdict::Invalid,
                    reason: Some("bad_campaign_id".to_owned()),
                    campaign: None,
                    event: Some(kind),
                },
            }
        })
        .collect()
}

impl HitSpec {
    /// `GET {base}/v1/t?{query}`; fails unless the answer is the 43-byte GIF.
    pub async fn send(&self, client: &reqwest::Client, base_url: &str) -> anyhow::Result<()> {
        let mut req = client
            .get(format!("{base_url}/v1/t?{}", self.query))
            .header("x-amzn-trace-id", &self.trace_id);
        if let Some(ua) = &self.user_agent {
            req = req.header("user-agent", ua);
        }
        let resp = req.send().await.context("sending a pixel hit")?;
        let status = resp.status();
        let ctype = resp.headers().get("content-type").cloned();
        let body = resp.bytes().await?;
        if status != 200
            || body.len() != 43
            || ctype.as_ref().map(|v| v.as_bytes()) != Some(b"image/gif")
        {
            bail!(
                "pixel answered {status} {ctype:?} with {} bytes",
                body.len()
            );
        }
        Ok(())
    }

    /// Checks the recorded event against this hit (all but the listener,
    /// which depends on the secret and the address).
    pub fn check(&self, ev: &TrackingEvent) -> anyhow::Result<()> {
        let got = (
            ev.trace_id.as_deref(),
            ev.verdict,
            ev.reason.as_deref(),
            ev.campaign.as_ref().map(|c| c.as_str()),
            ev.event,
            ev.ua.as_deref(),
        );
        let want = (
            Some(self.trace_id.as_str()),
            self.verdict,
            self.reason.as_deref(),
            self.campaign.as_deref(),
            self.event,
            self.user_agent.as_deref(),
        );
        if got != want {
            bail!(
                "event {} does not match its hit:\n got  {got:?}\n want {want:?}",
                ev.id
            );
        }
        Ok(())
    }
}

/// Matches events to hits one to one by trace id: fails on a missing,
/// duplicated (same trace id twice, or same event id twice) or unknown event.
pub fn match_events_to_hits(hits: &[HitSpec], events: &[TrackingEvent]) -> anyhow::Result<()> {
    use std::collections::{HashMap, HashSet};
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    if ids.len() != events.len() {
        bail!(
            "{} events but only {} distinct ids",
            events.len(),
            ids.len()
        );
    }
    let by_trace: HashMap<&str, &HitSpec> = hits.iter().map(|h| (h.trace_id.as_str(), h)).collect();
    let mut seen = HashSet::new();
    for ev in events {
        let trace = ev.trace_id.as_deref().unwrap_or("");
        let hit = by_trace
            .get(trace)
            .with_context(|| format!("event {} has an unknown trace id {trace:?}", ev.id))?;
        if !seen.insert(trace) {
            bail!("two events for the hit {trace}");
        }
        hit.check(ev)?;
    }
    if seen.len() != hits.len() {
        let missing: Vec<&str> = hits
            .iter()
            .map(|h| h.trace_id.as_str())
            .filter(|t| !seen.contains(t))
            .collect();
        bail!("{} hits have no event: {missing:?}", missing.len());
    }
    Ok(())
}

/// Sends every hit at once (one task each), so the edge sees them
/// concurrently; fails if any answer is not the GIF.
pub async fn send_concurrently(hits: &[HitSpec], base_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut set = tokio::task::JoinSet::new();
    for h in hits {
        let (h, client, base) = (h.clone(), client.clone(), base_url.to_owned());
        set.spawn(async move { h.send(&client, &base).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Sends the hits one after the other, each after the previous answered.
pub async fn send_sequentially(hits: &[HitSpec], base_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    for h in hits {
        h.send(&client, base_url).await?;
    }
    Ok(())
}
