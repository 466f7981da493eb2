//! `Authorization: Bearer <key>` → who is asking, checked on every request
//! (revocation is immediate), then rate-limited per key.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use uuid::Uuid;

use crate::admin::{self, Scope};
use crate::error::ApiError;
use crate::redis_store::Limit;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub key_id: Uuid,
    pub scope: Scope,
}

impl Principal {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Admin => Ok(()),
            Scope::Advertiser(_) => Err(ApiError::Forbidden),
        }
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let h = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = h.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            let token = token.ok_or(ApiError::Unauthorized)?;
            if !crate::keys::looks_like_a_key(&token) {
                return Err(ApiError::Unauthorized);
            }
            let hash = crate::keys::hash(&token);
            // In memory while the change listener is live (revocations evict
            // at once); otherwise, and on a miss, from the database.
            let (key_id, scope) = match state.live.key(&hash) {
                Some(k) => k,
                None => {
                    let generation = state.live.revocation_generation();
                    let k = admin::authenticate_hash(&state.pool, &hash)
                        .await?
                        .ok_or(ApiError::Unauthorized)?;
                    state.live.remember_key(hash, k, generation);
                    k
                }
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
            match state
                .redis
                .rate_limit(
                    &key_id.simple().to_string(),
                    state.rate_limit_per_minute,
                    now,
                )
                .await
            {
                Limit::Exceeded { retry_after } => {
                    metrics::counter!("earshot_api_rate_limited_total").increment(1);
                    Err(ApiError::RateLimited { retry_after })
                }
                Limit::Allowed | Limit::Unknown => Ok(Principal { key_id, scope }),
            }
        })
    }
}
