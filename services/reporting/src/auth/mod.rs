//! Who is asking: `Authorization: Bearer <key>` → a [`Principal`] with its
//! [`Scope`], checked on every request (revocation is immediate), then
//! rate-limited per key.
//!
//! - `api_key`: the keys' format, hashing, and their lookup in the database;
//! - `key_cache`: authenticated keys held in memory while revocations are
//!   heard.

pub mod api_key;
pub mod key_cache;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{web, FromRequest, HttpRequest};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::redis_store::{Limit, RedisStore};
use key_cache::KeyCache;

/// Who a key speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Advertiser(Uuid),
}

impl Scope {
    /// The advertiser a query is limited to (None: every advertiser).
    pub fn advertiser(&self) -> Option<Uuid> {
        match self {
            Scope::Admin => None,
            Scope::Advertiser(a) => Some(*a),
        }
    }
}

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

/// What authenticating a request needs: the keys (in memory, else in the
/// database) and the per-key rate limit.
pub struct Authenticator {
    pub pool: PgPool,
    pub keys: Arc<KeyCache>,
    pub limiter: RedisStore,
    /// Requests per minute per key.
    pub rate_limit_per_minute: u32,
}

impl Authenticator {
    /// The key presented as `token`, if it is a live key, then its rate
    /// limit.
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if !api_key::looks_like_a_key(token) {
            return Err(ApiError::Unauthorized);
        }
        let hash = api_key::hash(token);
        // In memory while the change listener is live (revocations evict
        // at once); otherwise, and on a miss, from the database.
        let (key_id, scope) = match self.keys.get(&hash) {
            Some(k) => k,
            None => {
                let generation = self.keys.revocation_generation();
                let k = api_key::authenticate_hash(&self.pool, &hash)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                self.keys.remember(hash, k, generation);
                k
            }
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        match self
            .limiter
            .rate_limit(
                &key_id.simple().to_string(),
                self.rate_limit_per_minute,
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
        let auth = req.app_data::<web::Data<Authenticator>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let auth =
                auth.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("authenticator missing")))?;
            let token = token.ok_or(ApiError::Unauthorized)?;
            auth.authenticate(&token).await
        })
    }
}
