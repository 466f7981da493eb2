//! Admin scope: the catalog (advertisers, campaigns, creatives) and signed
//! tracking URLs.

use std::collections::BTreeMap;

use actix_web::{get, patch, post, web, HttpResponse};
use earshot_domain::{CreativeId, EpisodeId, EventKind, Placement, ShowId, SignedFields};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::catalog::{
    self, Advertiser, Campaign, CampaignPatch, Creative, NewCampaign, NewCreative,
};
use crate::error::{bad, ApiError};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvertiserBody {
    /// 1-200 characters, not all spaces (kept trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
}

/// Create an advertiser.
#[utoipa::path(post, path = "/v1/advertisers", tag = "admin", request_body = AdvertiserBody,
    responses((status = 201, body = Advertiser), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[post("/v1/advertisers")]
pub async fn create_advertiser(
    state: web::Data<AppState>,
    who: Principal,
    body: web::Json<AdvertiserBody>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Created().json(catalog::create_advertiser(&state.pool, &body.name).await?))
}

/// List advertisers.
#[utoipa::path(get, path = "/v1/advertisers", tag = "admin",
    responses((status = 200, body = Vec<Advertiser>), (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[get("/v1/advertisers")]
pub async fn list_advertisers(
    state: web::Data<AppState>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Ok().json(catalog::list_advertisers(&state.pool).await?))
}

/// Rename an advertiser.
#[utoipa::path(patch, path = "/v1/advertisers/{id}", tag = "admin", request_body = AdvertiserBody,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Advertiser), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[patch("/v1/advertisers/{id}")]
pub async fn update_advertiser(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    body: web::Json<AdvertiserBody>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("no advertiser {id}")))?;
    Ok(HttpResponse::Ok().json(catalog::update_advertiser(&state.pool, id, &body.name).await?))
}

/// Create a campaign.
#[utoipa::path(post, path = "/v1/campaigns", tag = "admin", request_body = NewCampaign,
    responses((status = 201, body = Campaign), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 409, description = "The id is taken", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[post("/v1/campaigns")]
pub async fn create_campaign(
    state: web::Data<AppState>,
    who: Principal,
    body: web::Json<NewCampaign>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Created().json(catalog::create_campaign(&state.pool, &body).await?))
}

/// Change a campaign's name, flight or goal.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "admin", request_body = CampaignPatch,
    params(("id" = String, Path)),
    responses((status = 200, body = Campaign), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[patch("/v1/campaigns/{id}")]
pub async fn update_campaign(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    body: web::Json<CampaignPatch>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Ok().json(catalog::update_campaign(&state.pool, &id, &body).await?))
}

/// Create or update a creative of a campaign.
#[utoipa::path(post, path = "/v1/campaigns/{id}/creatives", tag = "admin", request_body = NewCreative,
    params(("id" = String, Path)),
    responses((status = 201, body = Creative), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[post("/v1/campaigns/{id}/creatives")]
pub async fn put_creative(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    body: web::Json<NewCreative>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Created().json(catalog::put_creative(&state.pool, &id, &body).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackingUrlsBody {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub creative: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub episode: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub show: Option<String>,
    /// pre, mid or post.
    #[schema(pattern = r"^(pre|mid|post)$")]
    pub placement: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackingUrls {
    /// The signing key used (the newest of EARSHOT_SIGNING_KEYS); null when
    /// no keys are configured and the URLs are unsigned.
    pub key_id: Option<String>,
    /// One URL per VAST event kind. Players fill `[CACHEBUSTING]` and, for
    /// errors, `[ERRORCODE]`.
    #[schema(value_type = Object)]
    pub urls: BTreeMap<String, String>,
}

/// Signed pixel URLs for each event kind of one creative.
#[utoipa::path(post, path = "/v1/campaigns/{id}/tracking-urls", tag = "admin", request_body = TrackingUrlsBody,
    params(("id" = String, Path)),
    responses((status = 200, body = TrackingUrls), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[post("/v1/campaigns/{id}/tracking-urls")]
pub async fn tracking_urls(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    body: web::Json<TrackingUrlsBody>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    let c = catalog::get_campaign(&state.pool, &id, None).await?;
    let creative = CreativeId::parse(&body.creative).map_err(|e| bad("creative", e.to_string()))?;
    let episode = body
        .episode
        .as_deref()
        .map(EpisodeId::parse)
        .transpose()
        .map_err(|e| bad("episode", e.to_string()))?;
    let show = body
        .show
        .as_deref()
        .map(ShowId::parse)
        .transpose()
        .map_err(|e| bad("show", e.to_string()))?;
    let placement = body
        .placement
        .as_deref()
        .map(|p| p.parse::<Placement>())
        .transpose()
        .map_err(|e| bad("placement", e.to_string()))?;
    let key = state.signing_keys.newest();
    let mut urls = BTreeMap::new();
    for kind in EventKind::ALL {
        let fields = SignedFields {
            c: Some(&c.id),
            cr: Some(creative.as_str()),
            ep: episode.as_ref().map(|e| e.as_str()),
            sh: show.as_ref().map(|s| s.as_str()),
            pos: placement.map(|p| p.as_str()),
            ev: Some(kind.as_str()),
        };
        let url = match key {
            Some(k) => fields.tracking_url(&state.pixel_base_url, k),
            None => fields.unsigned_url(&state.pixel_base_url),
        };
        urls.insert(kind.as_str().to_owned(), url);
    }
    Ok(HttpResponse::Ok().json(TrackingUrls {
        key_id: key.map(|k| k.id().as_str().to_owned()),
        urls,
    }))
}
