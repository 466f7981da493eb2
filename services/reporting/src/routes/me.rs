//! Who a key speaks for, so a client (the dashboard) can say it and offer
//! what the key may do.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::catalog::{self, Advertiser, ApiKeyInfo};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The key presented: its id, prefix, name and scope (never the key).
    pub key: ApiKeyInfo,
    /// The advertiser an advertiser key speaks for; null for an admin key.
    pub advertiser: Option<Advertiser>,
}

/// The presented key and, for an advertiser key, its advertiser.
#[utoipa::path(
    get, path = "/v1/me", tag = "campaigns",
    responses(
        (status = 200, body = Me),
        (status = 401, description = "Missing, wrong or revoked key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/me")]
pub async fn me(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    let key = catalog::get_key(&state.pool, who.key_id).await?;
    let advertiser = match who.scope.advertiser() {
        Some(a) => Some(catalog::get_advertiser(&state.pool, a).await?),
        None => None,
    };
    Ok(HttpResponse::Ok().json(Me { key, advertiser }))
}
