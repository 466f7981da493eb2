//! Where objects come from: a directory, an S3 prefix, or an SQS queue of S3
//! notifications.

pub mod dir;
pub mod s3;
pub mod sqs;

use std::path::PathBuf;

/// `EARSHOT_SOURCE`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Dir(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    Sqs {
        queue_url: String,
        /// Where notifications may point (`EARSHOT_EVENTS_BUCKET`); None
        /// admits any bucket.
        admits: Option<EventsLocation>,
    },
}

/// The bucket and key prefix Firehose writes events to: the only objects an
/// S3 notification may make the loader read. Anyone who can send to the
/// queue or put an object elsewhere in the account cannot get it counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsLocation {
    pub bucket: String,
    pub prefix: String,
}

impl EventsLocation {
    pub fn admits(&self, bucket: &str, key: &str) -> bool {
        bucket == self.bucket && key.starts_with(&self.prefix)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("EARSHOT_SOURCE: {0:?} is not `sqs:QUEUE_URL`, `s3://bucket/prefix` or `dir:PATH`")]
pub struct BadSourceSpec(pub String);

impl std::str::FromStr for SourceSpec {
    type Err = BadSourceSpec;
    fn from_str(s: &str) -> Result<Self, BadSourceSpec> {
        let bad = || BadSourceSpec(s.to_owned());
        if let Some(p) = s.strip_prefix("dir:") {
            if p.is_empty() {
                return Err(bad());
            }
            Ok(SourceSpec::Dir(p.into()))
        } else if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad());
            }
            Ok(SourceSpec::S3 {
                bucket: bucket.into(),
                prefix: prefix.into(),
            })
        } else if let Some(url) = s.strip_prefix("sqs:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad());
            }
            Ok(SourceSpec::Sqs {
                queue_url: url.into(),
                admits: None,
            })
        } else {
            Err(bad())
        }
    }
}

/// One object to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The ledger's source: `s3://bucket` or `dir:/path`.
    pub source: String,
    pub key: String,
    /// Known before download for S3 (listing or notification); None for files.
    pub etag: Option<String>,
}

/// Why no retry can fetch an object a delivery names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanent {
    /// Deleted since it was announced or listed.
    NotFound,
    /// The loader's role may not read it (a bucket policy, a KMS key).
    AccessDenied,
    /// The bucket does not exist (any more).
    NoSuchBucket,
}

impl Permanent {
    pub fn as_str(self) -> &'static str {
        match self {
            Permanent::NotFound => "does not exist",
            Permanent::AccessDenied => "may not be read (access denied)",
            Permanent::NoSuchBucket => "is in a bucket that does not exist",
        }
    }
}

/// An object that fails with a permanent error: its delivery is left
/// unacknowledged (SQS hands it out again until the queue's redrive policy
/// moves it to the dead-letter queue after `maxReceiveCount` receives), and
/// the loader moves on instead of retrying forever.
#[derive(Debug, thiserror::Error)]
#[error("{from}/{key} {}", why.as_str())]
pub struct Unfetchable {
    /// The ledger's source (`s3://bucket`, `dir:/path`).
    pub from: String,
    pub key: String,
    pub why: Permanent,
}

/// A unit of acknowledgement: the objects of one SQS message (deleted after
/// all are committed), or one object of a directory or listing.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub objects: Vec<Object>,
    pub(crate) receipt: Option<String>,
}

/// The configured source.
pub enum Source {
    Dir(dir::DirSource),
    S3(s3::S3Source),
    Sqs(sqs::SqsSource),
}

/// Clients for S3 and SQS from the standard AWS chain; `AWS_ENDPOINT_URL`
/// (moto) switches S3 to path-style addressing, which moto needs.
pub async fn aws_clients() -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let path_style = std::env::var("AWS_ENDPOINT_URL").is_ok()
        || std::env::var("EARSHOT_S3_FORCE_PATH_STYLE").is_ok_and(|v| v == "true");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            .build(),
    );
    (s3, aws_sdk_sqs::Client::new(&shared))
}

impl Source {
    pub async fn open(spec: &SourceSpec) -> anyhow::Result<Self> {
        Ok(match spec {
            SourceSpec::Dir(p) => Source::Dir(dir::DirSource::new(p.clone())?),
            SourceSpec::S3 { bucket, prefix } => {
                let (s3, _) = aws_clients().await;
                Source::S3(s3::S3Source::new(s3, bucket.clone(), prefix.clone()))
            }
            SourceSpec::Sqs { queue_url, admits } => {
                let (s3, sqs) = aws_clients().await;
                Source::Sqs(sqs::SqsSource::new(
                    sqs,
                    s3,
                    queue_url.clone(),
                    admits.clone(),
                ))
            }
        })
    }

    /// New deliveries. `short` asks for a quick answer (`--once`) instead of a
    /// long poll.
    pub async fn poll(&mut self, short: bool) -> anyhow::Result<Vec<Delivery>> {
        match self {
            Source::Dir(s) => s.poll(),
            Source::S3(s) => s.poll().await,
            Source::Sqs(s) => s.poll(short).await,
        }
    }

    /// The object's bytes and its etag (for files: the sha256 of the bytes).
    pub async fn fetch(&self, obj: &Object) -> anyhow::Result<(Vec<u8>, String)> {
        match self {
            Source::Dir(s) => s.fetch(obj).await,
            Source::S3(s) => s3::fetch(s.client(), obj).await,
            Source::Sqs(s) => s3::fetch(s.s3(), obj).await,
        }
    }

    /// Called once every object of the delivery is committed (or was already loaded).
    pub async fn ack(&mut self, d: &Delivery) -> anyhow::Result<()> {
        match self {
            Source::Dir(s) => {
                s.done(d);
                Ok(())
            }
            Source::S3(s) => {
                s.done(d);
                Ok(())
            }
            Source::Sqs(s) => s.ack(d).await,
        }
    }

    /// Whether polling waits by itself (SQS long polling) or needs a pause.
    pub fn waits_by_itself(&self) -> bool {
        matches!(self, Source::Sqs(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse_or_say_what_is_expected() {
        assert_eq!("dir:./data".parse(), Ok(SourceSpec::Dir("./data".into())));
        assert_eq!(
            "s3://bucket/events/2026/".parse(),
            Ok(SourceSpec::S3 {
                bucket: "bucket".into(),
                prefix: "events/2026/".into()
            })
        );
        assert_eq!(
            "s3://bucket".parse(),
            Ok(SourceSpec::S3 {
                bucket: "bucket".into(),
                prefix: "".into()
            })
        );
        assert_eq!(
            "sqs:http://127.0.0.1:5000/123/q".parse(),
            Ok(SourceSpec::Sqs {
                queue_url: "http://127.0.0.1:5000/123/q".into(),
                admits: None,
            })
        );
        for bad in ["", "dir:", "s3://", "sqs:queue", "kafka:x"] {
            assert_eq!(
                bad.parse::<SourceSpec>(),
                Err(BadSourceSpec(bad.into())),
                "{bad}"
            );
        }
    }
}
