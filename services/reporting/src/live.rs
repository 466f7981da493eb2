//! In-process caches kept exact by PostgreSQL notifications.
//!
//! The loader and the admin operations `pg_notify('earshot_changes', …)` in
//! the same transaction as their change, so every API replica hears of it
//! the moment it commits:
//!
//! - `v <campaign> <version>`: a load changed a campaign's numbers;
//! - `k <key id>`: a key was revoked.
//!
//! With that, the common request needs no database round trip: the key's
//! scope, the campaign's owner and data version, and the rendered report are
//! all in memory, and still exact. If the notification connection drops,
//! notifications may have been missed: every cache is cleared and bypassed
//! until the listener is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::admin::Scope;

pub const CHANNEL: &str = "earshot_changes";
/// Entries per cache before it starts over (bounded memory).
const MAX_ENTRIES: usize = 10_000;
/// Bytes of rendered reports kept in process.
const MAX_REPORT_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Caches {
    keys: HashMap<Vec<u8>, (Uuid, Scope)>,
    owners: HashMap<String, Uuid>,
    versions: HashMap<String, i64>,
    reports: HashMap<String, (Instant, CachedReport)>,
    report_bytes: usize,
}

#[derive(Default)]
pub struct Live {
    caches: RwLock<Caches>,
    /// True while the notification listener is connected and caught up.
    listening: AtomicBool,
    /// Bumped on every revocation, so a lookup that raced one is not cached.
    revocations: AtomicU64,
}

impl Live {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Caches> {
        self.caches.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Caches> {
        self.caches.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn clear(&self) {
        *self.write() = Caches::default();
    }

    /// Applies one notification payload.
    pub fn apply(&self, payload: &str) {
        let mut parts = payload.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v"), Some(campaign), Some(v)) => {
                if let Ok(v) = v.parse::<i64>() {
                    let mut c = self.write();
                    let e = c.versions.entry(campaign.to_owned()).or_insert(v);
                    *e = (*e).max(v);
                }
            }
            (Some("k"), Some(id), None) => {
                self.revocations.fetch_add(1, Ordering::AcqRel);
                if let Ok(id) = Uuid::parse_str(id) {
                    self.write().keys.retain(|_, (k, _)| *k != id);
                }
            }
            _ => tracing::warn!(payload, "unknown change notification"),
        }
    }

    pub fn revocation_generation(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    pub fn key(&self, hash: &[u8]) -> Option<(Uuid, Scope)> {
        if !self.is_listening() {
            return None;
        }
        self.read().keys.get(hash).copied()
    }

    /// Caches a key looked up in the database, unless a revocation arrived
    /// since the lookup started (`generation` read before it).
    pub fn remember_key(&self, hash: Vec<u8>, v: (Uuid, Scope), generation: u64) {
        if !self.is_listening() {
            return;
        }
        let mut c = self.write();
        if self.revocations.load(Ordering::Acquire) != generation {
            return;
        }
        if c.keys.len() >= MAX_ENTRIES {
            c.keys.clear();
        }
        c.keys.insert(hash, v);
    }

    pub fn owner(&self, campaign: &str) -> Option<Uuid> {
        self.read().owners.get(campaign).copied()
    }

    /// Campaigns never change owner, so this needs no invalidation.
    pub fn remember_owner(&self, campaign: &str, advertiser: Uuid) {
        let mut c = self.write();
        if c.owners.len() >= MAX_ENTRIES {
            c.owners.clear();
        }
        c.owners.insert(campaign.to_owned(), advertiser);
    }

    pub fn version(&self, campaign: &str) -> Option<i64> {
        if !self.is_listening() {
            return None;
        }
        self.read().versions.get(campaign).copied()
    }

    /// Versions only grow: a lookup that raced a newer notification never
    /// moves the cached version back.
    pub fn remember_version(&self, campaign: &str, v: i64) {
        if !self.is_listening() {
            return;
        }
        let mut c = self.write();
        if c.versions.len() >= MAX_ENTRIES {
            c.versions.clear();
        }
        let e = c.versions.entry(campaign.to_owned()).or_insert(v);
        *e = (*e).max(v);
    }

    pub fn report(&self, key: &str, ttl: Duration) -> Option<CachedReport> {
        let c = self.read();
        let (at, body) = c.reports.get(key)?;
        (at.elapsed() < ttl).then(|| body.clone())
    }

    pub fn remember_report(&self, key: &str, report: CachedReport) {
        let mut c = self.write();
        if c.reports.len() >= MAX_ENTRIES || c.report_bytes + report.len() > MAX_REPORT_BYTES {
            c.reports.clear();
            c.report_bytes = 0;
        }
        c.report_bytes += report.len();
        if let Some((_, old)) = c.reports.insert(key.to_owned(), (Instant::now(), report)) {
            c.report_bytes -= old.len();
        }
    }
}

/// A rendered report as sent, and gzipped once for the clients that accept
/// it: a cached report is served without rendering or compressing again.
#[derive(Clone)]
pub struct CachedReport {
    pub body: Bytes,
    pub gzip: Bytes,
}

impl CachedReport {
    pub fn new(body: Bytes) -> Self {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let gzip = enc
            .write_all(&body)
            .and_then(|()| enc.finish())
            .expect("gzip into memory");
        Self {
            body,
            gzip: Bytes::from(gzip),
        }
    }

    fn len(&self) -> usize {
        self.body.len() + self.gzip.len()
    }
}

/// Listens for change notifications for as long as the process runs.
pub fn spawn_listener(pool: PgPool, live: Arc<Live>) {
    tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "change listener cannot connect; caches bypassed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; caches bypassed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Anything cached before this point may have missed a change.
            live.clear();
            live.listening.store(true, Ordering::Release);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => live.apply(n.payload()),
                    // The connection dropped and was re-established: changes
                    // in between are lost, so start over from the database.
                    Ok(None) => {
                        live.listening.store(false, Ordering::Release);
                        live.clear();
                        live.listening.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener lost; caches bypassed until it is back");
                        live.listening.store(false, Ordering::Release);
                        live.clear();
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_update_versions_upward_and_evict_revoked_keys() {
        let live = Live::default();
        live.listening.store(true, Ordering::Release);
        live.remember_version("c1", 3);
        live.apply("v c1 5");
        assert_eq!(live.version("c1"), Some(5));
        live.remember_version("c1", 4); // a slow lookup cannot move it back
        assert_eq!(live.version("c1"), Some(5));
        let id = Uuid::now_v7();
        let g = live.revocation_generation();
        live.remember_key(b"h".to_vec(), (id, Scope::Admin), g);
        assert_eq!(live.key(b"h"), Some((id, Scope::Admin)));
        live.apply(&format!("k {id}"));
        assert_eq!(live.key(b"h"), None);
        // A lookup that started before the revocation is not cached.
        live.remember_key(b"h".to_vec(), (id, Scope::Admin), g);
        assert_eq!(live.key(b"h"), None);
    }

    #[test]
    fn nothing_is_served_from_memory_while_not_listening() {
        let live = Live::default();
        live.remember_version("c1", 3);
        assert_eq!(live.version("c1"), None);
        live.remember_key(b"h".to_vec(), (Uuid::now_v7(), Scope::Admin), 0);
        assert_eq!(live.key(b"h"), None);
    }
}
