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

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What this id is called in error messages.
            pub const KIND: &'static str = $kind;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
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
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
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
    fn deserializing_goes_through_the_same_check() {
        let ok: CampaignId = serde_json::from_str("\"spring-2026\"").unwrap();
        assert_eq!(ok.as_str(), "spring-2026");
        assert!(serde_json::from_str::<CampaignId>("\"no/slash\"").is_err());
    }
}
