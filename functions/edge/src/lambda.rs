//! The Lambda adapter: API Gateway (HTTP v2, REST v1), Function URL and ALB
//! events, through lambda_http, into the same handler the local server uses.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::hit::HitRequest;
use crate::App;

/// Time kept back from an invocation's deadline for what follows the sink's
/// last word: writing dead letters to the log and posting the response to
/// the Runtime API, on a CPU share as small as 128 MB gets.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// How long the shutdown hook may deliver buffered events before it
/// dead-letters the rest. Lambda gives the runtime and its internal
/// extensions 500 ms between SIGTERM and SIGKILL; the rest of that is for
/// writing the dead letters and the last metrics.
pub const SHUTDOWN_FLUSH_BUDGET: Duration = Duration::from_millis(250);

/// When a hit must be answered: the invocation's deadline
/// (`Lambda-Runtime-Deadline-Ms`, milliseconds since the epoch) less
/// [`DEADLINE_MARGIN`], on tokio's clock.
pub fn answer_by(deadline_ms: u64) -> tokio::time::Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms as u64));
    tokio::time::Instant::now() + left.saturating_sub(DEADLINE_MARGIN)
}

/// The caller's address as the platform saw it. An ALB has no such field:
/// it appends the caller to `X-Forwarded-For`, so the rightmost entry is the
/// one the ALB itself wrote and the only one to believe.
pub fn source_ip(req: &Request) -> Option<IpAddr> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref()?.parse().ok(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.as_deref()?.parse().ok(),
        RequestContext::Alb(_) => req
            .headers()
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .rsplit(',')
            .next()?
            .trim()
            .parse()
            .ok(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Handles one Lambda HTTP event.
pub async fn handle(app: &App, req: Request) -> Response<Body> {
    let ip = source_ip(&req);
    let context = req.lambda_context_ref();
    let trace = context.and_then(|c| c.xray_trace_id.clone());
    // A context without a deadline (0) is a test's, not Lambda's.
    let deadline = context
        .map(|c| c.deadline)
        .filter(|d| *d > 0)
        .map(answer_by);
    let path = req.uri().path().to_owned();
    let resp = app
        .handle(HitRequest {
            method: req.method(),
            path: &path,
            query: req.uri().query(),
            headers: req.headers(),
            source_ip: ip,
            runtime_trace_id: trace.as_deref(),
            deadline,
        })
        .await;
    let (parts, body) = resp.into_parts();
    let body = if body.is_empty() {
        Body::Empty
    } else {
        Body::Binary(body.to_vec())
    };
    Response::from_parts(parts, body)
}

/// Runs under the Lambda runtime until the environment shuts down. An
/// internal extension is registered so that Lambda sends SIGTERM at
/// shutdown; the hook then writes the environment's last heartbeat (both
/// flush modes: without it the audit could not tell the events after the
/// last minute's heartbeat from an unknown tail) and, in buffered mode,
/// flushes the buffer within [`SHUTDOWN_FLUSH_BUDGET`], dead-lettering what
/// it could not deliver.
pub async fn run(app: Arc<App>) -> Result<(), lambda_http::Error> {
    let a = app.clone();
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        a.shutdown(Some(SHUTDOWN_FLUSH_BUDGET)).await;
    })
    .await;
    lambda_http::run(lambda_http::service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
