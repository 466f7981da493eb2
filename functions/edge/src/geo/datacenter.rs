//! Data-center networks (IAB Podcast Measurement Technical Guidelines
//! §5.5.2): the compiled-in list (`data/datacenter`, see its LICENSE and
//! VERSION) plus the operator's `EARSHOT_DATACENTER_FILE` of networks and
//! AS numbers. AS numbers are matched through the ASN database
//! `EARSHOT_ASN_DB` names.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{path, Reader};

use super::netlist::{self, NetList};

// BUILTIN_V4 and BUILTIN_V6: the compiled-in list, sorted and merged by
// build.rs.
include!(concat!(env!("OUT_DIR"), "/datacenter_ranges.rs"));

/// Where data-center traffic is recognised.
pub struct Datacenters {
    /// Whether the compiled-in list applies (`EARSHOT_DATACENTER_BUILTIN`).
    builtin: bool,
    operator: NetList,
    /// Present exactly when `operator` lists AS numbers.
    asn_db: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for Datacenters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datacenters")
            .field("builtin", &self.builtin)
            .field("operator_v4", &self.operator.v4.len())
            .field("operator_v6", &self.operator.v6.len())
            .field("operator_asns", &self.operator.asns.len())
            .finish_non_exhaustive()
    }
}

/// Why the operator's files could not be used; the caller names the variable.
#[derive(Debug, thiserror::Error)]
pub enum DatacenterError {
    #[error("EARSHOT_DATACENTER_FILE: {path}: {message}")]
    File { path: String, message: String },
    #[error("EARSHOT_DATACENTER_FILE lists AS numbers, which need an ASN database: set EARSHOT_ASN_DB (a GeoLite2-ASN or DB-IP ASN file)")]
    AsnsWithoutDatabase,
    #[error("EARSHOT_ASN_DB: {path}: {message}")]
    AsnDb { path: String, message: String },
}

impl Datacenters {
    /// The compiled-in list alone.
    pub fn builtin() -> Self {
        Self {
            builtin: true,
            operator: NetList::default(),
            asn_db: None,
        }
    }

    /// The compiled-in list (unless `builtin` is false) and the operator's
    /// file and ASN database, read and checked now.
    pub fn load(
        builtin: bool,
        file: Option<&Path>,
        asn_db: Option<&Path>,
    ) -> Result<Self, DatacenterError> {
        let operator = match file {
            None => NetList::default(),
            Some(p) => {
                let file_err = |message: String| DatacenterError::File {
                    path: p.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(p).map_err(|e| file_err(e.to_string()))?;
                NetList::parse(&text).map_err(|e| file_err(e.to_string()))?
            }
        };
        let asn_db = match (operator.asns.is_empty(), asn_db) {
            (true, _) => None,
            (false, None) => return Err(DatacenterError::AsnsWithoutDatabase),
            (false, Some(p)) => Some(open_asn_db(p).map_err(|message| DatacenterError::AsnDb {
                path: p.display().to_string(),
                message,
            })?),
        };
        Ok(Self {
            builtin,
            operator,
            asn_db,
        })
    }

    /// Networks and AS numbers this holds, for the start-up log:
    /// (compiled-in ranges, operator ranges, operator AS numbers).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let builtin = if self.builtin {
            BUILTIN_V4.len() + BUILTIN_V6.len()
        } else {
            0
        };
        (
            builtin,
            self.operator.v4.len() + self.operator.v6.len(),
            self.operator.asns.len(),
        )
    }

    /// Whether `ip` is in a data-center network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        (self.builtin && netlist::contains(&BUILTIN_V4, &BUILTIN_V6, ip))
            || self.operator.contains(ip)
            || self
                .asn_db
                .as_ref()
                .and_then(|db| asn_of(db, ip))
                .is_some_and(|asn| self.operator.has_asn(asn))
    }
}

/// An ASN database: every MaxMind-format ASN file (GeoLite2-ASN, DB-IP ASN,
/// ip-location-db's) keeps `autonomous_system_number` at the top.
fn open_asn_db(path: &Path) -> Result<Reader<Vec<u8>>, String> {
    let reader = Reader::open_readfile(path).map_err(|e| e.to_string())?;
    let has_asns = reader
        .networks(maxminddb::WithinOptions::default().skip_empty_values())
        .map_err(|e| e.to_string())?
        .take(16)
        .filter_map(Result::ok)
        .any(|r| {
            r.decode_path::<u32>(&path!["autonomous_system_number"])
                .ok()
                .flatten()
                .is_some()
        });
    if !has_asns {
        return Err("its records have no autonomous_system_number: not an ASN database".into());
    }
    Ok(reader)
}

fn asn_of(db: &Reader<Vec<u8>>, ip: IpAddr) -> Option<u32> {
    db.lookup(ip.to_canonical())
        .ok()?
        .decode_path::<u32>(&path!["autonomous_system_number"])
        .ok()
        .flatten()
}
