//! A Firehose proxy that injects throttling and partial failures.
//!
//! moto always accepts every record (`FailedPutCount` 0), so failures are
//! injected here, at the network layer: the code under test keeps its real
//! AWS SDK client and only its `AWS_ENDPOINT_URL` points at the proxy.
//!
//! Every `PutRecordBatch` call takes the next [`FirehoseFault`] from the
//! script (then the default, [`FirehoseFault::Pass`] unless changed). Other
//! Firehose calls (create, describe, …) are always forwarded.
//!
//! Error shapes follow Firehose's JSON 1.1 protocol: a whole-call error is
//! `{"__type":"ServiceUnavailableException","message":"Slow down."}` with
//! HTTP 500 — the service model marks that exception as a server fault
//! (`"fault": true`, no explicit status), which awsJson 1.1 sends as 500. A
//! failed record inside a 200 answer carries `ErrorCode` and `ErrorMessage`
//! instead of a `RecordId`, and `FailedPutCount` counts them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::server::{self, Proxy, Req, Resp, Upstream};

/// The `X-Amz-Target` of the call the script applies to.
pub const PUT_RECORD_BATCH_TARGET: &str = "Firehose_20150804.PutRecordBatch";
/// The error code and message Firehose uses when it throttles.
pub const THROTTLE_CODE: &str = "ServiceUnavailableException";
pub const THROTTLE_MESSAGE: &str = "Slow down.";
/// HTTP status of a whole-call ServiceUnavailableException (a server fault).
pub const THROTTLE_STATUS: u16 = 500;

/// What the proxy does with one `PutRecordBatch` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirehoseFault {
    /// Forward the call unchanged.
    Pass,
    /// Answer the whole call with ServiceUnavailableException; nothing reaches moto.
    Throttle,
    /// The records at these 0-based indexes fail (ErrorCode
    /// ServiceUnavailableException); only the others are forwarded to moto,
    /// and their RecordIds are moto's. Indexes past the end are ignored.
    FailRecords(Vec<usize>),
    /// Every record fails (HTTP 200, FailedPutCount = all); nothing reaches moto.
    FailAllRecords,
    /// A Firehose that hangs: nothing reaches moto, and the answer (a
    /// throttle) comes only after this long, past any client's timeout.
    Hang(Duration),
    /// Accepted, then silent: the records are forwarded to moto (they land
    /// in S3), and moto's answer is held this long, so a client that timed
    /// out cannot know they were accepted.
    AcceptThenHang(Duration),
}

/// One `PutRecordBatch` call as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallLog {
    pub records: usize,
    pub fault: FirehoseFault,
}

/// Counters, all since the proxy started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub put_record_batch_calls: usize,
    pub throttled_calls: usize,
    /// Records in all PutRecordBatch calls, retries included.
    pub records_received: usize,
    /// Records moto accepted.
    pub records_forwarded: usize,
    /// Records answered as failed by the proxy.
    pub records_failed: usize,
    /// Decoded size in bytes of each record moto accepted, in order.
    pub forwarded_record_sizes: Vec<usize>,
    /// Every PutRecordBatch call, in order.
    pub calls: Vec<CallLog>,
    /// Other Firehose calls (forwarded unchanged).
    pub other_calls: usize,
}

struct Script {
    queue: VecDeque<FirehoseFault>,
    default: FirehoseFault,
}

/// What the proxy keeps: where it forwards, its script, and its counters.
pub struct FirehoseFaults {
    upstream: Upstream,
    script: Mutex<Script>,
    stats: Mutex<ProxyStats>,
}

/// The proxy; stops when dropped.
pub type FirehoseFaultProxy = Proxy<FirehoseFaults>;

impl Proxy<FirehoseFaults> {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (e.g. moto's endpoint).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let state = FirehoseFaults {
            upstream: Upstream::new(upstream)?,
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: FirehoseFault::Pass,
            }),
            stats: Mutex::new(ProxyStats::default()),
        };
        Self::serve(state, |s, req| async move { handle(&s, req).await }).await
    }

    /// Appends one step to the script.
    pub fn push(&self, fault: FirehoseFault) {
        self.state
            .script
            .lock()
            .expect("lock")
            .queue
            .push_back(fault);
    }

    /// Appends steps to the script.
    pub fn push_all(&self, faults: impl IntoIterator<Item = FirehoseFault>) {
        self.state.script.lock().expect("lock").queue.extend(faults);
    }

    /// What calls get once the script is used up.
    pub fn set_default(&self, fault: FirehoseFault) {
        self.state.script.lock().expect("lock").default = fault;
    }

    /// Steps of the script not used yet.
    pub fn script_left(&self) -> usize {
        self.state.script.lock().expect("lock").queue.len()
    }

    pub fn stats(&self) -> ProxyStats {
        self.state.stats.lock().expect("lock").clone()
    }
}

async fn handle(state: &FirehoseFaults, req: Req) -> Resp {
    let is_put_batch = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        == Some(PUT_RECORD_BATCH_TARGET);
    let parsed: Option<Value> = if is_put_batch {
        serde_json::from_slice(req.body()).ok()
    } else {
        None
    };
    let Some(body) = parsed else {
        state.stats.lock().expect("lock").other_calls += 1;
        let b = req.body().clone();
        return state.upstream.forward(&req, b).await.0;
    };
    let records: Vec<Value> = body["Records"].as_array().cloned().unwrap_or_default();
    let n = records.len();
    let fault = {
        let mut s = state.script.lock().expect("lock");
        s.queue.pop_front().unwrap_or_else(|| s.default.clone())
    };
    {
        let mut st = state.stats.lock().expect("lock");
        st.put_record_batch_calls += 1;
        st.records_received += n;
        st.calls.push(CallLog {
            records: n,
            fault: fault.clone(),
        });
    }
    match fault {
        FirehoseFault::Pass => partial(state, &req, body, &records, &BTreeSet::new()).await,
        FirehoseFault::Throttle => {
            state.stats.lock().expect("lock").throttled_calls += 1;
            throttled()
        }
        FirehoseFault::FailAllRecords => {
            let all: BTreeSet<usize> = (0..n).collect();
            partial(state, &req, body, &records, &all).await
        }
        FirehoseFault::FailRecords(idx) => {
            let set: BTreeSet<usize> = idx.into_iter().filter(|i| *i < n).collect();
            partial(state, &req, body, &records, &set).await
        }
        FirehoseFault::Hang(d) => {
            tokio::time::sleep(d).await;
            state.stats.lock().expect("lock").throttled_calls += 1;
            throttled()
        }
        FirehoseFault::AcceptThenHang(d) => {
            let answer = partial(state, &req, body, &records, &BTreeSet::new()).await;
            tokio::time::sleep(d).await;
            answer
        }
    }
}

fn record_size(r: &Value) -> usize {
    r["Data"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .map_or(0, |v| v.len())
}

/// Forwards the records not in `failed`, then answers as Firehose would
/// for the whole call: moto's RecordIds for the forwarded ones, errors for
/// the failed ones.
async fn partial(
    state: &FirehoseFaults,
    req: &Req,
    mut body: Value,
    records: &[Value],
    failed: &BTreeSet<usize>,
) -> Resp {
    let keep: Vec<Value> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, r)| r.clone())
        .collect();
    let mut ids: VecDeque<Value> = VecDeque::new();
    let mut encrypted = Value::Bool(false);
    if !keep.is_empty() {
        let sizes: Vec<usize> = keep.iter().map(record_size).collect();
        body["Records"] = Value::Array(keep);
        let (resp, upstream_body) = state
            .upstream
            .forward(req, Bytes::from(body.to_string()))
            .await;
        if resp.status() != 200 {
            return resp;
        }
        let Some(answer) = upstream_body.and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return resp;
        };
        ids = answer["RequestResponses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into();
        if let Some(e) = answer.get("Encrypted") {
            encrypted = e.clone();
        }
        let mut st = state.stats.lock().expect("lock");
        st.records_forwarded += sizes.len();
        st.forwarded_record_sizes.extend(sizes);
    }
    state.stats.lock().expect("lock").records_failed += failed.len();
    let responses: Vec<Value> = (0..records.len())
        .map(|i| {
            if failed.contains(&i) {
                json!({"ErrorCode": THROTTLE_CODE, "ErrorMessage": THROTTLE_MESSAGE})
            } else {
                ids.pop_front()
                    .unwrap_or_else(|| json!({"RecordId": uuid::Uuid::new_v4().to_string()}))
            }
        })
        .collect();
    let answer = json!({
        "FailedPutCount": failed.len(),
        "Encrypted": encrypted,
        "RequestResponses": responses,
    });
    let mut r = server::json(200, "application/x-amz-json-1.1", &answer);
    r.headers_mut().insert(
        "x-amzn-requestid",
        http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is ascii"),
    );
    r
}

fn throttled() -> Resp {
    let mut r = server::json(
        THROTTLE_STATUS,
        "application/x-amz-json-1.1",
        &json!({"__type": THROTTLE_CODE, "message": THROTTLE_MESSAGE}),
    );
    r.headers_mut().insert(
        "x-amzn-requestid",
        http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is ascii"),
    );
    r
}
