//! Per-key rate limits: fixed one-minute windows, shared by every replica
//! through Redis when it answers (`redis_store.rs`), and counted by each
//! replica on its own when it does not (no `REDIS_URL`, or Redis down or
//! slow). The limiter fails closed: without Redis a key still gets at most
//! its limit per minute from each replica, so R replicas admit at most R
//! times the limit, never everything.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::redis_store::RedisStore;

/// What the rate limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Allowed,
    /// Over the limit; retry after this many seconds.
    Exceeded {
        retry_after: u64,
    },
}

/// Subjects counted locally before those of past windows are dropped. Only
/// authenticated keys reach the limiter, so the current window holds at most
/// one entry per live key.
const MAX_LOCAL_SUBJECTS: usize = 10_000;

/// Requests counted in this replica: subject → (window, requests).
#[derive(Default)]
struct LocalWindows(Mutex<HashMap<String, (u64, u32)>>);

impl LocalWindows {
    fn take(&self, subject: &str, per_minute: u32, now_unix: u64) -> Limit {
        let window = now_unix / 60;
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= MAX_LOCAL_SUBJECTS {
            counts.retain(|_, (w, _)| *w >= window);
        }
        let entry = counts.entry(subject.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= per_minute {
            return Limit::Exceeded {
                retry_after: (window + 1) * 60 - now_unix,
            };
        }
        entry.1 += 1;
        Limit::Allowed
    }
}

/// The per-key limiter of one replica.
pub struct RateLimiter {
    redis: RedisStore,
    local: LocalWindows,
}

impl RateLimiter {
    pub fn new(redis: RedisStore) -> Self {
        Self {
            redis,
            local: LocalWindows::default(),
        }
    }

    /// Counts one request for `subject` in the current minute: in Redis
    /// when it answers, else in this replica.
    pub async fn check(&self, subject: &str, per_minute: u32, now_unix: u64) -> Limit {
        match self.redis.rate_limit(subject, per_minute, now_unix).await {
            Some(limit) => limit,
            None => {
                metrics::counter!("earshot_api_rate_limit_local_total").increment(1);
                self.local.take(subject, per_minute, now_unix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_window_admits_the_limit_then_refuses_until_the_next_minute() {
        let w = LocalWindows::default();
        let t = 60 * 1_000 + 15;
        let got: Vec<Limit> = (0..4).map(|_| w.take("k", 3, t)).collect();
        assert_eq!(
            got,
            vec![
                Limit::Allowed,
                Limit::Allowed,
                Limit::Allowed,
                Limit::Exceeded { retry_after: 45 }
            ]
        );
        assert_eq!(w.take("other", 3, t), Limit::Allowed, "per subject");
        assert_eq!(w.take("k", 3, t + 45), Limit::Allowed, "a new window");
    }
}
