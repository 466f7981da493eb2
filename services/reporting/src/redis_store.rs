//! Redis for the report cache and the per-key rate limits. Optional, and
//! never a reason for a 5xx: every call has a short timeout, and when Redis
//! is down the API answers from PostgreSQL (uncached, unlimited) and
//! `/readyz` says `degraded`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::RwLock;

/// A Redis call that takes longer than this is treated as Redis being down:
/// a cache that slows requests down is worse than none.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Reconnection attempts are at least this far apart while Redis is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Fixed-window counter: increments and sets the expiry atomically.
const RATE_LIMIT_LUA: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n";

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
}

/// What the rate limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Allowed,
    /// Over the limit; retry after this many seconds.
    Exceeded {
        retry_after: u64,
    },
    /// Redis is not available: requests are not limited meanwhile.
    Unknown,
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

    /// Counts one request for `subject` in the current minute.
    pub async fn rate_limit(&self, subject: &str, per_minute: u32, now_unix: u64) -> Limit {
        let Some(inner) = self.inner.as_ref() else {
            return Limit::Unknown;
        };
        let Some(mut c) = self.conn().await else {
            return Limit::Unknown;
        };
        let window = now_unix / 60;
        let key = format!("earshot:rl:{subject}:{window}");
        let r = tokio::time::timeout(
            REDIS_TIMEOUT,
            inner.script.key(&key).arg(61).invoke_async::<u64>(&mut c),
        )
        .await;
        match self.record(r) {
            Some(n) if n > per_minute as u64 => Limit::Exceeded {
                retry_after: (window + 1) * 60 - now_unix,
            },
            Some(_) => Limit::Allowed,
            None => Limit::Unknown,
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
