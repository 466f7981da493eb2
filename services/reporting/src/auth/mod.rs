//! Who is asking: `Authorization: Bearer <key>` → a [`Principal`] with its
//! [`Scope`], checked on every request (revocation is immediate), then
//! rate-limited per key (`rate_limit.rs`).
//!
//! - `api_key`: the keys' format, hashing, and their lookup in the database;
//! - `key_cache`: live keys and their prefixes held in memory while changes
//!   are heard, so that neither a live key nor a made-up one costs a query.

pub mod api_key;
pub mod key_cache;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, FromRequest, HttpRequest};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::rate_limit::{Limit, RateLimiter};
use key_cache::{Check, KeyCache};

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
    pub limiter: RateLimiter,
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
        let prefix = api_key::prefix_of(token);
        let hash = api_key::hash(token);
        let now = Instant::now();
        // In memory while the change listener is live (`key_cache` says
        // how); otherwise, and for what memory cannot answer, from the
        // database.
        let (key_id, scope) = match self.keys.check(prefix, &hash, now) {
            Check::Known(id, scope) => (id, scope),
            Check::Refused => {
                metrics::counter!("earshot_api_keys_refused_in_memory_total").increment(1);
                return Err(ApiError::Unauthorized);
            }
            Check::LookUp => {
                let generation = self.keys.generation();
                metrics::counter!("earshot_api_key_lookups_total").increment(1);
                let found = api_key::live_key(&self.pool, prefix).await?;
                let key = found
                    .as_ref()
                    .filter(|k| k.matches(&hash))
                    .map(|k| (k.id, k.scope));
                self.keys.remember(prefix, found, generation, now);
                key.ok_or(ApiError::Unauthorized)?
            }
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        match self
            .limiter
            .check(
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
            Limit::Allowed => Ok(Principal { key_id, scope }),
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
