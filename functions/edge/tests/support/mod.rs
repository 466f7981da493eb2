//! What the edge's integration tests share: moto with the delivery stream,
//! the fault proxy in front of it, the binary under the Lambda Runtime API
//! emulator, and the fixture events.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;

use earshot_testkit::{FirehoseFaultProxy, LambdaFunction, LambdaRuntimeEmulator, Moto};
use serde_json::Value;

pub const STREAM: &str = "earshot-events";
pub const BUCKET: &str = "earshot-raw";
pub const PREFIX: &str = "events/";

/// moto with the delivery stream into `BUCKET`/`PREFIX`.
pub async fn moto_with_stream() -> Moto {
    let moto = Moto::start().await.expect("moto");
    moto.create_firehose_to_s3(STREAM, BUCKET, PREFIX)
        .await
        .expect("delivery stream");
    moto
}

/// moto with the stream, and the fault proxy in front of it.
pub async fn moto_and_proxy() -> (Moto, FirehoseFaultProxy) {
    let moto = moto_with_stream().await;
    let proxy = FirehoseFaultProxy::start(moto.endpoint())
        .await
        .expect("proxy");
    (moto, proxy)
}

/// The edge binary under a fresh Lambda Runtime API emulator, its AWS SDK
/// pointed by `aws_env`, writing to `STREAM` with listener secret `secret`
/// and `extra` variables; returns once it polls for its first event.
pub async fn lambda_function(
    aws_env: Vec<(String, String)>,
    secret: &str,
    extra: &[(&str, &str)],
) -> LambdaFunction {
    let emulator = LambdaRuntimeEmulator::start("earshot-edge")
        .await
        .expect("emulator");
    let mut env = aws_env;
    for (k, v) in [
        ("EARSHOT_FIREHOSE_STREAM", STREAM),
        ("EARSHOT_LISTENER_SECRET", secret),
    ]
    .iter()
    .chain(extra)
    {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    let mut function = emulator
        .spawn_function(Path::new(env!("CARGO_BIN_EXE_earshot-edge")), env)
        .expect("spawn");
    function.wait_ready().await.expect("the function starts");
    function
}

/// A Lambda event from `tests/fixtures`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Sums a counter over every EMF line on stdout.
pub fn emf_sum(stdout: &[String], name: &str) -> u64 {
    stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .filter_map(|v| v[name].as_u64())
        .sum()
}
