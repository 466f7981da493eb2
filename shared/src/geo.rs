//! Where a hit came from: the country and, when known, the region (a
//! country's first-level subdivision), as ISO 3166 codes. The edge resolves
//! them from the client's address before the address is hashed; nothing
//! finer than a region is ever recorded.

use std::fmt;

/// The `reason` of a hit from a data-center network (IAB Podcast
/// Measurement Technical Guidelines §5.5.2): verdict `invalid`.
pub const DATACENTER_REASON: &str = "datacenter";

/// An ISO 3166-1 alpha-2 country code, upper case (as CloudFront sends it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two ASCII letters.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters after the hyphen of an ISO 3166-2 code: "one, two or three
/// alphanumeric characters" (ISO 3166-2:2020 §5.2).
pub const MAX_SUBDIVISION_LEN: usize = 3;

/// An ISO 3166-2 subdivision code, upper case: the country's alpha-2 code,
/// a hyphen, and one to three letters or digits (`US-CA`, `GB-ENG`,
/// `FR-75C`). Held inline, like [`CountryCode`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode {
    /// `CC-XXX`, the unused tail zero.
    bytes: [u8; 3 + MAX_SUBDIVISION_LEN],
    len: u8,
}

impl RegionCode {
    /// A subdivision of `country` from its own part of the code (`CA` in
    /// `US-CA`), as MaxMind databases and CloudFront's
    /// `CloudFront-Viewer-Country-Region` give it. `None` unless it is one
    /// to three ASCII letters or digits.
    pub fn new(country: CountryCode, subdivision: &str) -> Option<Self> {
        let sub = subdivision.as_bytes();
        if sub.is_empty()
            || sub.len() > MAX_SUBDIVISION_LEN
            || !sub.iter().all(u8::is_ascii_alphanumeric)
        {
            return None;
        }
        let mut bytes = [0u8; 3 + MAX_SUBDIVISION_LEN];
        bytes[..2].copy_from_slice(country.as_bytes());
        bytes[2] = b'-';
        for (to, from) in bytes[3..].iter_mut().zip(sub) {
            *to = from.to_ascii_uppercase();
        }
        Some(Self {
            bytes,
            len: (3 + sub.len()) as u8,
        })
    }

    /// A whole code, `US-CA`; `None` unless it has that shape.
    pub fn parse(s: &str) -> Option<Self> {
        let (country, sub) = s.split_once('-')?;
        Self::new(CountryCode::parse(country)?, sub)
    }

    /// The country the region is in.
    pub fn country(&self) -> CountryCode {
        CountryCode([self.bytes[0], self.bytes[1]])
    }

    pub fn as_str(&self) -> &str {
        // ASCII letters, digits and a hyphen by construction.
        std::str::from_utf8(self.as_bytes()).unwrap_or("??")
    }

    /// The code's ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.as_str())
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes_are_a_country_a_hyphen_and_one_to_three_alphanumerics() {
        let us = CountryCode::parse("us").unwrap();
        assert_eq!(RegionCode::new(us, "ca").unwrap().as_str(), "US-CA");
        assert_eq!(RegionCode::parse("gb-eng").unwrap().as_str(), "GB-ENG");
        assert_eq!(RegionCode::parse("FR-75C").unwrap().as_str(), "FR-75C");
        assert_eq!(
            RegionCode::parse("FR-75C").unwrap().country().as_str(),
            "FR"
        );
        for bad in [
            "", "US", "US-", "US-CALI", "USA-CA", "U-CA", "US-C A", "US-é", "US_CA",
        ] {
            assert_eq!(RegionCode::parse(bad), None, "{bad:?}");
        }
        assert_eq!(RegionCode::new(us, ""), None);
        assert_eq!(RegionCode::new(us, "1234"), None);
    }
}
