//! What an advertiser's key can see: its campaigns, their creatives and
//! pacing (reports: `reports.rs`). Another advertiser's campaign is a 404,
//! exactly as a missing one.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::catalog::{self, Campaign, Creative};
use crate::error::ApiError;
use crate::state::AppState;

/// List the campaigns this key may see.
#[utoipa::path(
    get, path = "/v1/campaigns", tag = "campaigns",
    responses(
        (status = 200, description = "Campaigns, by id", body = Vec<Campaign>),
        (status = 401, description = "Missing or invalid key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns")]
pub async fn list(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    let campaigns = catalog::list_campaigns(&state.pool, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(campaigns))
}

/// One campaign.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Campaign),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign for this key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = catalog::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(c))
}

/// The campaign's creatives.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/creatives", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Vec<Creative>),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/creatives")]
pub async fn creatives(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = catalog::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(catalog::list_creatives(&state.pool, &c.id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pacing {
    pub campaign: String,
    pub impression_goal: Option<i64>,
    pub flight_start: Option<time::Date>,
    pub flight_end: Option<time::Date>,
    /// Counted impressions during the flight (all time without a flight).
    pub delivered: i64,
    /// Even pacing: goal × the share of the flight elapsed. Null without a goal and a flight.
    pub expected_by_now: Option<f64>,
    /// delivered / expected_by_now; null when nothing is expected yet.
    pub pace_ratio: Option<f64>,
    /// Share of the flight elapsed (0-1).
    pub flight_elapsed: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
}

/// Delivery against the goal under even pacing across the flight.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/pacing", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Pacing),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/pacing")]
pub async fn pacing(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = catalog::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    let now = OffsetDateTime::now_utc();
    Ok(HttpResponse::Ok().json(compute_pacing(&state.pool, &c, now).await?))
}

pub async fn compute_pacing(
    pool: &sqlx::PgPool,
    c: &Campaign,
    now: OffsetDateTime,
) -> Result<Pacing, ApiError> {
    let start = c.flight_start.map(|d| d.midnight().assume_utc());
    // The last day is included: the flight ends at the next midnight.
    let end = c
        .flight_end
        .map(|d| d.midnight().assume_utc() + Duration::days(1));
    let delivered: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(counted_hits), 0)::bigint FROM rollup_hourly
         WHERE campaign = $1 AND event = 'impression'
           AND ($2::timestamptz IS NULL OR hour >= $2) AND ($3::timestamptz IS NULL OR hour < $3)",
    )
    .bind(&c.id)
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    let elapsed = match (start, end) {
        (Some(s), Some(e)) if e > s => {
            Some(((now - s).as_seconds_f64() / (e - s).as_seconds_f64()).clamp(0.0, 1.0))
        }
        _ => None,
    };
    let expected = match (c.impression_goal, elapsed) {
        (Some(g), Some(f)) => Some(g as f64 * f),
        _ => None,
    };
    Ok(Pacing {
        campaign: c.id.clone(),
        impression_goal: c.impression_goal,
        flight_start: c.flight_start,
        flight_end: c.flight_end,
        delivered,
        expected_by_now: expected,
        pace_ratio: expected.filter(|e| *e > 0.0).map(|e| delivered as f64 / e),
        flight_elapsed: elapsed,
        as_of: now,
    })
}
