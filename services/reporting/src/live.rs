//! In-process caches kept exact by PostgreSQL notifications.
//!
//! The loader and the admin operations `pg_notify('earshot_changes', …)` in
//! the same transaction as their change, so every API replica hears of it
//! the moment it commits:
//!
//! - `v <campaign> <version>`: a load changed a campaign's numbers;
//! - `k <key id>`: a key was revoked;
//! - `p <key prefix>`: a key was created.
//!
//! With that, the common request needs no database round trip: the key's
//! scope (`auth::key_cache`), the campaign's owner and data version are in
//! memory, and still exact (the rendered report too, in `report_cache`,
//! keyed by the data version). If the notification connection drops,
//! notifications may have been missed: every cache here is cleared and
//! bypassed until the listener is back, and a lookup that was in flight
//! across the reconnection is not kept (each cache's generation moves).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::api_key;
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
    /// Bumped whenever notifications may have been missed, so a version
    /// looked up before that is not kept.
    generation: AtomicU64,
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
        metrics::gauge!("earshot_api_change_listener_up").set(if listening { 1.0 } else { 0.0 });
    }

    /// Forgets what may be stale (changes may have been missed), including
    /// what lookups in flight would bring back.
    fn clear(&self) {
        let mut caches = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *caches = Caches::default();
        self.keys.clear();
    }

    /// After the listener (re)connected and before anything is served from
    /// memory again: forget everything, and read the live keys' prefixes
    /// (changes committed after the LISTEN arrive as notifications, which
    /// are applied after this).
    async fn caught_up(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        self.set_listening(false);
        self.clear();
        let prefixes = api_key::live_prefixes(pool).await?;
        self.keys.load_live(prefixes);
        self.set_listening(true);
        Ok(())
    }

    /// Read before looking a version up in the database, for
    /// [`Live::remember_version`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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
            (Some("p"), Some(prefix), None) if api_key::looks_like_a_prefix(prefix) => {
                self.keys.created(prefix)
            }
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
    /// moves the cached version back; one that raced a reconnection of the
    /// listener (`generation` read before it) is not kept.
    pub fn remember_version(&self, campaign: &str, v: i64, generation: u64) {
        if !self.is_listening() {
            return;
        }
        let mut c = self.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
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
            if let Err(e) = live.caught_up(&pool).await {
                tracing::warn!(error = %e, "reading the live keys failed; caches bypassed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => live.apply(n.payload()),
                    // The connection dropped and was re-established: changes
                    // in between are lost, so start over from the database.
                    Ok(None) => {
                        if let Err(e) = live.caught_up(&pool).await {
                            tracing::warn!(error = %e, "reading the live keys failed; caches bypassed until the listener is back");
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener lost; caches bypassed until it is back");
                        break;
                    }
                }
            }
            live.set_listening(false);
            live.clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::key_cache::{Check, LiveKey};
    use crate::auth::Scope;

    fn listening() -> Live {
        let live = Live::default();
        live.set_listening(true);
        live
    }

    #[test]
    fn notifications_update_versions_upward_and_evict_revoked_keys() {
        let live = listening();
        live.remember_version("c1", 3, live.generation());
        live.apply("v c1 5");
        assert_eq!(live.version("c1"), Some(5));
        live.remember_version("c1", 4, live.generation()); // a slow lookup cannot move it back
        assert_eq!(live.version("c1"), Some(5));
        let k = LiveKey {
            id: Uuid::now_v7(),
            scope: Scope::Admin,
            hash: b"h".to_vec(),
        };
        let keys = live.keys();
        let now = std::time::Instant::now();
        live.apply("p 0123abcd");
        keys.remember("0123abcd", Some(k.clone()), keys.generation(), now);
        assert_eq!(
            keys.check("0123abcd", b"h", now),
            Check::Known(k.id, k.scope)
        );
        live.apply(&format!("k {}", k.id));
        assert_ne!(
            keys.check("0123abcd", b"h", now),
            Check::Known(k.id, k.scope)
        );
    }

    #[test]
    fn a_version_looked_up_across_a_reconnection_is_not_kept() {
        let live = listening();
        let g = live.generation();
        // The listener drops and comes back (a load's notification may have
        // been missed meanwhile) while the lookup of version 3 runs.
        live.clear();
        live.remember_version("c1", 3, g);
        assert_eq!(live.version("c1"), None);
        live.remember_version("c1", 4, live.generation());
        assert_eq!(live.version("c1"), Some(4));
    }

    #[test]
    fn nothing_is_served_from_memory_while_not_listening() {
        let live = Live::default();
        live.remember_version("c1", 3, live.generation());
        assert_eq!(live.version("c1"), None);
    }
}
