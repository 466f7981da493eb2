//! Signed tracking URLs.
//!
//! The ad server signs the static part of each pixel URL so that hits for
//! campaigns, creatives or events it never served are recognized as forged.
//!
//! ```text
//! canonical = join("&", ["c=" + c, "cr=" + cr, "ep=" + ep, "sh=" + sh, "pos=" + pos, "ev=" + ev])
//!             keeping only the parameters present with a non-empty value, in
//!             exactly this order, using the decoded (not percent-encoded) values
//! sig       = base64url_nopad(HMAC-SHA256(secret_of(k), canonical))[0..22]
//! ```
//!
//! `k` names the key, so several keys can be active at once during rotation.
//! `err` and `cb` are not signed: players fill them with macros
//! (`[ERRORCODE]`, `[CACHEBUSTING]`). Verification compares in constant time.
//! `docs/SIGNING.md` has a worked example an ad server can test against.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Characters of base64url kept: 22 characters carry 132 bits, far beyond
/// guessing at pixel request rates, and keep URLs short.
pub const SIGNATURE_LEN: usize = 22;
/// Key ids appear in every URL; short and URL-safe.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Secrets shorter than this are refused (128 bits of a random string).
pub const MIN_SIGNING_SECRET_LEN: usize = 16;

/// The name of a signing key (`k=`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= MAX_KEY_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key: its id and its secret (never printed).
#[derive(Clone)]
pub struct SigningKey {
    id: KeyId,
    mac: HmacSha256,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}:<redacted>)", self.id)
    }
}

impl SigningKey {
    pub fn new(id: KeyId, secret: &[u8]) -> Self {
        Self {
            id,
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The signature of a canonical string.
    pub fn sign(&self, canonical: &str) -> String {
        let full = self.full_signature(canonical);
        String::from_utf8_lossy(&full[..SIGNATURE_LEN]).into_owned()
    }

    /// All 43 base64url characters of the HMAC, on the stack (verification
    /// runs on every hit).
    fn full_signature(&self, canonical: &str) -> [u8; 43] {
        self.full_signature_with(|mac| mac.update(canonical.as_bytes()))
    }

    /// The same, over what `feed` writes into the HMAC: the canonical
    /// string's pieces go in one by one, never joined into a `String`.
    fn full_signature_with(&self, feed: impl FnOnce(&mut HmacSha256)) -> [u8; 43] {
        let mut mac = self.mac.clone();
        feed(&mut mac);
        let mut out = [0u8; 43];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(mac.finalize().into_bytes(), &mut out)
            .expect("32 bytes encode to 43 characters");
        debug_assert_eq!(n, 43);
        out
    }
}

/// Why `EARSHOT_SIGNING_KEYS` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("signing keys: entry {0} is not `id:secret`")]
    NotAPair(usize),
    #[error(
        "signing keys: entry {0} has a key id that is not 1-{MAX_KEY_ID_LEN} of A-Z a-z 0-9 _ -"
    )]
    BadId(usize),
    #[error(
        "signing keys: key {0:?} has a secret shorter than {MIN_SIGNING_SECRET_LEN} characters"
    )]
    WeakSecret(String),
    #[error("signing keys: key id {0:?} appears twice")]
    Duplicate(String),
}

/// The active keys, oldest first; the last one is the newest and is the one
/// new URLs are signed with.
#[derive(Clone, Debug, Default)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

/// Why a hit's signature was not accepted. The string forms are the
/// `reason` values on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing_signature")]
    Missing,
    #[error("missing_key_id")]
    MissingKeyId,
    #[error("unknown_key")]
    UnknownKey,
    #[error("bad_signature")]
    Bad,
}

impl SignatureError {
    /// The `reason` on the wire (the `Display` form, without formatting).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::MissingKeyId => "missing_key_id",
            Self::UnknownKey => "unknown_key",
            Self::Bad => "bad_signature",
        }
    }
}

impl SigningKeys {
    /// Parses `id:secret,id2:secret2` (whitespace around entries ignored).
    /// An empty string gives no keys.
    pub fn parse(spec: &str) -> Result<Self, KeysError> {
        let mut keys: Vec<SigningKey> = Vec::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (id, secret) = entry.split_once(':').ok_or(KeysError::NotAPair(i + 1))?;
            let id = KeyId::parse(id.trim()).ok_or(KeysError::BadId(i + 1))?;
            if secret.len() < MIN_SIGNING_SECRET_LEN {
                return Err(KeysError::WeakSecret(id.0));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeysError::Duplicate(id.0));
            }
            keys.push(SigningKey::new(id, secret.as_bytes()));
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// The key new URLs are signed with: the last one listed.
    pub fn newest(&self) -> Option<&SigningKey> {
        self.keys.last()
    }

    /// Checks `sig` against the key named `key_id` over `canonical`.
    pub fn verify(
        &self,
        key_id: Option<&str>,
        sig: Option<&str>,
        canonical: &str,
    ) -> Result<(), SignatureError> {
        self.verify_with(key_id, sig, |key| key.full_signature(canonical))
    }

    /// Checks `sig` against the key named `key_id` over `fields`' canonical
    /// string, as [`verify`](Self::verify) does, without building it.
    pub fn verify_fields(
        &self,
        key_id: Option<&str>,
        sig: Option<&str>,
        fields: &SignedFields<'_>,
    ) -> Result<(), SignatureError> {
        self.verify_with(key_id, sig, |key| {
            key.full_signature_with(|mac| fields.feed(mac))
        })
    }

    fn verify_with(
        &self,
        key_id: Option<&str>,
        sig: Option<&str>,
        full_signature: impl FnOnce(&SigningKey) -> [u8; 43],
    ) -> Result<(), SignatureError> {
        let sig = sig
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::Missing)?;
        let key_id = key_id
            .filter(|s| !s.is_empty())
            .ok_or(SignatureError::MissingKeyId)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id.0 == key_id)
            .ok_or(SignatureError::UnknownKey)?;
        let full = full_signature(key);
        let expected = &full[..SIGNATURE_LEN];
        // Length is public (always SIGNATURE_LEN); the bytes are compared in
        // constant time so timing does not reveal a correct prefix.
        if sig.len() == expected.len() && bool::from(sig.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(SignatureError::Bad)
        }
    }
}

/// The signed parameters of a pixel URL, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignedFields<'a> {
    pub c: Option<&'a str>,
    pub cr: Option<&'a str>,
    pub ep: Option<&'a str>,
    pub sh: Option<&'a str>,
    pub pos: Option<&'a str>,
    pub ev: Option<&'a str>,
}

impl SignedFields<'_> {
    /// The canonical string the signature covers (see the module docs).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(128);
        for (name, value) in self.pairs() {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(value);
        }
        out
    }

    /// Writes the canonical string into `mac`, piece by piece.
    fn feed(&self, mac: &mut HmacSha256) {
        for (i, (name, value)) in self.pairs().enumerate() {
            if i > 0 {
                mac.update(b"&");
            }
            mac.update(name.as_bytes());
            mac.update(b"=");
            mac.update(value.as_bytes());
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("c", self.c),
            ("cr", self.cr),
            ("ep", self.ep),
            ("sh", self.sh),
            ("pos", self.pos),
            ("ev", self.ev),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.filter(|v| !v.is_empty()).map(|v| (n, v)))
    }

    /// A complete pixel URL: `base` + `?` + the fields, `k`, `sig`, and the
    /// unsigned VAST macros `err=[ERRORCODE]` (error events) and
    /// `cb=[CACHEBUSTING]` that players fill in.
    pub fn tracking_url(&self, base: &str, key: &SigningKey) -> String {
        self.url(base, Some(key))
    }

    /// The same URL without `k` and `sig`, for an edge that does not
    /// require signatures.
    pub fn unsigned_url(&self, base: &str) -> String {
        self.url(base, None)
    }

    fn url(&self, base: &str, key: Option<&SigningKey>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.pairs() {
            q.append_pair(name, value);
        }
        if let Some(key) = key {
            q.append_pair("k", key.id.as_str());
            q.append_pair("sig", &key.sign(&self.canonical()));
        }
        let mut url = format!("{}?{}", base, q.finish());
        if self.ev.is_some_and(|e| e.eq_ignore_ascii_case("error")) {
            url.push_str("&err=[ERRORCODE]");
        }
        url.push_str("&cb=[CACHEBUSTING]");
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SignedFields<'static> {
        SignedFields {
            c: Some("spring-sale"),
            cr: Some("cr_30s"),
            ep: Some("ep 101"),
            sh: None,
            pos: Some("mid"),
            ev: Some("impression"),
        }
    }

    #[test]
    fn canonical_keeps_order_skips_absent_and_uses_decoded_values() {
        assert_eq!(
            fields().canonical(),
            "c=spring-sale&cr=cr_30s&ep=ep 101&pos=mid&ev=impression"
        );
        let empty_ep = SignedFields {
            ep: Some(""),
            ..fields()
        };
        assert_eq!(
            empty_ep.canonical(),
            "c=spring-sale&cr=cr_30s&pos=mid&ev=impression"
        );
    }

    #[test]
    fn known_vector_pins_the_scheme() {
        // Python: base64.urlsafe_b64encode(hmac.new(b"k1-secret-0123456789",
        //   b"c=spring-sale&cr=cr_30s&ep=ep 101&pos=mid&ev=impression", sha256).digest()).rstrip(b"=")[:22]
        let keys = SigningKeys::parse("k1:k1-secret-0123456789").unwrap();
        let sig = keys.newest().unwrap().sign(&fields().canonical());
        assert_eq!(sig, include_str!("../testdata/signature_vector.txt"));
    }

    #[test]
    fn verify_accepts_any_active_key_and_names_each_failure() {
        let keys =
            SigningKeys::parse("old:old-secret-0123456789, new:new-secret-0123456789").unwrap();
        let canonical = fields().canonical();
        let old_sig = SigningKeys::parse("old:old-secret-0123456789")
            .unwrap()
            .newest()
            .unwrap()
            .sign(&canonical);
        assert_eq!(keys.newest().unwrap().id().as_str(), "new");
        assert_eq!(keys.verify(Some("old"), Some(&old_sig), &canonical), Ok(()));
        assert_eq!(
            keys.verify(Some("new"), Some(&old_sig), &canonical),
            Err(SignatureError::Bad)
        );
        assert_eq!(
            keys.verify(Some("gone"), Some(&old_sig), &canonical),
            Err(SignatureError::UnknownKey)
        );
        assert_eq!(
            keys.verify(None, Some(&old_sig), &canonical),
            Err(SignatureError::MissingKeyId)
        );
        assert_eq!(
            keys.verify(Some("old"), None, &canonical),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            keys.verify(Some("old"), Some(&old_sig[..21]), &canonical),
            Err(SignatureError::Bad)
        );
        let tampered = canonical.replace("cr_30s", "cr_60s");
        assert_eq!(
            keys.verify(Some("old"), Some(&old_sig), &tampered),
            Err(SignatureError::Bad)
        );
    }

    #[test]
    fn verifying_fields_streamed_equals_verifying_their_canonical_string() {
        let keys = SigningKeys::parse("k1:k1-secret-0123456789").unwrap();
        let key = keys.newest().unwrap();
        let full = fields();
        let sparse = SignedFields {
            c: Some("c1"),
            cr: Some(""),
            ev: Some("start"),
            ..SignedFields::default()
        };
        let nothing = SignedFields::default();
        for f in [full, sparse, nothing] {
            let canonical = f.canonical();
            let right = key.sign(&canonical);
            let wrong = key.sign(&format!("{canonical}x"));
            for sig in [&right, &wrong] {
                assert_eq!(
                    keys.verify_fields(Some("k1"), Some(sig), &f),
                    keys.verify(Some("k1"), Some(sig), &canonical),
                    "{canonical:?}"
                );
            }
            assert_eq!(keys.verify_fields(Some("k1"), Some(&right), &f), Ok(()));
        }
    }

    #[test]
    fn key_spec_errors_are_specific() {
        assert_eq!(
            SigningKeys::parse("nocolon").unwrap_err(),
            KeysError::NotAPair(1)
        );
        assert_eq!(
            SigningKeys::parse("a:0123456789abcdef,b c:0123456789abcdef").unwrap_err(),
            KeysError::BadId(2)
        );
        assert_eq!(
            SigningKeys::parse("a:short").unwrap_err(),
            KeysError::WeakSecret("a".into())
        );
        assert_eq!(
            SigningKeys::parse("a:0123456789abcdef,a:0123456789abcdeg").unwrap_err(),
            KeysError::Duplicate("a".into())
        );
        assert!(SigningKeys::parse("").unwrap().is_empty());
        let keys = SigningKeys::parse("a:0123456789abcdef").unwrap();
        assert_eq!(
            format!("{:?}", keys.newest().unwrap()),
            "SigningKey(a:<redacted>)"
        );
    }

    #[test]
    fn tracking_url_round_trips_through_the_query_parser() {
        let keys = SigningKeys::parse("k1:k1-secret-0123456789").unwrap();
        let url = fields().tracking_url("https://px.example/v1/t", keys.newest().unwrap());
        assert!(url.starts_with("https://px.example/v1/t?c=spring-sale&cr=cr_30s&ep=ep+101&pos=mid&ev=impression&k=k1&sig="), "{url}");
        assert!(url.ends_with("&cb=[CACHEBUSTING]"));
        let query = url.split_once('?').unwrap().1;
        let p = crate::pixel::PixelParams::parse(query);
        assert_eq!(p.signed_fields(), fields());
        assert_eq!(
            keys.verify(
                p.k.as_deref(),
                p.sig.as_deref(),
                &p.signed_fields().canonical()
            ),
            Ok(())
        );
    }
}
