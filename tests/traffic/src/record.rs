//! History instead of live traffic: each hit goes through the edge's own
//! recorder (signature check, user-agent classification, the listener id of
//! its UTC day) and its directory sink, stamped with a time in a span that
//! ends now. `earshot load --once --source dir:DIR` then loads weeks of
//! traffic in seconds, exactly as an edge running through those weeks would
//! have written it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use earshot_edge::config::EdgeConfig;
use earshot_edge::hit::{HitRequest, LINE_CAPACITY, PIXEL_PATH};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use time::{Duration, OffsetDateTime};

use crate::generate::Hit;

/// When each hit happened: the run's schedule (offsets, bursts included)
/// stretched over `span`, the last hit at `end`.
pub fn spread(hits: &[Hit], end: OffsetDateTime, span: Duration) -> Vec<OffsetDateTime> {
    let last = hits.last().map_or(0.0, |h| h.offset.as_secs_f64());
    let start = end - span;
    hits.iter()
        .map(|h| {
            let share = if last > 0.0 {
                h.offset.as_secs_f64() / last
            } else {
                1.0
            };
            start + span * share
        })
        .collect()
}

/// Records `hits[i]` at `times[i]` into `dir` with the edge configured as
/// the local edge the sender talks to (`EARSHOT_TRUSTED_PROXY_HOPS=1`,
/// `EARSHOT_TRUST_CLOUDFRONT=true`) with `signing_keys`; other edge
/// variables (`EARSHOT_LISTENER_SECRET`, `EARSHOT_UA_PATTERNS_DIR`, ...)
/// come from `env`.
pub async fn record(
    hits: &[Hit],
    times: &[OffsetDateTime],
    signing_keys: &str,
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(hits.len() == times.len(), "one time per hit");
    let sink = format!("dir:{}", dir.display());
    let cfg = EdgeConfig::from_lookup(|k| match k {
        "EARSHOT_SINK" => Some(sink.clone()),
        "EARSHOT_FLUSH" => Some("buffered".into()),
        // One proxy (the CDN) in front, which passes the listener's address
        // and country: what the sender's headers play.
        "EARSHOT_TRUSTED_PROXY_HOPS" => Some("1".into()),
        "EARSHOT_TRUST_CLOUDFRONT" => Some("true".into()),
        "EARSHOT_SIGNING_KEYS" => Some(signing_keys.to_owned()),
        // Not a Lambda, whatever the environment says.
        "AWS_LAMBDA_RUNTIME_API" => None,
        other => env(other),
    })
    .context("the edge's configuration")?;
    let edge = earshot_edge::App::build(cfg).await?;
    let mut headers = HeaderMap::new();
    for (h, t) in hits.iter().zip(times) {
        headers.clear();
        for (name, value) in h.request_headers() {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).context("a header value")?,
            );
        }
        let req = HitRequest {
            method: &Method::GET,
            path: PIXEL_PATH,
            query: Some(&h.query),
            headers: &headers,
            source_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            runtime_trace_id: None,
            deadline: None,
        };
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        edge.recorder.record_ndjson(&req, *t, &mut line);
        edge.pipeline.submit(line, None).wait().await;
    }
    edge.pipeline.shutdown(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Amount, Burst, Generator, HitKind, Plan};
    use earshot_domain::{SigningKeys, Verdict};
    use time::macros::datetime;

    const KEYS: &str = "k1:record-test-secret-0123";

    #[tokio::test]
    async fn each_hit_is_the_edges_event_stamped_at_its_place_in_the_span() {
        let keys = SigningKeys::parse(KEYS).unwrap();
        let plan = Plan {
            amount: Amount::Total(600),
            burst: Some(Burst {
                at: 2.0,
                seconds: 1.0,
                factor: 5.0,
            }),
            ..Plan::default()
        };
        let hits = Generator::all(&plan, &keys).unwrap();
        let end = datetime!(2026-11-27 12:00 UTC);
        let span = Duration::days(10);
        let times = spread(&hits, end, span);
        assert_eq!(times.first(), Some(&(end - span)));
        assert_eq!(times.last(), Some(&end));
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // The burst stays a burst: its hits are closer together in time.
        let gap = |i: usize| times[i + 1] - times[i];
        assert!(gap(100) > gap(plan.rate as usize * 2 + 10));

        let dir = std::env::temp_dir().join(format!("earshot-record-{}", uuid::Uuid::now_v7()));
        record(&hits, &times, KEYS, &dir, |_| None).await.unwrap();
        let events = earshot_testkit::edge::events_in_sink_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(events.len(), hits.len());
        let mut kinds = [0; 3];
        for (h, t) in hits.iter().zip(&times) {
            let e = events
                .iter()
                .find(|e| e.trace_id.as_deref() == Some(h.trace_id.as_str()))
                .unwrap_or_else(|| panic!("no event for hit {}", h.seq));
            assert_eq!(
                e.ts,
                earshot_domain::wire::to_wire_precision(*t),
                "hit {}",
                h.seq
            );
            assert_eq!(
                e.campaign.as_ref().map(|c| c.as_str()),
                Some(h.campaign.as_str())
            );
            assert_eq!(
                e.creative.as_ref().map(|c| c.as_str()),
                Some(h.creative.as_str())
            );
            assert_eq!(e.event, Some(h.event));
            match h.kind {
                HitKind::Valid => {
                    assert_eq!(e.verdict, Verdict::Valid, "hit {}: {:?}", h.seq, e.reason);
                    kinds[0] += 1;
                }
                HitKind::Bot => {
                    assert_eq!(e.verdict, Verdict::Bot, "hit {}", h.seq);
                    kinds[1] += 1;
                }
                HitKind::Forged(f) => {
                    assert_eq!(e.verdict, Verdict::Invalid, "hit {}", h.seq);
                    assert_eq!(e.reason.as_deref(), Some(f.reason()));
                    kinds[2] += 1;
                }
            }
        }
        assert!(kinds.iter().all(|&n| n > 0), "every kind of hit: {kinds:?}");
        // The edge took each listener's address from the forwarded header:
        // one listener id per audience member and day, a different one for
        // each member.
        let mut ids = std::collections::BTreeMap::new();
        for (h, t) in hits.iter().zip(&times) {
            let e = events
                .iter()
                .find(|e| e.trace_id.as_deref() == Some(h.trace_id.as_str()))
                .unwrap();
            ids.entry((t.date(), h.listener))
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(e.listener);
        }
        assert!(
            ids.values().all(|s| s.len() == 1),
            "one id per member and day"
        );
        let distinct: std::collections::BTreeSet<_> = ids
            .iter()
            .map(|((d, _), s)| (*d, *s.first().unwrap()))
            .collect();
        assert_eq!(distinct.len(), ids.len(), "members tell apart");
    }
}
