//! Authenticated keys held in memory while the change listener is live
//! (`live.rs`): a revocation's notification evicts its key at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use uuid::Uuid;

use super::Scope;

/// Keys held before the cache starts over (bounded memory).
const MAX_KEYS: usize = 10_000;

/// Key hashes to (key id, scope).
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<Vec<u8>, (Uuid, Scope)>>,
    /// True while revocations are heard; nothing is served or kept otherwise.
    listening: AtomicBool,
    /// Bumped on every revocation, so a lookup that raced one is not cached.
    revocations: AtomicU64,
}

impl KeyCache {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Vec<u8>, (Uuid, Scope)>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether revocations are heard, so that cached keys can be trusted.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Forgets every key (a revocation may have been missed).
    pub fn clear(&self) {
        self.write().clear();
    }

    /// The key `id` was revoked.
    pub fn revoke(&self, id: Uuid) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
        self.write().retain(|_, (k, _)| *k != id);
    }

    /// Read before looking a key up in the database, for [`KeyCache::remember`].
    pub fn revocation_generation(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    pub fn get(&self, hash: &[u8]) -> Option<(Uuid, Scope)> {
        if !self.is_listening() {
            return None;
        }
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .copied()
    }

    /// Caches a key looked up in the database, unless a revocation arrived
    /// since the lookup started (`generation` read before it).
    pub fn remember(&self, hash: Vec<u8>, v: (Uuid, Scope), generation: u64) {
        if !self.is_listening() {
            return;
        }
        let mut keys = self.write();
        if self.revocations.load(Ordering::Acquire) != generation {
            return;
        }
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(hash, v);
    }
}
