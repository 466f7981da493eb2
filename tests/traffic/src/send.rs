//! Sending hits to an edge at their scheduled offsets, with bounded
//! concurrency, and noting the UTC day each was answered on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use time::{Date, OffsetDateTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::generate::Hit;

/// The pixel's answer: the 43-byte transparent GIF.
const PIXEL_BYTES: usize = 43;

#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The pixel endpoint, e.g. `http://127.0.0.1:8787/v1/t`.
    pub pixel_url: String,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Keep to each hit's offset; `false` sends as fast as concurrency allows.
    pub paced: bool,
    /// Per-request timeout (a sync edge waits on Firehose retries: seconds).
    pub timeout: Duration,
}

impl SendOptions {
    pub fn new(pixel_url: impl Into<String>) -> Self {
        Self {
            pixel_url: pixel_url.into(),
            concurrency: 16,
            paced: true,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What happened to one hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with the GIF. `day`: the UTC day when the answer came; the edge
    /// stamped the event between `sent_day` and `day`.
    Answered { sent_day: Date, day: Date },
    /// No answer, or not the GIF: the edge may or may not have recorded it.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct SendReport {
    /// One per hit, in the order of the hits given.
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
    /// How far behind schedule the last request started (0 when it kept up).
    pub max_lag: Duration,
}

impl SendReport {
    pub fn answered(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Answered { .. }))
            .count()
    }

    pub fn failures(&self) -> Vec<(usize, &str)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Failed(why) => Some((i, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Hits sent before and answered after a UTC midnight: the day the
    /// edge gave them is not known from here.
    pub fn straddled(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Answered { sent_day, day } if sent_day != day))
            .count()
    }

    /// The day of each answered hit (the answer's day).
    pub fn day_of(&self, i: usize) -> Option<Date> {
        match self.outcomes.get(i)? {
            Outcome::Answered { day, .. } => Some(*day),
            Outcome::Failed(_) => None,
        }
    }

    pub fn rate(&self) -> f64 {
        self.outcomes.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// An HTTP client for the edge: loopback, no proxy, a connection per slot.
pub fn client(opts: &SendOptions) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(opts.concurrency)
        .timeout(opts.timeout)
        .build()
        .context("building the HTTP client")
}

/// Sends one hit; `Ok` only for the GIF.
pub async fn send_one(client: &reqwest::Client, pixel_url: &str, h: &Hit) -> anyhow::Result<()> {
    let mut req = client.get(format!("{pixel_url}?{}", h.query));
    for (name, value) in h.request_headers() {
        req = req.header(name, value);
    }
    let resp = req.send().await.context("no answer")?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading the answer")?;
    anyhow::ensure!(
        status == 200 && body.len() == PIXEL_BYTES,
        "answered {status} with {} bytes",
        body.len()
    );
    Ok(())
}

/// Sends `hits` in order, each not before its offset (relative to the
/// first hit's) when paced. Never fails as a whole: each hit's outcome is
/// in the report.
pub async fn send(hits: &[Hit], opts: &SendOptions) -> anyhow::Result<SendReport> {
    let client = client(opts)?;
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let started = Instant::now();
    let base = hits.first().map_or(Duration::ZERO, |h| h.offset);
    let mut tasks = tokio::task::JoinSet::new();
    let mut outcomes = vec![Outcome::Failed("not sent".into()); hits.len()];
    let mut max_lag = Duration::ZERO;
    for (i, h) in hits.iter().enumerate() {
        let due = started + h.offset.saturating_sub(base);
        if opts.paced {
            tokio::time::sleep_until(due).await;
        }
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        if opts.paced {
            max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        }
        let (client, url, h) = (client.clone(), opts.pixel_url.clone(), h.clone());
        tasks.spawn(async move {
            let sent_day = OffsetDateTime::now_utc().date();
            let r = send_one(&client, &url, &h).await;
            let day = OffsetDateTime::now_utc().date();
            drop(permit);
            let outcome = match r {
                Ok(()) => Outcome::Answered { sent_day, day },
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            (i, outcome)
        });
        // Reap finished requests as we go, so long runs keep the set small.
        while let Some(r) = tasks.try_join_next() {
            let (j, o) = r.context("a request task panicked")?;
            outcomes[j] = o;
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (j, o) = r.context("a request task panicked")?;
        outcomes[j] = o;
    }
    Ok(SendReport {
        outcomes,
        elapsed: started.elapsed(),
        max_lag,
    })
}
