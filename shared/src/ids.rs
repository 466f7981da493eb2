//! Identifiers that appear in pixel URLs: parsed once, valid forever after.

use std::fmt;
use std::str::FromStr;

/// Longest id accepted. Ad servers put ids in URLs and in reports; 64 is
/// enough for a UUID with a prefix and keeps rollup keys small.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id is empty")]
    Empty { kind: &'static str },
    #[error("{kind} id is {len} characters long; the limit is {MAX_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error(
        "{kind} id has the character {ch:?} at position {pos}; only A-Z a-z 0-9 . _ - are allowed"
    )]
    BadChar {
        kind: &'static str,
        ch: char,
        pos: usize,
    },
}

fn check(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if let Some((pos, ch)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(IdError::BadChar { kind, ch, pos });
    }
    // All characters are ASCII from here on, so bytes == chars.
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: s.len() });
    }
    Ok(())
}

/// A checked id's bytes, held inline. An id is at most [`MAX_ID_LEN`] ASCII
/// bytes, so it never needs the heap: the edge builds four ids per hit and
/// the loader four per event, and an allocation each cost more than the
/// copy (docs/BENCHMARKS.md, "Edge").
#[derive(Clone, Copy)]
struct InlineId {
    len: u8,
    bytes: [u8; MAX_ID_LEN],
}

impl InlineId {
    /// `s` must have passed `check`: ASCII, and at most `MAX_ID_LEN` bytes.
    fn new(s: &str) -> Self {
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Self {
            len: s.len() as u8,
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Checked ids are ASCII, so this never fails.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

// Equality, order and hash are the string's, as they were when ids were
// `String`s (maps keyed by id, sorted reports).
impl PartialEq for InlineId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for InlineId {}

impl PartialOrd for InlineId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InlineId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for InlineId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Debug for InlineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Deserializes an id of the kind named by the `&str` through its parser.
struct IdVisitor<T>(fn(&str) -> Result<T, IdError>, &'static str);

impl<T> serde::de::Visitor<'_> for IdVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} id", self.1)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(E::custom)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(InlineId);

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// Through the same check as `parse`, from the input's own bytes
        /// (no `String` in between).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(IdVisitor(Self::parse, $kind))
            }
        }

        impl $name {
            /// What this id is called in error messages.
            pub const KIND: &'static str = $kind;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s)?;
                Ok(Self(InlineId::new(s)))
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The id's ASCII bytes, without the UTF-8 check `as_str` makes.
            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.as_str().to_owned()
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

id_type!(
    /// A campaign as named in pixel URLs (`c=`) and in the reporting API.
    CampaignId,
    "campaign"
);
id_type!(
    /// A creative (one ad audio file) within a campaign (`cr=`).
    CreativeId,
    "creative"
);
id_type!(
    /// The episode the ad played in (`ep=`).
    EpisodeId,
    "episode"
);
id_type!(
    /// The show (podcast) the episode belongs to (`sh=`).
    ShowId,
    "show"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_up_to_64_chars() {
        let max = "a".repeat(64);
        for ok in ["c1", "A.b_c-9", max.as_str()] {
            assert_eq!(CampaignId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters_with_a_clear_reason() {
        assert_eq!(
            CampaignId::parse(""),
            Err(IdError::Empty { kind: "campaign" })
        );
        assert_eq!(
            CreativeId::parse(&"x".repeat(65)),
            Err(IdError::TooLong {
                kind: "creative",
                len: 65
            })
        );
        let err = ShowId::parse("a b").unwrap_err();
        assert_eq!(
            err,
            IdError::BadChar {
                kind: "show",
                ch: ' ',
                pos: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "show id has the character ' ' at position 1; only A-Z a-z 0-9 . _ - are allowed"
        );
        assert!(EpisodeId::parse("é").is_err());
    }

    #[test]
    fn inline_ids_compare_sort_and_hash_as_their_strings() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let names = ["ab", "abc", "B", "a", "a-1", "a.1", &"z".repeat(64), "0"];
        let ids: Vec<CampaignId> = names.iter().map(|n| n.parse().unwrap()).collect();
        for (a, x) in names.iter().zip(&ids) {
            assert_eq!(x.as_str(), *a);
            assert_eq!(x.as_bytes(), a.as_bytes());
            assert_eq!(x.to_string(), *a);
            assert_eq!(format!("{x:?}"), format!("CampaignId({a:?})"));
            for (b, y) in names.iter().zip(&ids) {
                assert_eq!(x.cmp(y), a.cmp(b), "{a} vs {b}");
                assert_eq!(x == y, a == b);
                let h = |v: &CampaignId| {
                    let mut s = DefaultHasher::new();
                    v.hash(&mut s);
                    s.finish()
                };
                assert_eq!(h(x) == h(y), a == b, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn deserializing_goes_through_the_same_check() {
        let ok: CampaignId = serde_json::from_str("\"spring-2026\"").unwrap();
        assert_eq!(ok.as_str(), "spring-2026");
        assert!(serde_json::from_str::<CampaignId>("\"no/slash\"").is_err());
        // An escaped string reaches the check unescaped, and the error names it.
        let escaped: CampaignId = serde_json::from_str("\"spr\\u0069ng\"").unwrap();
        assert_eq!(escaped.as_str(), "spring");
        let err = serde_json::from_str::<ShowId>("\"a b\"").unwrap_err();
        assert!(
            err.to_string().starts_with("show id has the character ' '"),
            "{err}"
        );
        assert!(serde_json::from_str::<ShowId>("7").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"spring-2026\"");
    }
}
