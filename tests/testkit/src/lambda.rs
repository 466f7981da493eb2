//! The Lambda Runtime API, served locally, to run a real Lambda binary the
//! way Lambda runs it (no Docker, no cargo-lambda).
//!
//! Runtime API (2018-06-01): `GET /runtime/invocation/next` long-polls and
//! hands out queued events with the `Lambda-Runtime-*` headers;
//! `POST /runtime/invocation/{id}/response` and `…/{id}/error` complete an
//! invocation; `POST /runtime/init/error` reports a failed start.
//!
//! Extensions API (2020-01-01), the part `lambda_runtime`'s
//! `spawn_graceful_shutdown_handler` uses: `POST /extension/register`
//! (answers a `Lambda-Extension-Identifier`) and `GET /extension/event/next`,
//! which blocks; extensions subscribed to `INVOKE`/`SHUTDOWN` get those
//! events. lambda_runtime's helper subscribes to none (Lambda then sends the
//! runtime SIGTERM at shutdown, which is what runs its hook), so for it
//! `event/next` blocks for good, as on Lambda.
//!
//! Shutdown follows Lambda: with at least one extension registered the
//! runtime gets SIGTERM and a grace period, otherwise SIGKILL at once.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use crate::process::{ChildProcess, ProcessSpec};
use crate::server::{self, Req, Resp, Server};

/// How long an invocation may run, for `Lambda-Runtime-Deadline-Ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`LambdaFunction::shutdown`] waits after SIGTERM before SIGKILL.
/// Lambda allows 500 ms with internal extensions only; a loaded CI machine
/// needs more, and a test must not fail on a slow machine.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Lambda's shutdown phase with internal extensions only: SIGTERM, then
/// SIGKILL 500 ms later (Lambda execution environment lifecycle, Shutdown
/// phase). For [`LambdaFunction::shutdown_within`] when a test must prove a
/// function finishes inside it.
pub const LAMBDA_SHUTDOWN_WINDOW: Duration = Duration::from_millis(500);
pub const ACCOUNT_ID: &str = "123456789012";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// `POST …/response`: the body the function returned.
    Response(Bytes),
    /// `POST …/error` (or `init/error` while it was queued).
    Error {
        error_type: Option<String>,
        body: Bytes,
    },
}

/// Per-invocation settings.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    /// `Lambda-Runtime-Trace-Id`; a fresh X-Ray id when `None`.
    pub trace_id: Option<String>,
    /// The function's timeout: `Lambda-Runtime-Deadline-Ms` is this far
    /// from when the event is queued ([`DEFAULT_TIMEOUT`] when `None`). An
    /// invocation that has not answered by then ends as Lambda ends it, with
    /// a `Sandbox.Timedout` error.
    pub timeout: Option<Duration>,
}

struct Queued {
    id: String,
    event: Bytes,
    trace_id: String,
    deadline_ms: u128,
    done: oneshot::Sender<InvocationOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredExtension {
    pub id: String,
    pub name: String,
    pub events: Vec<String>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Queued>,
    in_flight: HashMap<String, oneshot::Sender<InvocationOutcome>>,
    first_next_at: Option<Instant>,
    next_polls: usize,
    shutdown: bool,
    init_error: Option<(Option<String>, Bytes)>,
    extensions: Vec<RegisteredExtension>,
    extension_queues: HashMap<String, VecDeque<Value>>,
    completed: usize,
}

impl Inner {
    /// Queues `event` for every extension subscribed to `event_type`.
    fn tell_extensions(&mut self, event_type: &str, event: &Value) {
        for e in &self.extensions {
            if e.events.iter().any(|x| x == event_type) {
                self.extension_queues
                    .entry(e.id.clone())
                    .or_default()
                    .push_back(event.clone());
            }
        }
    }
}

struct State {
    function_name: String,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl State {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{ACCOUNT_ID}:function:{}",
            crate::moto::REGION,
            self.function_name
        )
    }
}

/// The emulator; clones share it. The server stops when the last clone drops.
#[derive(Clone)]
pub struct LambdaRuntimeEmulator {
    server: Arc<Server>,
    state: Arc<State>,
}

fn epoch_ms(d: Duration) -> u128 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// A fresh X-Ray trace header, as Lambda passes it.
pub fn new_xray_trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &a[..24],
        &b[..16]
    )
}

impl LambdaRuntimeEmulator {
    /// Serves the Runtime API on 127.0.0.1:0 for a function called `function_name`.
    pub async fn start(function_name: &str) -> anyhow::Result<Self> {
        let (changed, _) = watch::channel(0);
        let state = Arc::new(State {
            function_name: function_name.to_owned(),
            inner: Mutex::new(Inner::default()),
            changed,
        });
        let server =
            Server::serve(state.clone(), |s, req| async move { route(&s, req).await }).await?;
        Ok(Self {
            server: Arc::new(server),
            state,
        })
    }

    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.server.addr().to_string()
    }

    pub fn function_name(&self) -> &str {
        &self.state.function_name
    }

    /// Queues an event and waits for the function's answer, parsed as JSON.
    pub async fn invoke(&self, event: &Value) -> anyhow::Result<Value> {
        self.invoke_with(event, InvokeOptions::default()).await
    }

    pub async fn invoke_with(&self, event: &Value, opts: InvokeOptions) -> anyhow::Result<Value> {
        match self
            .invoke_raw(Bytes::from(event.to_string()), opts)
            .await?
        {
            InvocationOutcome::Response(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow!("the function's response is not JSON ({e}): {b:?}")),
            InvocationOutcome::Error { error_type, body } => bail!(
                "the function reported an error {error_type:?}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Queues raw event bytes and waits for the outcome.
    pub async fn invoke_raw(
        &self,
        event: Bytes,
        opts: InvokeOptions,
    ) -> anyhow::Result<InvocationOutcome> {
        let (done, rx) = oneshot::channel();
        let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut inner = self.state.inner.lock().expect("lock");
            if let Some((t, b)) = &inner.init_error {
                bail!(
                    "the function failed to initialize ({t:?}): {}",
                    String::from_utf8_lossy(b)
                );
            }
            inner.queue.push_back(Queued {
                id: id.clone(),
                event,
                trace_id: opts.trace_id.unwrap_or_else(new_xray_trace_id),
                deadline_ms: epoch_ms(timeout),
                done,
            });
        }
        self.state.bump();
        match tokio::time::timeout(timeout, rx).await {
            Ok(outcome) => outcome.map_err(|_| anyhow!("the emulator dropped the invocation")),
            Err(_) => {
                // Too late: a response posted from now on is refused.
                let mut inner = self.state.inner.lock().expect("lock");
                inner.queue.retain(|q| q.id != id);
                inner.in_flight.remove(&id);
                Ok(InvocationOutcome::Error {
                    error_type: Some("Sandbox.Timedout".to_owned()),
                    body: Bytes::from(format!(
                        "Task timed out after {:.2} seconds",
                        timeout.as_secs_f64()
                    )),
                })
            }
        }
    }

    /// When the runtime first polled `/invocation/next` (the end of init).
    pub fn first_poll_at(&self) -> Option<Instant> {
        self.state.inner.lock().expect("lock").first_next_at
    }

    /// Waits for the runtime's first `/invocation/next`.
    pub async fn wait_first_poll(&self) -> Instant {
        let mut rx = self.state.changed.subscribe();
        loop {
            if let Some(t) = self.first_poll_at() {
                return t;
            }
            let _ = rx.changed().await;
        }
    }

    /// `/invocation/next` calls so far.
    pub fn next_polls(&self) -> usize {
        self.state.inner.lock().expect("lock").next_polls
    }

    /// Invocations that got a response or an error.
    pub fn completed(&self) -> usize {
        self.state.inner.lock().expect("lock").completed
    }

    pub fn extensions(&self) -> Vec<RegisteredExtension> {
        self.state.inner.lock().expect("lock").extensions.clone()
    }

    /// What the function posted to `/runtime/init/error`, if anything.
    pub fn init_error(&self) -> Option<(Option<String>, Bytes)> {
        self.state.inner.lock().expect("lock").init_error.clone()
    }

    /// Starts the shutdown phase: no more invocations are handed out and
    /// extensions subscribed to SHUTDOWN receive it. Signalling the process
    /// is [`LambdaFunction::shutdown`]'s job.
    pub fn request_shutdown(&self) {
        {
            let mut inner = self.state.inner.lock().expect("lock");
            inner.shutdown = true;
            let event = json!({
                "eventType": "SHUTDOWN",
                "shutdownReason": "spindown",
                "deadlineMs": epoch_ms(Duration::from_millis(2000)) as u64,
            });
            inner.tell_extensions("SHUTDOWN", &event);
        }
        self.state.bump();
    }

    /// Starts `binary` as this function's runtime: `AWS_LAMBDA_RUNTIME_API`
    /// and the usual Lambda variables, then `env` (which wins).
    pub fn spawn_function(
        &self,
        binary: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<LambdaFunction> {
        let name = self.function_name().to_owned();
        let spec = ProcessSpec::new(binary)
            .envs([
                ("AWS_LAMBDA_RUNTIME_API".to_owned(), self.runtime_api()),
                ("AWS_LAMBDA_FUNCTION_NAME".to_owned(), name.clone()),
                (
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(),
                    "128".to_owned(),
                ),
                (
                    "AWS_LAMBDA_FUNCTION_VERSION".to_owned(),
                    "$LATEST".to_owned(),
                ),
                (
                    "AWS_LAMBDA_LOG_GROUP_NAME".to_owned(),
                    format!("/aws/lambda/{name}"),
                ),
                (
                    "AWS_LAMBDA_LOG_STREAM_NAME".to_owned(),
                    format!("2026/11/27/[$LATEST]{}", uuid::Uuid::new_v4().simple()),
                ),
                (
                    "AWS_LAMBDA_INITIALIZATION_TYPE".to_owned(),
                    "on-demand".to_owned(),
                ),
                (
                    "AWS_EXECUTION_ENV".to_owned(),
                    "AWS_Lambda_provided.al2023".to_owned(),
                ),
                ("AWS_REGION".to_owned(), crate::moto::REGION.to_owned()),
                (
                    "AWS_DEFAULT_REGION".to_owned(),
                    crate::moto::REGION.to_owned(),
                ),
                ("_HANDLER".to_owned(), "bootstrap".to_owned()),
                ("TZ".to_owned(), ":UTC".to_owned()),
            ])
            .envs(env);
        let spawned_at = Instant::now();
        let process = ChildProcess::spawn(&spec)?;
        Ok(LambdaFunction {
            emulator: self.clone(),
            process,
            spawned_at,
        })
    }
}

/// A function binary running under the emulator. Killed on drop.
pub struct LambdaFunction {
    emulator: LambdaRuntimeEmulator,
    process: ChildProcess,
    spawned_at: Instant,
}

/// How a shutdown went.
#[derive(Debug)]
pub struct ShutdownReport {
    pub status: ExitStatus,
    /// SIGTERM was sent (an extension was registered).
    pub sigterm: bool,
    /// The grace period ran out and the process was killed.
    pub killed_after_grace: bool,
}

impl LambdaFunction {
    pub fn emulator(&self) -> &LambdaRuntimeEmulator {
        &self.emulator
    }

    pub fn process(&self) -> &ChildProcess {
        &self.process
    }

    /// Just before the process was started.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Process start to the first `/invocation/next` (fails if it exits first).
    pub async fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let emu = self.emulator.clone();
        let polled = tokio::select! {
            t = emu.wait_first_poll() => Ok(t),
            status = self.process.wait() => Err(status.ok()),
        };
        match polled {
            Ok(t) => Ok(t.duration_since(self.spawned_at)),
            Err(status) => bail!(
                "the function exited ({status:?}) before polling for events\n{}",
                self.process.output_text()
            ),
        }
    }

    /// Invokes and returns the JSON response; fails if the process exits first.
    pub async fn invoke(&mut self, event: &Value) -> anyhow::Result<Value> {
        self.invoke_with(event, InvokeOptions::default()).await
    }

    pub async fn invoke_with(
        &mut self,
        event: &Value,
        opts: InvokeOptions,
    ) -> anyhow::Result<Value> {
        let emu = self.emulator.clone();
        let outcome = tokio::select! {
            r = emu.invoke_with(event, opts) => Ok(r),
            status = self.process.wait() => Err(status.ok()),
        };
        match outcome {
            Ok(r) => r.map_err(|e| anyhow!("{e}\n{}", self.process.output_text())),
            Err(status) => bail!(
                "the function exited ({status:?}) during an invocation\n{}",
                self.process.output_text()
            ),
        }
    }

    /// Lambda's shutdown phase: [`LambdaRuntimeEmulator::request_shutdown`],
    /// then SIGTERM if an extension is registered (SIGKILL otherwise), and
    /// waits for the exit and the last output line, SIGKILL after
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(&mut self) -> anyhow::Result<ShutdownReport> {
        self.shutdown_within(SHUTDOWN_GRACE).await
    }

    /// [`shutdown`](Self::shutdown) with SIGKILL after `grace`
    /// ([`LAMBDA_SHUTDOWN_WINDOW`] is Lambda's own).
    pub async fn shutdown_within(&mut self, grace: Duration) -> anyhow::Result<ShutdownReport> {
        self.emulator.request_shutdown();
        if self.emulator.extensions().is_empty() {
            let status = self.process.kill().await?;
            return Ok(ShutdownReport {
                status,
                sigterm: false,
                killed_after_grace: false,
            });
        }
        self.process.signal(rustix::process::Signal::TERM)?;
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(status) => Ok(ShutdownReport {
                status: status?,
                sigterm: true,
                killed_after_grace: false,
            }),
            Err(_) => Ok(ShutdownReport {
                status: self.process.kill().await?,
                sigterm: true,
                killed_after_grace: true,
            }),
        }
    }
}

async fn route(state: &State, req: Req) -> Resp {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => next_invocation(state).await,
        ("POST", ["2018-06-01", "runtime", "invocation", id, kind @ ("response" | "error")]) => {
            let outcome = if *kind == "response" {
                InvocationOutcome::Response(req.body().clone())
            } else {
                InvocationOutcome::Error {
                    error_type: header(&req, "lambda-runtime-function-error-type"),
                    body: req.body().clone(),
                }
            };
            let sender = {
                let mut inner = state.inner.lock().expect("lock");
                let s = inner.in_flight.remove(*id);
                if s.is_some() {
                    inner.completed += 1;
                }
                s
            };
            state.bump();
            match sender {
                Some(s) => {
                    let _ = s.send(outcome);
                    accepted()
                }
                None => server::json(
                    400,
                    "application/json",
                    &json!({"errorMessage": format!("Invalid request ID: {id}"), "errorType": "InvalidRequestID"}),
                ),
            }
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            let error_type = header(&req, "lambda-runtime-function-error-type");
            let queued: Vec<Queued> = {
                let mut inner = state.inner.lock().expect("lock");
                inner.init_error = Some((error_type.clone(), req.body().clone()));
                inner.queue.drain(..).collect()
            };
            for q in queued {
                let _ = q.done.send(InvocationOutcome::Error {
                    error_type: error_type.clone(),
                    body: req.body().clone(),
                });
            }
            state.bump();
            accepted()
        }
        ("POST", ["2020-01-01", "extension", "register"]) => register_extension(state, &req),
        ("GET", ["2020-01-01", "extension", "event", "next"]) => {
            match header(&req, "lambda-extension-identifier") {
                Some(id) => next_extension_event(state, &id).await,
                None => server::json(
                    403,
                    "application/json",
                    &json!({"errorMessage": "missing Lambda-Extension-Identifier", "errorType": "Extension.MissingExtensionIdentifier"}),
                ),
            }
        }
        ("POST", ["2020-01-01", "extension", "init" | "exit", "error"]) => accepted(),
        _ => server::text(404, &format!("the emulator does not serve {method} {path}")),
    }
}

fn header(req: &Req, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn accepted() -> Resp {
    server::json(202, "application/json", &json!({"status": "OK"}))
}

async fn next_invocation(state: &State) -> Resp {
    let mut rx = state.changed.subscribe();
    {
        let mut inner = state.inner.lock().expect("lock");
        inner.next_polls += 1;
        if inner.first_next_at.is_none() {
            inner.first_next_at = Some(Instant::now());
        }
    }
    state.bump();
    loop {
        let picked = {
            let mut inner = state.inner.lock().expect("lock");
            if inner.shutdown {
                None
            } else if let Some(q) = inner.queue.pop_front() {
                let event = json!({
                    "eventType": "INVOKE",
                    "deadlineMs": q.deadline_ms as u64,
                    "requestId": q.id,
                    "invokedFunctionArn": state.arn(),
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": q.trace_id},
                });
                inner.tell_extensions("INVOKE", &event);
                inner.in_flight.insert(q.id.clone(), q.done);
                Some((q.id, q.event, q.trace_id, q.deadline_ms))
            } else {
                None
            }
        };
        if let Some((id, event, trace, deadline)) = picked {
            state.bump();
            return http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", id)
                .header("lambda-runtime-deadline-ms", deadline.to_string())
                .header("lambda-runtime-invoked-function-arn", state.arn())
                .header("lambda-runtime-trace-id", trace)
                .body(Full::new(event))
                .expect("valid response");
        }
        // After a shutdown request nothing more is handed out: the poll
        // stays open until the process goes away, as on Lambda.
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn register_extension(state: &State, req: &Req) -> Resp {
    let Some(name) = header(req, "lambda-extension-name") else {
        return server::json(
            400,
            "application/json",
            &json!({"errorMessage": "missing Lambda-Extension-Name", "errorType": "InvalidRequest"}),
        );
    };
    let events: Vec<String> = serde_json::from_slice::<Value>(req.body())
        .ok()
        .and_then(|v| v.get("events").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let id = uuid::Uuid::new_v4().to_string();
    {
        let mut inner = state.inner.lock().expect("lock");
        inner.extensions.push(RegisteredExtension {
            id: id.clone(),
            name,
            events,
        });
        inner.extension_queues.insert(id.clone(), VecDeque::new());
    }
    state.bump();
    let mut body = json!({
        "functionName": state.function_name,
        "functionVersion": "$LATEST",
        "handler": "bootstrap",
    });
    if header(req, "lambda-extension-accept-feature").is_some_and(|f| f.contains("accountId")) {
        body["accountId"] = json!(ACCOUNT_ID);
    }
    let mut r = server::json(200, "application/json", &body);
    r.headers_mut().insert(
        "lambda-extension-identifier",
        http::HeaderValue::from_str(&id).expect("uuid is ascii"),
    );
    r
}

async fn next_extension_event(state: &State, id: &str) -> Resp {
    let mut rx = state.changed.subscribe();
    loop {
        let event = {
            let mut inner = state.inner.lock().expect("lock");
            match inner.extension_queues.get_mut(id) {
                None => {
                    return server::json(
                        403,
                        "application/json",
                        &json!({"errorMessage": "unknown extension", "errorType": "Extension.UnknownExtensionIdentifier"}),
                    )
                }
                Some(q) => q.pop_front(),
            }
        };
        if let Some(e) = event {
            let mut r = server::json(200, "application/json", &e);
            r.headers_mut().insert(
                "lambda-extension-event-identifier",
                http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .expect("uuid is ascii"),
            );
            return r;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
