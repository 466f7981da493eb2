//! API keys in memory while the change listener is live (`live.rs`), so
//! that neither a live key nor a made-up one costs a database query per
//! request.
//!
//! A key's visible prefix names at most one key (a unique column), so the
//! cache works by prefix:
//!
//! - `live`: the prefixes of every live key, read when the listener
//!   connects and kept by the notifications of creations and revocations.
//!   A token whose prefix is not among them names no key and is refused
//!   without a query: this is the negative cache, and it holds for any
//!   number of distinct made-up keys. Only a small per-replica budget
//!   ([`UNKNOWN_PREFIX_LOOKUPS_PER_SECOND`]) of such tokens is looked up
//!   anyway, for a key created a moment ago whose notification is still on
//!   its way.
//! - `keys`: live keys looked up by prefix, with their hash, for
//!   [`KEY_TTL`]: a token with a cached prefix is accepted or refused in
//!   memory, whatever secret it carries.
//!
//! Every change (a creation, a revocation, a reconnection of the listener,
//! which may have missed changes) bumps a generation; a lookup that raced
//! one is not cached, so a key revoked while the lookup ran is never kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::Scope;

/// How long a looked-up key is trusted from memory. Revocations evict at
/// once through notifications; this bounds how long one could be served
/// if its notification were ever lost, at the price of one query per key
/// per replica per minute.
pub const KEY_TTL: Duration = Duration::from_secs(60);

/// Tokens with a prefix no live key has that a replica still looks up per
/// second (and at once, as a burst). A key created on another replica is
/// known here once its notification arrives, a few milliseconds after it
/// commits; these lookups cover that gap, and bound what a flood of
/// made-up keys costs the database to this many queries a second.
pub const UNKNOWN_PREFIX_LOOKUPS_PER_SECOND: u32 = 10;

/// Keys held before the cache starts over (bounded memory).
const MAX_KEYS: usize = 10_000;

/// A live key as looked up: what a token must hash to, and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    pub id: Uuid,
    pub scope: Scope,
    pub hash: Vec<u8>,
}

impl LiveKey {
    /// Whether a token hashing to `hash` is this key (in constant time).
    pub fn matches(&self, hash: &[u8]) -> bool {
        self.hash.ct_eq(hash).into()
    }
}

/// What the cache can say about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A live key: its id and scope.
    Known(Uuid, Scope),
    /// No live key: refuse without a query.
    Refused,
    /// Ask the database.
    LookUp,
}

#[derive(Default)]
struct Held {
    /// Prefixes of the live keys (exact while listening).
    live: HashSet<String>,
    /// Looked-up keys by prefix, with when.
    keys: HashMap<String, (Instant, LiveKey)>,
}

/// The budget of lookups for unknown prefixes: a token bucket.
struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(UNKNOWN_PREFIX_LOOKUPS_PER_SECOND);
        let elapsed = self
            .at
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + elapsed.as_secs_f64().min(1.0) * rate).min(rate);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct KeyCache {
    held: RwLock<Held>,
    /// True while changes are heard; nothing is served or kept otherwise.
    listening: AtomicBool,
    /// Bumped on every change, so a lookup that raced one is not cached.
    generation: AtomicU64,
    unknown_budget: Mutex<Budget>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            held: RwLock::default(),
            listening: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            unknown_budget: Mutex::new(Budget {
                tokens: 0.0,
                at: None,
            }),
        }
    }
}

impl KeyCache {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether changes are heard, so that what is held can be trusted.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets everything (changes may have been missed); lookups in flight
    /// are not kept either.
    pub fn clear(&self) {
        let mut held = self.write();
        self.bump();
        *held = Held::default();
    }

    /// The live keys' prefixes as read from the database, after
    /// [`KeyCache::clear`] (the notifications heard since are applied
    /// after it, in order).
    pub fn load_live(&self, prefixes: impl IntoIterator<Item = String>) {
        let mut held = self.write();
        self.bump();
        held.live = prefixes.into_iter().collect();
    }

    /// A key with this prefix was created.
    pub fn created(&self, prefix: &str) {
        let mut held = self.write();
        self.bump();
        held.live.insert(prefix.to_owned());
    }

    /// The key `id` was revoked.
    pub fn revoke(&self, id: Uuid) {
        let mut held = self.write();
        self.bump();
        let gone: Vec<String> = held
            .keys
            .iter()
            .filter(|(_, (_, k))| k.id == id)
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            held.keys.remove(&p);
            held.live.remove(&p);
        }
    }

    /// Read before looking a key up in the database, for [`KeyCache::remember`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What memory says of a token with this prefix and hash at `now`.
    pub fn check(&self, prefix: &str, hash: &[u8], now: Instant) -> Check {
        if !self.is_listening() {
            return Check::LookUp;
        }
        let live = {
            let held = self.read();
            if let Some((at, k)) = held.keys.get(prefix) {
                if now.saturating_duration_since(*at) < KEY_TTL {
                    return if k.matches(hash) {
                        Check::Known(k.id, k.scope)
                    } else {
                        Check::Refused
                    };
                }
            }
            held.live.contains(prefix)
        };
        if live {
            return Check::LookUp;
        }
        let budget = self
            .unknown_budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now);
        if budget {
            Check::LookUp
        } else {
            Check::Refused
        }
    }

    /// Keeps what a lookup of `prefix` found (`None`: no live key has it),
    /// unless a change arrived since the lookup started (`generation` read
    /// before it) or changes are not heard.
    pub fn remember(&self, prefix: &str, found: Option<LiveKey>, generation: u64, now: Instant) {
        if !self.is_listening() {
            return;
        }
        let mut held = self.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        match found {
            Some(k) => {
                if held.keys.len() >= MAX_KEYS {
                    held.keys.clear();
                }
                held.live.insert(prefix.to_owned());
                held.keys.insert(prefix.to_owned(), (now, k));
            }
            None => {
                held.live.remove(prefix);
                held.keys.remove(prefix);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hash: &[u8]) -> LiveKey {
        LiveKey {
            id: Uuid::now_v7(),
            scope: Scope::Admin,
            hash: hash.to_vec(),
        }
    }

    fn listening() -> KeyCache {
        let c = KeyCache::default();
        c.set_listening(true);
        c.load_live(["aaaaaaaa".to_owned()]);
        c
    }

    #[test]
    fn a_cached_prefix_answers_any_secret_in_memory_until_its_ttl() {
        let c = listening();
        let now = Instant::now();
        let k = key(b"right");
        assert_eq!(c.check("aaaaaaaa", b"right", now), Check::LookUp);
        c.remember("aaaaaaaa", Some(k.clone()), c.generation(), now);
        assert_eq!(
            c.check("aaaaaaaa", b"right", now),
            Check::Known(k.id, k.scope)
        );
        assert_eq!(c.check("aaaaaaaa", b"wrong", now), Check::Refused);
        // Past its TTL the key is looked up again.
        let later = now + KEY_TTL;
        assert_eq!(c.check("aaaaaaaa", b"right", later), Check::LookUp);
    }

    #[test]
    fn unknown_prefixes_are_refused_past_a_small_budget_of_lookups() {
        let c = listening();
        let now = Instant::now();
        let n = UNKNOWN_PREFIX_LOOKUPS_PER_SECOND as usize;
        let checks: Vec<Check> = (0..n + 5)
            .map(|i| c.check(&format!("{i:08x}"), b"h", now))
            .collect();
        assert_eq!(checks[..n], vec![Check::LookUp; n]);
        assert_eq!(checks[n..], vec![Check::Refused; 5]);
        // The budget comes back with time, up to one second's worth.
        let later = now + Duration::from_millis(500);
        let checks: Vec<Check> = (0..n)
            .map(|i| c.check(&format!("{:08x}", 0xffff_0000u32 + i as u32), b"h", later))
            .collect();
        assert_eq!(checks[..n / 2], vec![Check::LookUp; n / 2]);
        assert_eq!(checks[n / 2..], vec![Check::Refused; n - n / 2]);
        // A live prefix is always looked up.
        assert_eq!(c.check("aaaaaaaa", b"h", later), Check::LookUp);
        // Created elsewhere: heard, then looked up.
        c.created("bbbbbbbb");
        assert_eq!(c.check("bbbbbbbb", b"h", later), Check::LookUp);
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_or_a_reconnection_is_not_kept() {
        let now = Instant::now();
        let k = key(b"h");
        // A revocation heard while the lookup ran.
        let c = listening();
        let g = c.generation();
        c.revoke(k.id);
        c.remember("aaaaaaaa", Some(k.clone()), g, now);
        assert_eq!(c.check("aaaaaaaa", b"h", now), Check::LookUp);
        // The listener reconnected while the lookup ran: the key may have
        // been revoked in between, unheard. The listener clears and reloads
        // the live prefixes; the lookup's answer must not be kept.
        let c = listening();
        let g = c.generation();
        c.clear();
        c.load_live(["aaaaaaaa".to_owned()]);
        c.remember("aaaaaaaa", Some(k.clone()), g, now);
        assert_eq!(c.check("aaaaaaaa", b"h", now), Check::LookUp);
        // Without a change, it is kept; a revocation then evicts it.
        let g = c.generation();
        c.remember("aaaaaaaa", Some(k.clone()), g, now);
        assert_eq!(c.check("aaaaaaaa", b"h", now), Check::Known(k.id, k.scope));
        c.revoke(k.id);
        // Its prefix is no longer live: like any unknown one, looked up
        // within the budget (and found revoked), else refused.
        assert_eq!(c.check("aaaaaaaa", b"h", now), Check::LookUp);
    }

    #[test]
    fn nothing_is_served_or_kept_while_not_listening() {
        let c = KeyCache::default();
        let now = Instant::now();
        let k = key(b"h");
        c.remember("aaaaaaaa", Some(k), c.generation(), now);
        assert_eq!(c.check("aaaaaaaa", b"h", now), Check::LookUp);
        assert_eq!(c.check("cccccccc", b"h", now), Check::LookUp);
    }
}
