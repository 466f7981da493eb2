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
//! scope (`auth::key_cache`), the campaign's owner and data version are in
//! memory, and still exact (the rendered report too, in `report_cache`,
//! keyed by the data version). If the notification connection drops,
//! notifications may have been missed: every cache here is cleared and
//! bypassed until the listener is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::key_cache::KeyCache;

pub const CHANNEL: &str = "earshot_changes";
/// Entries per cache before it starts over (bounded memory).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
struct Caches {
    owners: HashMap<String, Uuid>,
    versions: HashMap<String, i64>,
}

#[derive(Default)]
pub struct Live {
    caches: RwLock<Caches>,
    /// True while the notification listener is connected and caught up.
    listening: AtomicBool,
    /// Authenticated keys, evicted by revocations.
    keys: Arc<KeyCache>,
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

    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        self.keys.set_listening(listening);
    }

    fn clear(&self) {
        *self.write() = Caches::default();
        self.keys.clear();
    }

    /// The key cache these notifications keep exact.
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
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
            (Some("k"), Some(id), None) => match Uuid::parse_str(id) {
                Ok(id) => self.keys.revoke(id),
                Err(_) => tracing::warn!(payload, "unknown change notification"),
            },
            _ => tracing::warn!(payload, "unknown change notification"),
        }
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
            live.set_listening(true);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => live.apply(n.payload()),
                    // The connection dropped and was re-established: changes
                    // in between are lost, so start over from the database.
                    Ok(None) => {
                        live.set_listening(false);
                        live.clear();
                        live.set_listening(true);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener lost; caches bypassed until it is back");
                        live.set_listening(false);
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
    use crate::auth::Scope;

    #[test]
    fn notifications_update_versions_upward_and_evict_revoked_keys() {
        let live = Live::default();
        live.set_listening(true);
        live.remember_version("c1", 3);
        live.apply("v c1 5");
        assert_eq!(live.version("c1"), Some(5));
        live.remember_version("c1", 4); // a slow lookup cannot move it back
        assert_eq!(live.version("c1"), Some(5));
        let id = Uuid::now_v7();
        let keys = live.keys();
        let g = keys.revocation_generation();
        keys.remember(b"h".to_vec(), (id, Scope::Admin), g);
        assert_eq!(keys.get(b"h"), Some((id, Scope::Admin)));
        live.apply(&format!("k {id}"));
        assert_eq!(keys.get(b"h"), None);
        // A lookup that started before the revocation is not cached.
        keys.remember(b"h".to_vec(), (id, Scope::Admin), g);
        assert_eq!(keys.get(b"h"), None);
    }

    #[test]
    fn nothing_is_served_from_memory_while_not_listening() {
        let live = Live::default();
        live.remember_version("c1", 3);
        assert_eq!(live.version("c1"), None);
        live.keys()
            .remember(b"h".to_vec(), (Uuid::now_v7(), Scope::Admin), 0);
        assert_eq!(live.keys().get(b"h"), None);
    }
}
