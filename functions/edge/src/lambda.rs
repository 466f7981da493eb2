//! The Lambda adapter: API Gateway (HTTP v2, REST v1), Function URL and ALB
//! events, through lambda_http, into the same handler the local server uses.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::hit::HitRequest;
use crate::App;

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
    let trace = req
        .lambda_context_ref()
        .and_then(|c| c.xray_trace_id.clone());
    let path = req.uri().path().to_owned();
    let resp = app
        .handle(HitRequest {
            method: req.method(),
            path: &path,
            query: req.uri().query(),
            headers: req.headers(),
            source_ip: ip,
            runtime_trace_id: trace.as_deref(),
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

/// Runs under the Lambda runtime until the environment shuts down. In
/// buffered mode the graceful-shutdown hook flushes the buffer first.
pub async fn run(app: Arc<App>) -> Result<(), lambda_http::Error> {
    if matches!(app.flush, crate::config::FlushMode::Buffered { .. }) {
        let a = app.clone();
        lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
            a.shutdown().await;
        })
        .await;
    }
    lambda_http::run(lambda_http::service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    }))
    .await
}
