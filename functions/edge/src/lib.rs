#![doc = include_str!("../README.md")]

pub mod config;
pub mod hit;
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod sink;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use earshot_domain::{ListenerHasher, UaClassifier};
use http::Response;

use crate::config::{EdgeConfig, FlushMode, SinkConfig};
use crate::hit::{HitRequest, Recorder, Route};
use crate::metrics::Metrics;
use crate::sink::firehose::{FirehoseSink, RetryPolicy};
use crate::sink::{Pipeline, Sink};

/// The edge: records hits and hands their events to the sink.
pub struct App {
    pub recorder: Recorder,
    pub pipeline: Pipeline,
    pub metrics: Arc<Metrics>,
    pub flush: FlushMode,
}

impl App {
    /// Builds everything once, at start-up: the UA classifier, the listener
    /// hasher, the AWS client and the pipeline. Nothing here runs per hit.
    pub async fn build(cfg: EdgeConfig) -> anyhow::Result<Arc<Self>> {
        let ua = match &cfg.ua_patterns_dir {
            Some(dir) => {
                let (c, report) = UaClassifier::with_opawg_dir(dir)?;
                tracing::info!(files = ?report.files, patterns = report.patterns, skipped = report.skipped.len(), "loaded OPAWG user-agent patterns");
                for s in &report.skipped {
                    tracing::warn!(pattern = %s, "OPAWG pattern skipped");
                }
                c
            }
            None => UaClassifier::builtin(),
        };
        if cfg.listener_secret_is_dev_default {
            tracing::warn!("EARSHOT_LISTENER_SECRET is not set: using the local development secret; never run like this in production");
        }
        let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|_| "earshot-edge-local".into());
        let metrics = Arc::new(Metrics::new(function_name));
        let sink = match &cfg.sink {
            SinkConfig::Firehose { stream } => {
                let client = firehose_client().await;
                Sink::Firehose(FirehoseSink::new(
                    client,
                    stream.clone(),
                    RetryPolicy::new(cfg.firehose_max_attempts),
                    metrics.clone(),
                ))
            }
            SinkConfig::Dir { path } => Sink::Dir(
                sink::dir::DirSink::new(path)
                    .with_context(|| format!("EARSHOT_SINK: cannot create {}", path.display()))?,
            ),
        };
        let pipeline = Pipeline::start(Arc::new(sink), cfg.flush);
        Ok(Arc::new(Self {
            recorder: Recorder {
                listener: match cfg.listener_secret_next {
                    Some((day, next)) => {
                        ListenerHasher::new(cfg.listener_secret).with_next(day, next)
                    }
                    None => ListenerHasher::new(cfg.listener_secret),
                },
                keys: cfg.signing_keys,
                require_signature: cfg.require_signature,
                ua,
                trust: cfg.trust,
            },
            pipeline,
            metrics,
            flush: cfg.flush,
        }))
    }

    /// Answers one request. A pixel GET records exactly one event and, in
    /// sync mode, returns once the event is delivered (or dead-lettered).
    pub async fn handle(&self, req: HitRequest<'_>) -> Response<Bytes> {
        let route = hit::route(req.method, req.path);
        if route == Route::PixelGet {
            let event = self.recorder.record(&req, time::OffsetDateTime::now_utc());
            self.metrics.hit(event.verdict);
            self.pipeline.submit(event.to_ndjson()).wait().await;
            self.metrics.maybe_emit();
        }
        hit::response(route)
    }

    /// Delivers what is buffered and closes the sink.
    pub async fn shutdown(&self) {
        self.pipeline.shutdown().await;
        self.metrics.emit();
    }
}

/// The Firehose client, from the standard AWS configuration chain
/// (`AWS_ENDPOINT_URL` points it at moto). Retries are ours, not the SDK's:
/// the sink retries only failed records, which the SDK cannot do.
async fn firehose_client() -> aws_sdk_firehose::Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(1))
                .operation_attempt_timeout(std::time::Duration::from_secs(3))
                .build(),
        )
        .load()
        .await;
    aws_sdk_firehose::Client::new(&shared)
}
