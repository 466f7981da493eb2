//! Edge metrics as CloudWatch Embedded Metric Format (EMF) log lines: the
//! Lambda writes JSON to stdout, CloudWatch turns it into metrics. No API
//! calls, no per-metric charge, nothing on the request path but atomics.
//!
//! Counters are aggregated in memory and written at most once per
//! [`EMIT_INTERVAL`] (checked after each hit) and at shutdown, so a million
//! hits cost a handful of log lines, not a million.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use earshot_domain::Verdict;

/// How often aggregated metrics are written.
pub const EMIT_INTERVAL: Duration = Duration::from_secs(60);
/// The CloudWatch namespace the SAM template's alarms read.
pub const NAMESPACE: &str = "earshot/edge";

#[derive(Default)]
pub struct Counters {
    pub hits_valid: AtomicU64,
    pub hits_bot: AtomicU64,
    pub hits_invalid: AtomicU64,
    pub batches: AtomicU64,
    pub batch_records: AtomicU64,
    pub batch_events: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub firehose_calls: AtomicU64,
    pub firehose_latency_us: AtomicU64,
}

pub struct Metrics {
    pub counters: Counters,
    function_name: String,
    last_emit: Mutex<Instant>,
}

fn take(c: &AtomicU64) -> u64 {
    c.swap(0, Ordering::Relaxed)
}

impl Metrics {
    pub fn new(function_name: impl Into<String>) -> Self {
        Self {
            counters: Counters::default(),
            function_name: function_name.into(),
            last_emit: Mutex::new(Instant::now()),
        }
    }

    pub fn hit(&self, verdict: Verdict) {
        let c = match verdict {
            Verdict::Valid => &self.counters.hits_valid,
            Verdict::Bot => &self.counters.hits_bot,
            Verdict::Invalid => &self.counters.hits_invalid,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes the EMF line if the interval has passed.
    pub fn maybe_emit(&self) {
        let due = {
            let mut last = self.last_emit.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= EMIT_INTERVAL {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            self.emit();
        }
    }

    /// Writes the EMF line now (shutdown, or when due) and resets counters.
    pub fn emit(&self) {
        let line = self.emf_line(time::OffsetDateTime::now_utc());
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
    }

    /// The EMF document for the counters since the last call (None when
    /// nothing happened), resetting them.
    pub fn emf_line(&self, now: time::OffsetDateTime) -> Option<String> {
        let c = &self.counters;
        let values = [
            ("HitsValid", "Count", take(&c.hits_valid)),
            ("HitsBot", "Count", take(&c.hits_bot)),
            ("HitsInvalid", "Count", take(&c.hits_invalid)),
            ("Batches", "Count", take(&c.batches)),
            ("BatchRecords", "Count", take(&c.batch_records)),
            ("BatchEvents", "Count", take(&c.batch_events)),
            ("FirehoseRetries", "Count", take(&c.retries)),
            ("DeadLetteredEvents", "Count", take(&c.dead_lettered)),
        ];
        let calls = take(&c.firehose_calls);
        let latency_us = take(&c.firehose_latency_us);
        if values.iter().all(|v| v.2 == 0) && calls == 0 {
            return None;
        }
        let mut defs: Vec<serde_json::Value> = values
            .iter()
            .map(|(n, u, _)| serde_json::json!({"Name": n, "Unit": u}))
            .collect();
        let mut doc = serde_json::Map::new();
        doc.insert("FunctionName".into(), self.function_name.clone().into());
        for (n, _, v) in values {
            doc.insert(n.into(), v.into());
        }
        if calls > 0 {
            defs.push(serde_json::json!({"Name": "FirehoseLatencyMs", "Unit": "Milliseconds"}));
            doc.insert(
                "FirehoseLatencyMs".into(),
                serde_json::json!(latency_us as f64 / calls as f64 / 1000.0),
            );
        }
        doc.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": (now.unix_timestamp_nanos() / 1_000_000) as i64,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": defs,
                }]
            }),
        );
        Some(serde_json::Value::Object(doc).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_holds_the_counts_since_last_time_then_resets() {
        let m = Metrics::new("edge-fn");
        assert_eq!(m.emf_line(time::OffsetDateTime::UNIX_EPOCH), None);
        m.hit(Verdict::Valid);
        m.hit(Verdict::Valid);
        m.hit(Verdict::Bot);
        m.add(&m.counters.dead_lettered, 3);
        m.add(&m.counters.firehose_calls, 2);
        m.add(&m.counters.firehose_latency_us, 9000);
        let line = m.emf_line(time::OffsetDateTime::UNIX_EPOCH).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["HitsValid"], 2);
        assert_eq!(v["HitsBot"], 1);
        assert_eq!(v["HitsInvalid"], 0);
        assert_eq!(v["DeadLetteredEvents"], 3);
        assert_eq!(v["FirehoseLatencyMs"], 4.5);
        assert_eq!(v["FunctionName"], "edge-fn");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "earshot/edge"
        );
        assert_eq!(m.emf_line(time::OffsetDateTime::UNIX_EPOCH), None);
    }
}
