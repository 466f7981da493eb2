//! The loader's settings (`[loader]`, `EARSHOT_…` variables), checked where
//! they become a run's options.

use std::time::Duration;

use earshot_platform::config::{DatabaseSettings, EnvVar};
use serde::Deserialize;

use crate::run::LoadOptions;
use crate::source::{BadSourceSpec, EventsLocation, SourceSpec};
use crate::store::PART_EVENTS;
use crate::watchdog::DEFAULT_STALL_LIMIT;

/// Default address of the loader's /healthz and /metrics.
pub const DEFAULT_LOADER_ADDR: &str = "127.0.0.1:9091";
/// Default source: the local edge's directory sink.
pub const DEFAULT_SOURCE: &str = "dir:./data/events";
/// Raw events are kept this many days (partitions older are dropped).
/// 400 covers the longest report range (400 days) the API accepts.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// Runs of objects the loader loads side by side, each object in its own
/// transaction. One run already overlaps one object's counting and commit
/// with the next one's COPYs, and writes what one object at a time writes.
/// One by default, because only then is the result independent of timing:
/// when the same counting key arrives in two objects, the hit that counts
/// is the one in the object loaded first, so with two runs side by side it
/// is the one whose transaction commits first. Totals are the same either
/// way; which hour, app or country the counted hit falls in can differ.
/// Backfills that want speed over that may raise it, with two more database
/// connections per run (docs/BENCHMARKS.md, "Loader").
pub const DEFAULT_LOAD_CONCURRENCY: u32 = 1;
/// Seconds between polls of a directory or S3 prefix when idle.
pub const DEFAULT_POLL_INTERVAL_SECONDS: u64 = 2;
/// Where Firehose writes events in the bucket (the SAM template's
/// `Prefix: events/YYYY/MM/DD/HH/`); its errors go under `errors/`.
pub const DEFAULT_EVENTS_PREFIX: &str = "events/";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderSettings {
    /// Where `/healthz` and `/metrics` listen.
    pub addr: String,
    /// `sqs:QUEUE_URL`, `s3://bucket/prefix` or `dir:PATH`.
    pub source: String,
    /// Days of raw events kept.
    pub retention_days: u32,
    /// Seconds between polls of dir/s3 sources when idle.
    pub poll_interval_seconds: u64,
    /// Runs of objects loaded side by side.
    pub concurrency: u32,
    /// Seconds one step (a poll, an object's download, half of its
    /// transaction, a merge) may run before the loader exits as stalled.
    pub stall_seconds: u64,
    /// Most events in one part of an object loaded in parts (an object
    /// whose load was tried before and did not commit).
    pub part_events: usize,
    /// The bucket S3 notifications may name (an `sqs:` source); unset
    /// admits any, which only a local stack should do.
    pub events_bucket: Option<String>,
    /// The key prefix notified objects must have in `events_bucket`.
    pub events_prefix: String,
}

impl Default for LoaderSettings {
    fn default() -> Self {
        Self {
            addr: DEFAULT_LOADER_ADDR.into(),
            source: DEFAULT_SOURCE.into(),
            retention_days: DEFAULT_RETENTION_DAYS,
            poll_interval_seconds: DEFAULT_POLL_INTERVAL_SECONDS,
            concurrency: DEFAULT_LOAD_CONCURRENCY,
            stall_seconds: DEFAULT_STALL_LIMIT.as_secs(),
            part_events: PART_EVENTS,
            events_bucket: None,
            events_prefix: DEFAULT_EVENTS_PREFIX.into(),
        }
    }
}

/// A loader setting that cannot work, naming its variable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("EARSHOT_LOAD_CONCURRENCY={concurrency} needs {needed} connections (two per run of loads, plus one); EARSHOT_DATABASE_MAX_CONNECTIONS is {available}")]
    TooFewConnections {
        concurrency: u32,
        needed: u32,
        available: u32,
    },
    #[error("EARSHOT_LOADER_STALL_SECONDS must be at least 1 (seconds one loader step may run)")]
    NoStallLimit,
    #[error("EARSHOT_LOAD_PART_EVENTS must be at least 1 (most events in one part of an object loaded in parts)")]
    NoPartEvents,
    #[error(transparent)]
    Source(#[from] BadSourceSpec),
}

impl LoaderSettings {
    /// Its variables.
    pub const ENV: &[EnvVar] = &[
        ("EARSHOT_LOADER_ADDR", "addr"),
        ("EARSHOT_SOURCE", "source"),
        ("EARSHOT_RETENTION_DAYS", "retention_days"),
        ("EARSHOT_POLL_INTERVAL_SECONDS", "poll_interval_seconds"),
        ("EARSHOT_LOAD_CONCURRENCY", "concurrency"),
        ("EARSHOT_LOADER_STALL_SECONDS", "stall_seconds"),
        ("EARSHOT_LOAD_PART_EVENTS", "part_events"),
        ("EARSHOT_EVENTS_BUCKET", "events_bucket"),
        ("EARSHOT_EVENTS_PREFIX", "events_prefix"),
    ];

    /// The options of a run (`once`: process what is there, then return),
    /// checked against the pool `database` gives it.
    pub fn options(
        &self,
        once: bool,
        database: &DatabaseSettings,
    ) -> Result<LoadOptions, SettingsError> {
        // Each concurrent run of loads holds two transactions at once (one
        // finishing, the next beginning); one more connection serves the
        // ledger checks and partition DDL.
        let needed = 2 * self.concurrency + 1;
        if needed > database.max_connections {
            return Err(SettingsError::TooFewConnections {
                concurrency: self.concurrency,
                needed,
                available: database.max_connections,
            });
        }
        if self.stall_seconds == 0 {
            return Err(SettingsError::NoStallLimit);
        }
        if self.part_events == 0 {
            return Err(SettingsError::NoPartEvents);
        }
        Ok(LoadOptions {
            once,
            poll_interval: Duration::from_secs(self.poll_interval_seconds),
            retention_days: self.retention_days,
            concurrency: self.concurrency as usize,
            stall_limit: Duration::from_secs(self.stall_seconds),
            part_events: self.part_events,
        })
    }

    /// The source to load: `overridden` (`--source`) or the setting; an SQS
    /// source admits only notifications of the events bucket and prefix.
    pub fn source(&self, overridden: Option<&str>) -> Result<SourceSpec, SettingsError> {
        let mut spec: SourceSpec = overridden.unwrap_or(&self.source).parse()?;
        if let SourceSpec::Sqs { admits, .. } = &mut spec {
            *admits = self
                .events_bucket
                .as_deref()
                .filter(|b| !b.is_empty())
                .map(|bucket| EventsLocation {
                    bucket: bucket.to_owned(),
                    prefix: self.events_prefix.clone(),
                });
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_two_connections_per_run_plus_one_a_stall_limit_and_parts_of_at_least_one_event()
    {
        let db = |n| DatabaseSettings {
            max_connections: n,
            ..Default::default()
        };
        let two_runs = LoaderSettings {
            concurrency: 2,
            ..Default::default()
        };
        assert_eq!(
            two_runs.options(true, &db(4)).unwrap_err().to_string(),
            "EARSHOT_LOAD_CONCURRENCY=2 needs 5 connections (two per run of loads, plus one); EARSHOT_DATABASE_MAX_CONNECTIONS is 4"
        );
        assert_eq!(two_runs.options(true, &db(5)).unwrap().concurrency, 2);
        let no_limit = LoaderSettings {
            stall_seconds: 0,
            ..Default::default()
        };
        assert!(matches!(
            no_limit.options(false, &db(4)),
            Err(SettingsError::NoStallLimit)
        ));
        let no_parts = LoaderSettings {
            part_events: 0,
            ..Default::default()
        };
        assert_eq!(
            no_parts.options(false, &db(4)).unwrap_err().to_string(),
            "EARSHOT_LOAD_PART_EVENTS must be at least 1 (most events in one part of an object loaded in parts)"
        );
        assert_eq!(
            LoaderSettings::default()
                .options(false, &db(4))
                .unwrap()
                .part_events,
            2_000
        );
    }

    #[test]
    fn an_sqs_source_admits_the_events_bucket_and_prefix_when_they_are_set() {
        let url = "sqs:http://127.0.0.1:5000/123/q";
        let open = LoaderSettings::default().source(Some(url)).unwrap();
        assert!(matches!(open, SourceSpec::Sqs { admits: None, .. }));
        let set = LoaderSettings {
            events_bucket: Some("raw".into()),
            ..Default::default()
        };
        let SourceSpec::Sqs { admits, .. } = set.source(Some(url)).unwrap() else {
            panic!("an sqs source");
        };
        assert_eq!(
            admits,
            Some(EventsLocation {
                bucket: "raw".into(),
                prefix: "events/".into()
            })
        );
        // A listing source names its own bucket and prefix.
        assert!(matches!(
            set.source(Some("s3://raw/events/")).unwrap(),
            SourceSpec::S3 { .. }
        ));
    }
}
