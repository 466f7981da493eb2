//! API keys: random, shown once, stored as a SHA-256 hash, told apart by a
//! visible prefix; and their lookup by hash.
//!
//! Format: `esk_<prefix>_<secret>` where prefix is 8 lowercase hex chars and
//! secret is 32 random bytes in base64url (43 chars).

use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::key_cache::LiveKey;
use super::Scope;

/// Random bytes in a key's secret part (256 bits).
pub const KEY_SECRET_BYTES: usize = 32;

/// A new key: the full text (shown once) and what is stored.
pub struct NewKey {
    pub full: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub fn generate() -> NewKey {
    let mut secret = [0u8; KEY_SECRET_BYTES];
    let mut p = [0u8; 4];
    getrandom::fill(&mut secret).expect("the OS random source works");
    getrandom::fill(&mut p).expect("the OS random source works");
    let prefix = hex::encode(p);
    let full = format!(
        "esk_{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    NewKey {
        hash: hash(&full),
        prefix,
        full,
    }
}

pub fn hash(full: &str) -> Vec<u8> {
    Sha256::digest(full.as_bytes()).to_vec()
}

/// Cheap shape check before touching the database: the length, `esk_`, and
/// a prefix that [`looks_like_a_prefix`].
pub fn looks_like_a_key(s: &str) -> bool {
    s.len() == 4 + 8 + 1 + 43
        && s.is_ascii()
        && s.starts_with("esk_")
        && s.as_bytes()[12] == b'_'
        && looks_like_a_prefix(&s[4..12])
}

/// The visible prefix of a token that [`looks_like_a_key`].
pub fn prefix_of(key: &str) -> &str {
    &key[4..12]
}

/// Is `s` shaped like a key's visible prefix (8 lowercase hex chars)?
/// Anything else cannot name a key, so it is not looked up (a NUL in a path
/// segment would make PostgreSQL refuse the query).
pub fn looks_like_a_prefix(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The live key with this prefix (prefixes are unique), with its hash: a
/// token is that key if it hashes to it ([`LiveKey::matches`]). Looked up
/// whenever the key cache cannot answer.
pub async fn live_key(pool: &PgPool, prefix: &str) -> Result<Option<LiveKey>, sqlx::Error> {
    let row: Option<(Uuid, Vec<u8>, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT id, hash, scope, advertiser_id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, hash, scope, adv)| {
        let scope = match (scope.as_str(), adv) {
            ("admin", None) => Scope::Admin,
            ("advertiser", Some(a)) => Scope::Advertiser(a),
            _ => return None,
        };
        Some(LiveKey { id, scope, hash })
    }))
}

/// The prefixes of every live key, for the key cache's negative side.
pub async fn live_prefixes(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT prefix FROM api_keys WHERE revoked_at IS NULL")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_well_formed_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a.full, b.full);
        assert!(looks_like_a_key(&a.full), "{}", a.full);
        assert!(a.full.starts_with(&format!("esk_{}_", a.prefix)));
        assert_eq!(a.hash, hash(&a.full));
        assert_eq!(a.hash.len(), 32);
        assert!(!looks_like_a_key("esk_short"));
        let upper = format!("esk_DEADBEEF_{}", "A".repeat(43));
        assert!(!looks_like_a_key(&upper), "the prefix is lowercase hex");
        let non_ascii = format!("esk_deadbeef_{}\u{e9}", "A".repeat(41));
        assert!(!looks_like_a_key(&non_ascii));
        assert_eq!(prefix_of(&a.full), a.prefix);
        assert!(looks_like_a_prefix(&a.prefix), "{}", a.prefix);
    }

    #[test]
    fn only_eight_lowercase_hex_chars_are_a_prefix() {
        for ok in ["deadbeef", "00000000", "0a1b2c3d"] {
            assert!(looks_like_a_prefix(ok), "{ok}");
        }
        for bad in [
            "DEADBEEF",
            "deadbee",
            "deadbeef0",
            "deadbeeg",
            "dead\0eef",
            "",
        ] {
            assert!(!looks_like_a_prefix(bad), "{bad:?}");
        }
    }
}
