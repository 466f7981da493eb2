#![doc = include_str!("../README.md")]

pub mod config;
pub mod geo;
pub mod hit;
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod sequence;
pub mod sink;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use earshot_domain::{ListenerHasher, UaClassifier};
use http::Response;

use crate::config::{EdgeConfig, FlushMode, SinkConfig, TlsRoots};
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
        let (ua, report) = UaClassifier::load(cfg.ua_patterns_dir.as_deref())?;
        tracing::info!(files = ?report.files, patterns = report.patterns, skipped = report.skipped.len(), "loaded the OPAWG user-agent lists");
        for s in &report.skipped {
            tracing::warn!(pattern = %s, "OPAWG pattern skipped");
        }
        let geo = geo::Geo::load(&cfg.geo)?;
        let (builtin_dc, operator_dc, operator_asns) = geo.datacenters.sizes();
        tracing::info!(places = %geo.places.describe(), datacenter_ranges = builtin_dc, operator_ranges = operator_dc, operator_asns, "loaded the geography and data-center data");
        if cfg.listener.is_dev_default {
            tracing::warn!("EARSHOT_LISTENER_SECRET is not set: using the local development secret; never run like this in production");
        }
        let function_name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|_| "earshot-edge-local".into());
        let metrics = Arc::new(Metrics::new(function_name));
        let sink = match &cfg.sink {
            SinkConfig::Firehose { stream } => {
                let client = firehose_client(cfg.delivery.tls_roots).await;
                Sink::Firehose(FirehoseSink::new(
                    client,
                    stream.clone(),
                    RetryPolicy::new(cfg.delivery.max_attempts),
                    metrics.clone(),
                ))
            }
            SinkConfig::Dir { path } => Sink::Dir(
                sink::dir::DirSink::new(path)
                    .with_context(|| format!("EARSHOT_SINK: cannot create {}", path.display()))?,
            ),
        };
        let pipeline = Pipeline::start(Arc::new(sink), cfg.flush, metrics.clone());
        let listener = ListenerHasher::new(cfg.listener.secret, cfg.listener.period);
        Ok(Arc::new(Self {
            recorder: Recorder {
                listener: match cfg.listener.next {
                    Some((day, next)) => listener.with_next(day, next),
                    None => listener,
                },
                signing: cfg.signing,
                ua,
                trust: cfg.trust,
                geo,
                sequencer: sequence::Sequencer::new(),
            },
            pipeline,
            metrics,
            flush: cfg.flush,
        }))
    }

    /// Answers one request. A pixel GET records exactly one event and, in
    /// sync mode, returns once the event is delivered or dead-lettered (by
    /// the request's deadline, if it has one).
    pub async fn handle(&self, req: HitRequest<'_>) -> Response<Bytes> {
        let route = hit::route(req.method, req.path);
        if route == Route::PixelGet {
            let mut line = Vec::with_capacity(hit::LINE_CAPACITY);
            let now = time::OffsetDateTime::now_utc();
            let verdict = self.recorder.record_ndjson(&req, now, &mut line);
            self.metrics.hit(verdict);
            let receipt = self.pipeline.submit(line, req.deadline);
            // Under Lambda an environment is frozen between invocations, so
            // its minute's heartbeat rides on the first hit after it is due.
            let beat = self
                .recorder
                .sequencer
                .heartbeat_if_due(now)
                .map(|h| self.pipeline.submit(h.to_ndjson(), req.deadline));
            receipt.wait().await;
            if let Some(beat) = beat {
                beat.wait().await;
            }
            self.metrics.maybe_emit();
        }
        hit::response(route)
    }

    /// Writes a heartbeat if one is due (a local edge's timer calls this
    /// while no hits come in).
    pub async fn heartbeat_if_due(&self) {
        let now = time::OffsetDateTime::now_utc();
        if let Some(h) = self.recorder.sequencer.heartbeat_if_due(now) {
            self.pipeline.submit(h.to_ndjson(), None).wait().await;
        }
    }

    /// Writes the last heartbeat, delivers what is buffered and closes the sink; with a `budget`, what
    /// is not delivered by then is dead-lettered.
    pub async fn shutdown(&self, budget: Option<std::time::Duration>) {
        // The last heartbeat goes out with the last events: it says how far
        // this edge numbered, so the audit sees its whole tail. Not waited
        // on: the shutdown below delivers it (or dead-letters it).
        let last = self
            .recorder
            .sequencer
            .heartbeat(time::OffsetDateTime::now_utc());
        drop(self.pipeline.submit(last.to_ndjson(), None));
        self.pipeline.shutdown(budget).await;
        self.metrics.emit();
    }
}

/// Roots of the certificates AWS endpoints present (`certs/README.md`).
const AWS_ROOT_CERTIFICATES: [&str; 5] = [
    include_str!("../certs/Amazon_Root_CA_1.pem"),
    include_str!("../certs/Amazon_Root_CA_2.pem"),
    include_str!("../certs/Amazon_Root_CA_3.pem"),
    include_str!("../certs/Amazon_Root_CA_4.pem"),
    include_str!("../certs/Starfield_Services_Root_Certificate_Authority_-_G2.pem"),
];

/// The SDK's HTTPS client (rustls with aws-lc, as its default), trusting
/// `roots`. With the AWS roots no certificate store is read: loading the
/// host's took 2.5–7 ms of every cold start on the benchmark host.
fn https_client(roots: TlsRoots) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let store = match roots {
        TlsRoots::System => TrustStore::default(),
        TlsRoots::Aws => AWS_ROOT_CERTIFICATES
            .iter()
            .fold(TrustStore::empty().with_native_roots(false), |s, pem| {
                s.with_pem_certificate(pem.as_bytes())
            }),
    };
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .expect("a trust store without extra server names is valid");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// The Firehose client, from the standard AWS configuration chain
/// (`AWS_ENDPOINT_URL` points it at moto). Retries are ours, not the SDK's:
/// the sink retries only failed records, which the SDK cannot do.
async fn firehose_client(roots: TlsRoots) -> aws_sdk_firehose::Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client(roots))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_aws_root_file_holds_one_certificate_and_they_differ() {
        use rustls_pki_types::pem::PemObject;
        let mut seen = std::collections::HashSet::new();
        for pem in AWS_ROOT_CERTIFICATES {
            let ders: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(ders.len(), 1);
            assert!(seen.insert(ders[0].to_vec()));
        }
        assert_eq!(seen.len(), 5);
    }
}
