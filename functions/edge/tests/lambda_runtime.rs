//! The real binary in Lambda mode, under the Runtime API emulator, writing
//! to moto's Firehose: fixture events in, Lambda responses out, events in S3.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine;
use earshot_domain::{EventKind, ListenerHasher, ListenerSecret, TrackingEvent, Verdict};
use earshot_edge::hit::PIXEL_GIF;
use earshot_testkit::edge::decode_objects;
use earshot_testkit::{InvokeOptions, LambdaFunction, LambdaRuntimeEmulator, Moto};
use serde_json::Value;

mod support;
use support::{fixture, lambda_function, moto_with_stream, BUCKET, PREFIX, STREAM};

const SECRET: &str = "lambda-test-listener-secret-0123456789";
const OVERCAST: &str = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)";
const RUNTIME_TRACE: &str =
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const GRACEFUL_HELPER: &str = "_lambda-rust-runtime-no-op-graceful-shutdown-helper";

struct Stack {
    moto: Moto,
    function: LambdaFunction,
}

async fn start(extra: &[(&str, &str)]) -> Stack {
    let moto = moto_with_stream().await;
    let function = lambda_function(moto.aws_env(), SECRET, extra).await;
    Stack { moto, function }
}

impl Stack {
    async fn s3_events(&self) -> (usize, Vec<TrackingEvent>) {
        let objects = self
            .moto
            .read_all_objects(BUCKET, PREFIX)
            .await
            .expect("objects");
        (objects.len(), decode_objects(&objects).expect("events"))
    }
}

/// A response header, from `headers` or (REST API) `multiValueHeaders`.
fn header<'a>(resp: &'a Value, name: &str) -> Option<&'a str> {
    resp["headers"][name].as_str().or_else(|| {
        resp["multiValueHeaders"][name]
            .as_array()
            .and_then(|v| v.first())
            .and_then(Value::as_str)
    })
}

fn assert_gif_response(resp: &Value) {
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(resp["isBase64Encoded"], true, "{resp}");
    let body = base64::engine::general_purpose::STANDARD
        .decode(resp["body"].as_str().expect("a body"))
        .expect("base64");
    assert_eq!(body, PIXEL_GIF);
    assert_eq!(header(resp, "content-type"), Some("image/gif"));
    assert_eq!(
        header(resp, "cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
}

fn listener_for(ev: &TrackingEvent, ip: &str) -> earshot_domain::ListenerId {
    ListenerHasher::new(
        ListenerSecret::new(SECRET).unwrap(),
        earshot_edge::config::DEFAULT_LISTENER_PERIOD,
    )
    .listener_id(ev.day(), ip.parse::<IpAddr>().unwrap(), OVERCAST)
}

#[tokio::test]
async fn sync_lambda_answers_each_front_door_and_each_get_is_in_s3_before_its_response() {
    let mut stack = start(&[]).await;
    let mut seen = std::collections::HashSet::new();
    for (fixture_name, ip) in [
        ("apigw-v2-get.json", "203.0.113.7"),
        ("function-url-get.json", "203.0.113.7"),
        ("apigw-v1-rest-get.json", "203.0.113.8"),
        ("alb-get.json", "10.0.0.1"),
    ] {
        // Lambda continues the caller's trace: same Root, its own Parent.
        let resp = stack
            .function
            .invoke_with(
                &fixture(fixture_name),
                InvokeOptions {
                    trace_id: Some(RUNTIME_TRACE.to_owned()),
                    ..InvokeOptions::default()
                },
            )
            .await
            .expect("invocation");
        assert_gif_response(&resp);
        // Sync mode: the event was acknowledged by Firehose before the answer.
        let (_, events) = stack.s3_events().await;
        let new: Vec<&TrackingEvent> = events.iter().filter(|e| !seen.contains(&e.id)).collect();
        assert_eq!(new.len(), 1, "exactly one new event after {fixture_name}");
        assert_eq!(events.len(), seen.len() + 1);
        let ev = new[0];
        assert_eq!(ev.listener, listener_for(ev, ip), "{fixture_name}");
        assert_eq!(ev.verdict, Verdict::Valid);
        assert_eq!(ev.campaign.as_ref().unwrap().as_str(), "spring-sale");
        assert_eq!(ev.event, Some(EventKind::Impression));
        assert_eq!(ev.trace_id.as_deref(), Some(RUNTIME_TRACE));
        seen.insert(ev.id);
    }

    let head = stack
        .function
        .invoke(&fixture("apigw-v2-head.json"))
        .await
        .unwrap();
    assert_eq!(head["statusCode"], 200);
    assert_eq!(head["body"], "", "HEAD has no body");
    assert_eq!(header(&head, "content-type"), Some("image/gif"));
    let post = stack
        .function
        .invoke(&fixture("apigw-v2-post.json"))
        .await
        .unwrap();
    assert_eq!(post["statusCode"], 405);
    assert_eq!(header(&post, "allow"), Some("GET, HEAD"));

    let (objects, events) = stack.s3_events().await;
    assert_eq!(events.len(), 4, "HEAD and POST record nothing");
    assert_eq!(objects, 4, "one PutRecordBatch per invocation");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(stack.function.emulator().completed(), 6);
    // Sync mode registers the shutdown extension too, for the last
    // heartbeat: it counts the four GETs, and nothing else is sent.
    let extensions = stack.function.emulator().extensions();
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].name, GRACEFUL_HELPER);
    let report = stack.function.shutdown().await.unwrap();
    assert!(report.sigterm);
    assert!(!report.killed_after_grace, "the hook finished in time");
    let (objects, after) = stack.s3_events().await;
    assert_eq!(
        (objects, after.len()),
        (5, 4),
        "one more object: the heartbeat"
    );
    let mut seqs: Vec<u64> = after.iter().map(|e| e.sequence.unwrap().seq).collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

/// lambda_http overwrites the request's `x-amzn-trace-id` with the runtime's
/// `Lambda-Runtime-Trace-Id`, so under Lambda the runtime's id is what is
/// recorded, whatever header the request carried (on Lambda both share the
/// caller's Root).
#[tokio::test]
async fn lambda_records_the_runtime_trace_id_over_the_request_header() {
    let mut stack = start(&[]).await;
    let with_header = fixture("function-url-get.json");
    let mut without_header = fixture("function-url-get.json");
    without_header["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-amzn-trace-id");
    let traces = [
        "Root=1-6745d2a0-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1",
        "Root=1-6745d2a1-76543210fedcba9876543210;Parent=0123456789abcdef;Sampled=0",
    ];
    for (event, trace) in [(&with_header, traces[0]), (&without_header, traces[1])] {
        let resp = stack
            .function
            .invoke_with(
                event,
                InvokeOptions {
                    trace_id: Some(trace.to_owned()),
                    ..InvokeOptions::default()
                },
            )
            .await
            .unwrap();
        assert_gif_response(&resp);
    }
    let (_, events) = stack.s3_events().await;
    let mut got: Vec<&str> = events
        .iter()
        .filter_map(|e| e.trace_id.as_deref())
        .collect();
    got.sort();
    assert_eq!(events.len(), 2);
    assert_eq!(got, traces.to_vec());
}

#[tokio::test]
async fn buffered_lambda_holds_events_until_the_graceful_shutdown_hook_flushes_them() {
    let mut stack = start(&[
        ("EARSHOT_FLUSH", "buffered"),
        ("EARSHOT_BUFFER_MAX_EVENTS", "1000"),
        ("EARSHOT_BUFFER_MAX_AGE_MS", "600000"),
    ])
    .await;
    let extensions = stack.function.emulator().extensions();
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].name, GRACEFUL_HELPER);
    assert_eq!(extensions[0].events, Vec::<String>::new());

    for name in [
        "apigw-v2-get.json",
        "function-url-get.json",
        "apigw-v1-rest-get.json",
        "alb-get.json",
        "apigw-v2-head.json",
    ] {
        stack.function.invoke(&fixture(name)).await.unwrap();
    }
    assert_eq!(
        stack.s3_events().await.0,
        0,
        "buffered: nothing is sent before a limit or the shutdown"
    );

    let report = stack.function.shutdown().await.unwrap();
    assert!(report.sigterm);
    assert!(!report.killed_after_grace, "the hook finished in time");
    assert!(report.status.success(), "{:?}", report.status);
    let stderr = stack.function.process().stderr_lines();
    assert!(
        stderr
            .iter()
            .any(|l| l == "[runtime] Graceful shutdown completed"),
        "{stderr:?}"
    );
    let (objects, events) = stack.s3_events().await;
    assert_eq!(objects, 1, "all buffered events in one record");
    assert_eq!(events.len(), 4);
    let mut listeners: Vec<_> = events.iter().map(|e| e.listener).collect();
    listeners.sort();
    let mut want: Vec<_> = ["203.0.113.7", "203.0.113.7", "203.0.113.8", "10.0.0.1"]
        .iter()
        .map(|ip| listener_for(&events[0], ip))
        .collect();
    want.sort();
    assert_eq!(listeners, want);
}

#[tokio::test]
async fn lambda_without_a_listener_secret_stops_at_init_naming_the_variable() {
    let emulator = LambdaRuntimeEmulator::start("earshot-edge").await.unwrap();
    let mut function = emulator
        .spawn_function(
            Path::new(env!("CARGO_BIN_EXE_earshot-edge")),
            [("EARSHOT_FIREHOSE_STREAM".to_owned(), STREAM.to_owned())],
        )
        .unwrap();
    let err = function.wait_ready().await.unwrap_err().to_string();
    assert!(err.contains("exited"), "{err}");
    assert!(
        err.contains("EARSHOT_LISTENER_SECRET: required under Lambda"),
        "{err}"
    );
    assert_eq!(emulator.next_polls(), 0);
}
