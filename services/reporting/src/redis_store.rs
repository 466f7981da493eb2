//! Redis for the report cache and the per-key rate limits. Optional, and
//! never a reason for a 5xx: every call has a short timeout, and when Redis
//! is down the API answers from PostgreSQL (uncached), each replica limits
//! keys on its own (`rate_limit.rs`), and `/readyz` says `degraded`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::RwLock;

use crate::rate_limit::Limit;

/// A Redis call that takes longer than this is treated as Redis being down:
/// a cache that slows requests down is worse than none.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Reconnection attempts are at least this far apart while Redis is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Fixed-window counter that hands out leases: takes up to ARGV[2] of the
/// window's ARGV[1] requests, never past the limit, sets the expiry with the
/// first increment, and returns how many it took (0: the limit is reached).
const RATE_LIMIT_LUA: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant <= 0 then return 0 end
local n = redis.call('INCRBY', KEYS[1], grant)
if n == grant then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return grant";

/// A replica takes its requests from the shared Redis counter in leases of
/// this share of the per-minute limit (at least 1, at most [`MAX_LEASE`]),
/// and spends them locally: one Redis call per lease instead of per request.
/// Replicas together never admit more than the limit (a lease is never
/// granted past it); what a replica leased and did not use before the
/// window ended is lost, so with R replicas a key may get up to R × 1% fewer
/// requests than its limit in a window. Limits of 100 or less per minute are
/// counted request by request, exactly.
const LEASE_DIVISOR: u32 = 100;
const MAX_LEASE: u32 = 1_000;
/// Local lease entries kept before those of past windows are dropped.
const MAX_LOCAL_LEASES: usize = 10_000;

#[derive(Clone)]
pub struct RedisStore {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    client: redis::Client,
    conn: RwLock<Option<ConnectionManager>>,
    last_attempt: std::sync::Mutex<Option<std::time::Instant>>,
    healthy: AtomicBool,
    script: redis::Script,
    /// Unspent leased requests per subject: (window, remaining).
    leases: std::sync::Mutex<HashMap<String, (u64, u32)>>,
}

impl Inner {
    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u32)>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends one locally held request of this window, if there is one.
    fn take_leased(&self, subject: &str, window: u64) -> bool {
        match self.leases().get_mut(subject) {
            Some((w, left)) if *w == window && *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    fn add_leased(&self, subject: &str, window: u64, n: u32) {
        let mut leases = self.leases();
        if leases.len() >= MAX_LOCAL_LEASES {
            leases.retain(|_, (w, _)| *w >= window);
        }
        match leases.get_mut(subject) {
            Some((w, left)) if *w == window => *left += n,
            Some(e) => *e = (window, n),
            None => {
                leases.insert(subject.to_owned(), (window, n));
            }
        }
    }
}

impl RedisStore {
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Parses the URL now (a bad URL fails start-up); connects lazily.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a Redis URL: {e}"))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                client,
                conn: RwLock::new(None),
                last_attempt: std::sync::Mutex::new(None),
                healthy: AtomicBool::new(false),
                script: redis::Script::new(RATE_LIMIT_LUA),
                leases: std::sync::Mutex::new(HashMap::new()),
            })),
        })
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    async fn conn(&self) -> Option<ConnectionManager> {
        let inner = self.inner.as_ref()?;
        if let Some(c) = inner.conn.read().await.as_ref() {
            return Some(c.clone());
        }
        {
            let mut last = inner.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return None;
            }
            *last = Some(std::time::Instant::now());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(1);
        match tokio::time::timeout(
            REDIS_TIMEOUT * 3,
            ConnectionManager::new_with_config(inner.client.clone(), cfg),
        )
        .await
        {
            Ok(Ok(c)) => {
                *inner.conn.write().await = Some(c.clone());
                inner.healthy.store(true, Ordering::Relaxed);
                Some(c)
            }
            _ => {
                inner.healthy.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    fn record<T>(
        &self,
        r: Result<Result<T, redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let inner = self.inner.as_ref()?;
        match r {
            Ok(Ok(v)) => {
                inner.healthy.store(true, Ordering::Relaxed);
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis call failed");
                inner.healthy.store(false, Ordering::Relaxed);
                None
            }
            Err(_) => {
                inner.healthy.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut c = self.conn().await?;
        let r = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut c),
        )
        .await;
        self.record(r).flatten()
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_seconds: u64) {
        let Some(mut c) = self.conn().await else {
            return;
        };
        let r = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(ttl_seconds.max(1))
                .query_async::<()>(&mut c),
        )
        .await;
        self.record(r);
    }

    /// Counts one request for `subject` in the current minute, against the
    /// count all replicas share; `None` when Redis is disabled or cannot
    /// answer.
    pub async fn rate_limit(&self, subject: &str, per_minute: u32, now_unix: u64) -> Option<Limit> {
        let inner = self.inner.as_ref()?;
        let window = now_unix / 60;
        if inner.take_leased(subject, window) {
            return Some(Limit::Allowed);
        }
        let mut c = self.conn().await?;
        let key = format!("earshot:rl:{subject}:{window}");
        let lease = (per_minute / LEASE_DIVISOR).clamp(1, MAX_LEASE);
        let r = tokio::time::timeout(
            REDIS_TIMEOUT,
            inner
                .script
                .key(&key)
                .arg(per_minute)
                .arg(lease)
                .arg(61)
                .invoke_async::<u32>(&mut c),
        )
        .await;
        match self.record(r)? {
            0 => Some(Limit::Exceeded {
                retry_after: (window + 1) * 60 - now_unix,
            }),
            granted => {
                // One of the granted requests is this one.
                inner.add_leased(subject, window, granted - 1);
                Some(Limit::Allowed)
            }
        }
    }

    /// PING, for /readyz.
    pub async fn ping(&self) -> bool {
        let Some(mut c) = self.conn().await else {
            return false;
        };
        let r = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut c),
        )
        .await;
        self.record(r).is_some()
    }
}
