use std::net::IpAddr;

use earshot_testkit::mmdb::{self, asn_record, city_record};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn place_of(db: &PlaceDb, addr: &str) -> (Option<String>, Option<String>) {
    let p = db.locate(ip(addr));
    (
        p.country.map(|c| c.as_str().to_owned()),
        p.region.map(|r| r.as_str().to_owned()),
    )
}

/// Addresses of the regional Internet registries' own networks, with the
/// country the compiled-in database (data/geo/VERSION) gives each. A refresh
/// that moves one fails here: check the change upstream, then update.
pub(crate) const REGISTRY_ADDRESSES: [(&str, &str); 6] = [
    ("193.0.6.139", "NL"),               // RIPE NCC
    ("2001:67c:2e8:22::c100:68b", "NL"), // RIPE NCC, IPv6
    ("202.12.29.205", "AU"),             // APNIC
    ("200.3.14.10", "UY"),               // LACNIC
    ("192.136.136.1", "US"),             // ARIN
    ("::ffff:193.0.6.139", "NL"),        // IPv4-mapped: as the IPv4 it maps
];

#[test]
fn the_compiled_in_database_places_the_registries_networks() {
    let db = PlaceDb::builtin().unwrap();
    for (addr, country) in REGISTRY_ADDRESSES {
        assert_eq!(place_of(&db, addr), (Some(country.into()), None), "{addr}");
    }
    assert!(
        db.describe().starts_with("country ipvAll built "),
        "{}",
        db.describe()
    );
}

#[test]
fn special_purpose_and_unknown_addresses_have_no_place() {
    let db = PlaceDb::builtin().unwrap();
    // The database itself answers AU for 203.0.113.7 and JP for 2001:db8::1
    // (registry data about documentation ranges): never asked.
    for addr in [
        "10.1.2.3",
        "127.0.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "192.0.2.1",
        "198.51.100.9",
        "203.0.113.7",
        "198.18.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "::",
        "::1",
        "fe80::1",
        "fd00::1",
        "2001:db8::1",
        "3fff::1",
        "ff02::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(is_special_purpose(ip(addr)), "{addr}");
        assert_eq!(place_of(&db, addr), (None, None), "{addr}");
    }
    for addr in [
        "193.0.6.139",
        "100.128.0.1",
        "198.20.0.1",
        "2001:67c::1",
        "64:ff9b::1",
    ] {
        assert!(!is_special_purpose(ip(addr)), "{addr}");
    }
}

fn city_db(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("city.mmdb");
    mmdb::write(
        &path,
        "GeoLite2-City",
        &[
            (ip("81.2.69.0"), 24, city_record("GB", Some("ENG"))),
            (ip("89.160.20.0"), 24, city_record("SE", Some("E"))),
            (ip("2a02:cf40::"), 29, city_record("US", Some("ca"))),
            (ip("193.0.6.0"), 24, city_record("NL", None)),
            // A subdivision code that is not ISO 3166-2 is no region.
            (ip("1.2.3.0"), 24, city_record("JP", Some("TOKYO"))),
        ],
    )
    .unwrap();
    path
}

#[test]
fn a_city_database_adds_regions() {
    let dir = tempfile::tempdir().unwrap();
    let db = PlaceDb::open(&city_db(dir.path())).unwrap();
    for (addr, country, region) in [
        ("81.2.69.142", Some("GB"), Some("GB-ENG")),
        ("89.160.20.112", Some("SE"), Some("SE-E")),
        ("2a02:cf40:1::7", Some("US"), Some("US-CA")),
        ("193.0.6.139", Some("NL"), None),
        ("1.2.3.4", Some("JP"), None),
        ("8.8.8.8", None, None),
        ("2001:db8::1", None, None),
    ] {
        assert_eq!(
            place_of(&db, addr),
            (country.map(Into::into), region.map(Into::into)),
            "{addr}"
        );
    }
    assert!(db.describe().starts_with("GeoLite2-City built "));
}

#[test]
fn a_file_that_is_not_a_country_database_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let asn = dir.path().join("asn.mmdb");
    mmdb::write(
        &asn,
        "GeoLite2-ASN",
        &[(ip("192.0.2.0"), 24, asn_record(64500, "Example"))],
    )
    .unwrap();
    let e = PlaceDb::open(&asn).unwrap_err();
    assert!(
        e.starts_with("records have neither `country` nor `country_code`"),
        "{e}"
    );
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    assert!(PlaceDb::open(&junk).is_err());
    let cfg = GeoConfig {
        db: Some(dir.path().join("missing.mmdb")),
        ..GeoConfig::default()
    };
    let e = Geo::load(&cfg).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "EARSHOT_GEO_DB: {}/missing.mmdb: ",
            dir.path().display()
        )),
        "{e}"
    );
}

/// Addresses of hosting networks in the compiled-in data-center list
/// (data/datacenter), and of residential ISPs that are in none.
pub(crate) const DATACENTER_ADDRESSES: [&str; 4] = [
    "3.5.140.1",
    "52.95.110.1",
    "2a01:4f8::1",
    "::ffff:3.5.140.1",
];
pub(crate) const RESIDENTIAL_ADDRESSES: [&str; 3] = ["81.2.69.142", "89.160.20.112", "193.0.6.139"];

#[test]
fn the_compiled_in_datacenter_list_holds_hosting_networks_only() {
    let dc = Datacenters::builtin();
    for addr in DATACENTER_ADDRESSES {
        assert!(dc.contains(ip(addr)), "{addr}");
    }
    for addr in RESIDENTIAL_ADDRESSES
        .iter()
        .chain(&["10.0.0.1", "203.0.113.7"])
    {
        assert!(!dc.contains(ip(addr)), "{addr}");
    }
    let (builtin, operator, asns) = dc.sizes();
    assert!(builtin > 5_000, "{builtin} ranges");
    assert_eq!((operator, asns), (0, 0));
    let off = Datacenters::load(false, None, None).unwrap();
    assert!(!off.contains(ip("3.5.140.1")));
}

#[test]
fn an_operator_datacenter_file_adds_networks_and_asns_through_an_asn_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("datacenters.txt");
    std::fs::write(&file, "# our own list\n81.2.69.0/24\nAS64500\n").unwrap();
    let asn_db = dir.path().join("asn.mmdb");
    mmdb::write(
        &asn_db,
        "GeoLite2-ASN",
        &[
            (ip("89.160.0.0"), 16, asn_record(64500, "Hosting Example")),
            (ip("193.0.0.0"), 16, asn_record(3333, "RIPE NCC")),
        ],
    )
    .unwrap();
    let dc = Datacenters::load(true, Some(&file), Some(&asn_db)).unwrap();
    for (addr, inside) in [
        ("81.2.69.142", true),   // a listed network
        ("89.160.20.112", true), // in AS64500
        ("193.0.6.139", false),  // in another AS
        ("3.5.140.1", true),     // the compiled-in list still applies
        ("8.8.4.4", true),
        ("192.0.2.1", false),
    ] {
        assert_eq!(dc.contains(ip(addr)), inside, "{addr}");
    }

    let e = Datacenters::load(true, Some(&file), None).unwrap_err();
    assert!(matches!(e, DatacenterError::AsnsWithoutDatabase), "{e}");
    let city = city_db(dir.path());
    let e = Datacenters::load(true, Some(&file), Some(&city))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "EARSHOT_ASN_DB: {}: its records have no autonomous_system_number: not an ASN database",
            city.display()
        )
    );
    std::fs::write(&file, "81.2.69.0/24\nhosting.example\n").unwrap();
    let e = Datacenters::load(true, Some(&file), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "EARSHOT_DATACENTER_FILE: {}: line 2: \"hosting.example\" is not a CIDR, an address or an AS number",
            file.display()
        )
    );
    // Networks alone need no ASN database.
    std::fs::write(&file, "81.2.69.0/24\n").unwrap();
    assert!(Datacenters::load(true, Some(&file), None)
        .unwrap()
        .contains(ip("81.2.69.1")));
}
