//! Health, readiness, metrics, and the API's own description (its
//! readable page, `/docs`, is earshot-web's).

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (Redis down: answers come from PostgreSQL,
    /// uncached, and each replica enforces the rate limits on its own) or
    /// `unavailable`.
    pub status: &'static str,
    /// `ok` or `down`.
    pub postgres: &'static str,
    /// `ok`, `down` or `disabled` (no REDIS_URL).
    pub redis: &'static str,
}

/// Readiness: PostgreSQL answers (503 if not); Redis is reported, and its
/// absence only degrades.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let pg = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let redis = if !state.redis.enabled() {
        "disabled"
    } else if state.redis.ping().await {
        "ok"
    } else {
        "down"
    };
    let r = Readiness {
        status: match (pg, redis) {
            (false, _) => "unavailable",
            (true, "down") => "degraded",
            _ => "ready",
        },
        postgres: if pg { "ok" } else { "down" },
        redis,
    };
    if pg {
        HttpResponse::Ok().json(r)
    } else {
        HttpResponse::ServiceUnavailable().json(r)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// This document.
#[get("/v1/openapi.json")]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::ApiDoc::openapi())
}
