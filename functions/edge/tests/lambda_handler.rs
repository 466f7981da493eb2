//! The Lambda handler on real event payloads (tests/fixtures, from `sam
//! local generate-event`), called as a plain function with a `dir:` sink,
//! then the NDJSON it wrote is read back and checked field by field.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use earshot_domain::{
    EventKind, ListenerHasher, ListenerId, ListenerSecret, Placement, TrackingEvent, Verdict,
};
use earshot_edge::config::EdgeConfig;
use earshot_edge::hit::PIXEL_GIF;
use earshot_edge::App;
use earshot_testkit::edge::signed_query;
use lambda_http::{Body, RequestExt};
use serde_json::Value;

mod support;
use support::fixture;

const SECRET: &str = "fixture-listener-secret-0123456789";
const OVERCAST: &str = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)";
const FIXTURE_TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793";
const SIGNING_KEYS: &str = "k1:k1-fixture-secret-0123456789";

struct Edge {
    app: Arc<App>,
    dir: tempfile::TempDir,
}

impl Edge {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut vars: HashMap<String, String> = HashMap::from([
            (
                "EARSHOT_SINK".to_owned(),
                format!("dir:{}", dir.path().display()),
            ),
            ("EARSHOT_FLUSH".to_owned(), "sync".to_owned()),
            ("EARSHOT_LISTENER_SECRET".to_owned(), SECRET.to_owned()),
        ]);
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let cfg = EdgeConfig::from_lookup(|k| vars.get(k).cloned()).expect("valid config");
        let app = App::build(cfg).await.expect("app builds");
        Self { app, dir }
    }

    async fn handle(&self, event: &Value) -> lambda_http::Response<Body> {
        let req = lambda_http::request::from_str(&event.to_string()).expect("a Lambda HTTP event");
        earshot_edge::lambda::handle(&self.app, req).await
    }

    /// Shuts the app down (finalizing the file) and returns every event written.
    async fn events(&self) -> Vec<TrackingEvent> {
        self.app.shutdown(None).await;
        earshot_testkit::edge::events_in_sink_dir(self.dir.path()).expect("finalized event files")
    }
}

fn listener(ev: &TrackingEvent, ip: &str, ua: &str) -> ListenerId {
    let hasher = ListenerHasher::new(
        ListenerSecret::new(SECRET).unwrap(),
        earshot_edge::config::DEFAULT_LISTENER_PERIOD,
    );
    hasher.listener_id(ev.day(), ip.parse::<IpAddr>().unwrap(), ua)
}

fn assert_pixel_response(resp: &lambda_http::Response<Body>, with_body: bool) {
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "image/gif");
    assert_eq!(h["content-length"], "43");
    assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
    assert_eq!(h["pragma"], "no-cache");
    assert_eq!(h["expires"], "0");
    match resp.body() {
        Body::Binary(b) if with_body => assert_eq!(b.as_slice(), PIXEL_GIF.as_slice()),
        Body::Empty if !with_body => {}
        other => panic!("unexpected body {other:?}"),
    }
}

/// The fields every fixture GET carries (query and user agent are the same in all).
fn assert_fixture_event(ev: &TrackingEvent, ip: &str) {
    assert_eq!(ev.id.get_version_num(), 7);
    assert_eq!(ev.campaign.as_ref().unwrap().as_str(), "spring-sale");
    assert_eq!(ev.creative.as_ref().unwrap().as_str(), "cr_30s");
    assert_eq!(ev.episode.as_ref().unwrap().as_str(), "ep101");
    assert_eq!(ev.show.as_ref().unwrap().as_str(), "dailytech");
    assert_eq!(ev.placement, Some(Placement::Mid));
    assert_eq!(ev.event, Some(EventKind::Impression));
    assert_eq!(ev.error_code, None);
    assert_eq!(ev.listener, listener(ev, ip, OVERCAST));
    assert_eq!(ev.ua.as_deref(), Some(OVERCAST));
    assert_eq!(ev.app.as_deref(), Some("Overcast"));
    assert_eq!(ev.device.as_deref(), Some("Apple iPhone"));
    assert_eq!(ev.os.as_deref(), Some("ios"));
    assert_eq!(ev.verdict, Verdict::Valid);
    assert_eq!(ev.reason, None);
    assert_eq!(ev.trace_id.as_deref(), Some(FIXTURE_TRACE));
}

/// Sets the query of a fixture in every place the event formats keep it.
fn set_query(event: &mut Value, query: &str) {
    let pairs: Vec<(String, String)> = form_pairs(query);
    if event.get("rawQueryString").is_some() {
        event["rawQueryString"] = Value::String(query.to_owned());
    }
    let single: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    event["queryStringParameters"] = Value::Object(single);
    if event.get("multiValueQueryStringParameters").is_some() {
        let multi: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::Array(vec![Value::String(v.clone())])))
            .collect();
        event["multiValueQueryStringParameters"] = Value::Object(multi);
    }
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn http_api_get_answers_the_gif_and_records_one_valid_event() {
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("apigw-v2-get.json")).await;
    assert_pixel_response(&resp, true);
    let events = edge.events().await;
    assert_eq!(events.len(), 1);
    assert_fixture_event(&events[0], "203.0.113.7");
    assert_eq!(
        events[0].country, None,
        "CloudFront is not trusted by default"
    );
}

#[tokio::test]
async fn function_url_get_is_recorded_from_the_request_context_address() {
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("function-url-get.json")).await;
    assert_pixel_response(&resp, true);
    let events = edge.events().await;
    assert_eq!(events.len(), 1);
    assert_fixture_event(&events[0], "203.0.113.7");
}

#[tokio::test]
async fn rest_api_get_with_stage_prefix_takes_the_client_from_the_request_identity() {
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("apigw-v1-rest-get.json")).await;
    assert_pixel_response(&resp, true);
    let events = edge.events().await;
    assert_eq!(events.len(), 1);
    assert_fixture_event(&events[0], "203.0.113.8");
}

#[tokio::test]
async fn alb_get_takes_the_rightmost_forwarded_address_the_alb_wrote() {
    // functions/edge/README.md: behind an ALB only the rightmost
    // X-Forwarded-For entry is believed; the fixture has "198.51.100.9, 10.0.0.1".
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("alb-get.json")).await;
    assert_pixel_response(&resp, true);
    let mut single = fixture("alb-get.json");
    single["headers"]["x-forwarded-for"] = Value::String("198.51.100.9".into());
    assert_pixel_response(&edge.handle(&single).await, true);
    let events = edge.events().await;
    assert_eq!(events.len(), 2);
    assert_fixture_event(&events[0], "10.0.0.1");
    assert_fixture_event(&events[1], "198.51.100.9");
    assert_ne!(events[0].listener, events[1].listener);
}

#[tokio::test]
async fn head_answers_the_pixel_headers_without_a_body_and_records_nothing() {
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("apigw-v2-head.json")).await;
    assert_pixel_response(&resp, false);
    assert_eq!(edge.events().await, Vec::new());
    // Only the shutdown's heartbeat: nothing numbered.
    let files = earshot_testkit::edge::sink_dir_files(edge.dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    let (events, beats) =
        earshot_testkit::edge::decode_lines(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(events, Vec::new());
    assert_eq!(beats.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![0]);
}

#[tokio::test]
async fn post_is_405_with_allow_and_records_nothing() {
    let edge = Edge::start(&[]).await;
    let resp = edge.handle(&fixture("apigw-v2-post.json")).await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    match resp.body() {
        Body::Binary(b) => assert_eq!(
            b.as_slice(),
            b"method not allowed: the pixel answers GET and HEAD\n"
        ),
        other => panic!("unexpected body {other:?}"),
    }
    assert_eq!(edge.events().await, Vec::new());
}

#[tokio::test]
async fn bot_and_invalid_hits_are_recorded_with_their_reason_and_still_get_the_gif() {
    let edge = Edge::start(&[]).await;
    let mut curl = fixture("apigw-v2-get.json");
    curl["headers"]["user-agent"] = Value::String("curl/8.5.0".into());
    let mut no_ua = fixture("apigw-v2-get.json");
    no_ua["headers"]
        .as_object_mut()
        .unwrap()
        .remove("user-agent");
    let mut bad_campaign = fixture("apigw-v2-get.json");
    set_query(&mut bad_campaign, "c=spring%20sale&cr=cr_30s&ev=impression");
    let mut unknown_event = fixture("apigw-v2-get.json");
    set_query(&mut unknown_event, "c=spring-sale&cr=cr_30s&ev=halfway");
    for ev in [&curl, &no_ua, &bad_campaign, &unknown_event] {
        assert_pixel_response(&edge.handle(ev).await, true);
    }
    let events = edge.events().await;
    let got: Vec<(Verdict, Option<&str>)> = events
        .iter()
        .map(|e| (e.verdict, e.reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Verdict::Bot, Some("ua_listed:curl")),
            (Verdict::Bot, Some("ua_missing")),
            (Verdict::Invalid, Some("bad_campaign_id")),
            (Verdict::Invalid, Some("unknown_event")),
        ]
    );
    assert_eq!(
        events[0].listener,
        listener(&events[0], "203.0.113.7", "curl/8.5.0")
    );
    assert_eq!(events[1].listener, listener(&events[1], "203.0.113.7", ""));
    assert_eq!(events[1].ua, None);
    assert_eq!(events[2].campaign, None, "an invalid id is never stored");
    assert_eq!(events[2].creative.as_ref().unwrap().as_str(), "cr_30s");
    assert_eq!(events[3].event, None);
}

#[tokio::test]
async fn signed_hits_are_valid_and_tampered_ones_are_invalid() {
    let edge = Edge::start(&[("EARSHOT_SIGNING_KEYS", SIGNING_KEYS)]).await;
    let query = "c=spring-sale&cr=cr_30s&ep=ep101&sh=dailytech&pos=mid&ev=impression";
    let signed = signed_query(SIGNING_KEYS, query);
    let mut good = fixture("apigw-v2-get.json");
    set_query(&mut good, &signed);
    let mut tampered = fixture("apigw-v2-get.json");
    set_query(&mut tampered, &signed.replace("cr=cr_30s", "cr=cr_60s"));
    let unsigned = fixture("apigw-v2-get.json");
    for ev in [&good, &tampered, &unsigned] {
        assert_pixel_response(&edge.handle(ev).await, true);
    }
    let events = edge.events().await;
    assert_fixture_event(&events[0], "203.0.113.7");
    assert_eq!(
        (events[1].verdict, events[1].reason.as_deref()),
        (Verdict::Invalid, Some("bad_signature"))
    );
    assert_eq!(
        events[1].creative.as_ref().unwrap().as_str(),
        "cr_60s",
        "a forged hit is still attributed to what it claimed"
    );
    assert_eq!(
        (events[2].verdict, events[2].reason.as_deref()),
        (Verdict::Invalid, Some("missing_signature"))
    );
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn cloudfront_country_is_recorded_only_when_trusted() {
    let untrusted = Edge::start(&[]).await;
    untrusted.handle(&fixture("apigw-v1-rest-get.json")).await;
    let trusted = Edge::start(&[("EARSHOT_TRUST_CLOUDFRONT", "true")]).await;
    trusted.handle(&fixture("apigw-v1-rest-get.json")).await;
    let a = untrusted.events().await;
    let b = trusted.events().await;
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(a[0].country, None);
    assert_eq!(
        b[0].country.map(|c| c.as_str().to_owned()).as_deref(),
        Some("US")
    );
}

#[tokio::test]
async fn runtime_trace_id_is_the_fallback_when_the_request_has_no_trace_header() {
    let edge = Edge::start(&[]).await;
    let mut event = fixture("function-url-get.json");
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-amzn-trace-id");
    let mut ctx = lambda_runtime::Context::default();
    ctx.xray_trace_id = Some("Root=1-67891233-abcdef012345678912345678;Sampled=0".into());
    let req = lambda_http::request::from_str(&event.to_string())
        .unwrap()
        .with_lambda_context(ctx);
    let resp = earshot_edge::lambda::handle(&edge.app, req).await;
    assert_pixel_response(&resp, true);
    let events = edge.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].trace_id.as_deref(),
        Some("Root=1-67891233-abcdef012345678912345678;Sampled=0")
    );
}
