//! What the client's address says before it is hashed: the country and
//! region the hit came from, and whether it came from a data-center network.
//! Both are looked up in memory, per hit; the address itself is never kept.

pub mod datacenter;
pub mod netlist;
pub mod places;

pub use datacenter::{DatacenterError, Datacenters};
pub use places::{Place, PlaceDb};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::GeoConfig;

/// The edge's geography and data-center data, loaded once at start-up.
#[derive(Debug)]
pub struct Geo {
    pub places: PlaceDb,
    pub datacenters: Datacenters,
}

/// Why the data could not be loaded, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("EARSHOT_GEO_DB: {path}: {message}")]
    GeoDb { path: String, message: String },
    #[error("the compiled-in country database does not open: {0}")]
    Builtin(String),
    #[error(transparent)]
    Datacenter(#[from] DatacenterError),
}

impl Geo {
    /// The compiled-in data alone: the country database and the data-center
    /// list.
    pub fn builtin() -> Self {
        Self {
            places: PlaceDb::builtin().expect("the compiled-in country database opens"),
            datacenters: Datacenters::builtin(),
        }
    }

    /// The data `cfg` names, read and checked now.
    pub fn load(cfg: &GeoConfig) -> Result<Self, GeoError> {
        let places = match &cfg.db {
            None => PlaceDb::builtin().map_err(GeoError::Builtin)?,
            Some(p) => PlaceDb::open(p).map_err(|message| GeoError::GeoDb {
                path: p.display().to_string(),
                message,
            })?,
        };
        let datacenters = Datacenters::load(
            cfg.builtin_datacenters,
            cfg.datacenter_file.as_deref(),
            cfg.asn_db.as_deref(),
        )?;
        Ok(Self {
            places,
            datacenters,
        })
    }
}

/// Whether `ip` is a special-purpose address (IANA's registries, RFC 6890
/// and its updates): private, shared, loopback, link-local, documentation,
/// benchmarking, multicast, reserved. None is a listener's place on the
/// Internet, yet registry-derived databases give some of them a country
/// (the documentation range 203.0.113.0/24 comes back AU), so none is
/// looked up.
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => v4_special(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4_special(v4),
            None => v6_special(a),
        },
    }
}

fn v4_special(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    a.is_unspecified()
        || a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_documentation()
        || a.is_multicast()
        || a.is_broadcast()
        || o0 == 0 // 0.0.0.0/8, "this network"
        || (o0 == 100 && (o1 & 0xc0) == 64) // 100.64.0.0/10, shared (CGN)
        || (o0 == 192 && o1 == 0 && o2 == 0) // 192.0.0.0/24, IETF protocol assignments
        || (o0 == 198 && (o1 & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o0 >= 240 // 240.0.0.0/4, reserved
}

fn v6_special(a: Ipv6Addr) -> bool {
    let s = a.segments();
    a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_unique_local()
        || a.is_unicast_link_local()
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32, documentation
        || (s[0] & 0xfff0) == 0x3ff0 // 3fff::/20, documentation (RFC 9637)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // 100::/64, discard
}

#[cfg(test)]
mod tests;
