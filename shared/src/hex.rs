//! Ids that are a fixed number of lower-case hex digits, held inline: the
//! listener id and the edge id. One parse and one serde shape for both.

use std::fmt;

/// `N` lower-case hex digits. Only hex digits get in, so the bytes are
/// always ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    /// `s` when it is exactly `N` lower-case hex digits.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; N] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(Self(bytes))
    }

    /// Digits a lower-case hex encoder wrote (`hex::encode_to_slice`, a
    /// UUID's `encode_lower`): not checked again on the edge's hot path.
    pub(crate) fn encoded(bytes: [u8; N]) -> Self {
        debug_assert!(bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        Self(bytes)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only hex digits get in, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `Serialize` as the digits, `Deserialize` through the type's `parse` (from
/// the input's own bytes, no `String` in between), and `Debug` as
/// `Type(digits)`, for a newtype over [`Hex`] with `parse` and `as_str`.
macro_rules! hex_id_impls {
    ($ty:ident, $expecting:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        $ty::parse(s).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.as_str())
            }
        }
    };
}
pub(crate) use hex_id_impls;

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_n_lower_case_hex_digits_parse() {
        assert_eq!(
            Hex::<4>::parse("09af").map(|h| h.as_str().to_owned()),
            Some("09af".into())
        );
        assert!(Hex::<4>::parse("09AF").is_none());
        assert!(Hex::<4>::parse("09a").is_none());
        assert!(Hex::<4>::parse("09afe").is_none());
        assert!(Hex::<4>::parse("09ag").is_none());
        assert!(Hex::<2>::parse("é").is_none());
        assert_eq!(
            Hex::<4>::encoded(*b"0a1b"),
            Hex::<4>::parse("0a1b").unwrap()
        );
    }
}
