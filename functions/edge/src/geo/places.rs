//! Country and region of an address, from a MaxMind-format database: the
//! compiled-in country database (`data/geo`, see its LICENSE and VERSION) or
//! the file `EARSHOT_GEO_DB` names (a GeoLite2, GeoIP2 or DB-IP City or
//! Country file; a City file gives regions).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use earshot_domain::{CountryCode, RegionCode};
use maxminddb::{path, Reader, WithinOptions};

/// The compiled-in country database. In the binary, not read from a file:
/// opening it reads only its metadata, and a lookup touches a few pages.
static BUILTIN: &[u8] = include_bytes!("../../data/geo/country.mmdb");

/// The database's bytes: compiled in, or read from a file at start-up.
enum Bytes {
    Builtin(&'static [u8]),
    Loaded(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Builtin(b) => b,
            Bytes::Loaded(b) => b,
        }
    }
}

/// Where a record keeps the country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// GeoIP2 (MaxMind, DB-IP): `country.iso_code`, and
    /// `subdivisions[0].iso_code` in City files.
    GeoIp2,
    /// ip-location-db's country files: a top-level `country_code`.
    CountryCode,
}

/// Where a hit came from, as far as the data knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    pub country: Option<CountryCode>,
    /// Always inside `country`.
    pub region: Option<RegionCode>,
}

/// A country (and region) database, opened once at start-up.
pub struct PlaceDb {
    reader: Reader<Bytes>,
    layout: Layout,
}

impl std::fmt::Debug for PlaceDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaceDb")
            .field("database_type", &self.reader.metadata().database_type)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl PlaceDb {
    /// The compiled-in country database.
    pub fn builtin() -> Result<Self, String> {
        Self::from_bytes(Bytes::Builtin(BUILTIN))
    }

    /// A database file, read whole (a City file is tens of MB: its read is
    /// part of the cold start).
    pub fn open(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        Self::from_bytes(Bytes::Loaded(bytes))
    }

    fn from_bytes(bytes: Bytes) -> Result<Self, String> {
        let reader = Reader::from_source(bytes).map_err(|e| e.to_string())?;
        // The first record with data says which layout the file has.
        let first = reader
            .networks(WithinOptions::default().skip_empty_values())
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("the database holds no record")?
            .map_err(|e| e.to_string())?;
        let keys: BTreeMap<&str, serde::de::IgnoredAny> = first
            .decode()
            .map_err(|e| e.to_string())?
            .ok_or("the database's first record is empty")?;
        let layout = if keys.contains_key("country_code") {
            Layout::CountryCode
        } else if keys.contains_key("country") || keys.contains_key("registered_country") {
            Layout::GeoIp2
        } else {
            return Err(format!(
                "records have neither `country` nor `country_code` (keys: {:?}): not a country or city database",
                keys.keys().collect::<Vec<_>>()
            ));
        };
        Ok(Self { reader, layout })
    }

    /// The database's own name for itself, and when it was built (for the
    /// start-up log).
    pub fn describe(&self) -> String {
        let m = self.reader.metadata();
        let built = time::OffsetDateTime::from_unix_timestamp(m.build_epoch as i64)
            .map(|t| t.date().to_string())
            .unwrap_or_default();
        format!("{} built {built}", m.database_type)
    }

    /// Country and region of `ip`; nothing for a special-purpose address
    /// ([`super::is_special_purpose`]), one the data does not hold, or a
    /// record it cannot read.
    pub fn locate(&self, ip: IpAddr) -> Place {
        if super::is_special_purpose(ip) {
            return Place::default();
        }
        // An IPv4-mapped address is looked up as the IPv4 it maps: the
        // databases keep IPv4 under ::/96, not under ::ffff:0:0/96.
        let Ok(found) = self.reader.lookup(ip.to_canonical()) else {
            return Place::default();
        };
        if !found.has_data() {
            return Place::default();
        }
        let text = |p: &[maxminddb::PathElement<'_>]| -> Option<&str> {
            found.decode_path::<&str>(p).ok().flatten()
        };
        match self.layout {
            Layout::CountryCode => Place {
                country: text(&path!["country_code"]).and_then(CountryCode::parse),
                region: None,
            },
            Layout::GeoIp2 => {
                let country = text(&path!["country", "iso_code"]).and_then(CountryCode::parse);
                let region = country.and_then(|c| {
                    text(&path!["subdivisions", 0, "iso_code"]).and_then(|s| RegionCode::new(c, s))
                });
                Place { country, region }
            }
        }
    }
}
