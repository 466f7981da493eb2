//! Admin scope: API keys.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Principal, Scope};
use crate::catalog::{self, ApiKeyInfo, CreatedKey};
use crate::error::{bad, ApiError};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// `admin`, or `advertiser` with `advertiser_id`.
    #[schema(pattern = r"^(admin|advertiser)$")]
    pub scope: String,
    pub advertiser_id: Option<Uuid>,
    /// At most 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: String,
}

/// Create an API key. The response holds the key once; only its hash is kept.
#[utoipa::path(post, path = "/v1/keys", tag = "admin", request_body = KeyBody,
    responses((status = 201, body = CreatedKey), (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"), (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[post("/v1/keys")]
pub async fn create_key(
    state: web::Data<AppState>,
    who: Principal,
    body: web::Json<KeyBody>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    let scope = match (body.scope.as_str(), body.advertiser_id) {
        ("admin", None) => Scope::Admin,
        ("admin", Some(_)) => {
            return Err(bad("advertiser_id", "an admin key has no advertiser_id"))
        }
        ("advertiser", Some(a)) => Scope::Advertiser(a),
        ("advertiser", None) => {
            return Err(bad(
                "advertiser_id",
                "an advertiser key needs advertiser_id",
            ))
        }
        (other, _) => {
            return Err(bad(
                "scope",
                format!("scope {other:?} is not admin or advertiser"),
            ))
        }
    };
    Ok(HttpResponse::Created().json(catalog::create_key(&state.pool, scope, &body.name).await?))
}

/// List API keys (prefixes only, never the keys).
#[utoipa::path(get, path = "/v1/keys", tag = "admin",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"), (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[get("/v1/keys")]
pub async fn list_keys(
    state: web::Data<AppState>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    Ok(HttpResponse::Ok().json(catalog::list_keys(&state.pool).await?))
}

/// Revoke a key (by id or prefix), effective on the next request.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "admin", params(("id" = String, Path, description = "Key id or prefix")),
    responses((status = 200, body = ApiKeyInfo), (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[delete("/v1/keys/{id}")]
pub async fn revoke_key(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    let info = catalog::revoke_key(&state.pool, &id).await?;
    // This replica forgets the key now; the others when the notification
    // the revocation committed reaches them.
    state.live.apply(&format!("k {}", info.id));
    Ok(HttpResponse::Ok().json(info))
}
