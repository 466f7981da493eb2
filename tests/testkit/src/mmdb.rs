//! MaxMind DB files written for a test: a City-format database with the
//! regions a test needs, or an ASN database, in the real binary format
//! (MaxMind DB File Format Specification 2.0) that the edge's `maxminddb`
//! reader opens as it would a GeoLite2 file. Small and exact, where the
//! real City files are tens of MB and licensed per download.

use std::net::IpAddr;
use std::path::Path;

/// A value of the data section (the types the edge reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    U32(u32),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    pub fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

/// A GeoIP2 City record: the country and, if given, its first subdivision
/// (`subdivision` is the part after the hyphen: `CA` of `US-CA`), with
/// English names as GeoLite2 carries them.
pub fn city_record(country: &str, subdivision: Option<&str>) -> Value {
    let names = |n: &str| Value::map([("en", Value::str(n))]);
    let mut entries = vec![
        (
            "continent",
            Value::map([("code", Value::str("XX")), ("names", names("Somewhere"))]),
        ),
        (
            "country",
            Value::map([
                ("geoname_id", Value::U32(1)),
                ("iso_code", Value::str(country)),
                ("names", names(country)),
            ]),
        ),
    ];
    if let Some(sub) = subdivision {
        entries.push((
            "subdivisions",
            Value::Array(vec![Value::map([
                ("geoname_id", Value::U32(2)),
                ("iso_code", Value::str(sub)),
                ("names", names(sub)),
            ])]),
        ));
    }
    Value::map(entries)
}

/// A GeoLite2-ASN record.
pub fn asn_record(asn: u32, organization: &str) -> Value {
    Value::map([
        ("autonomous_system_number", Value::U32(asn)),
        ("autonomous_system_organization", Value::str(organization)),
    ])
}

/// Writes an IPv6 database (IPv4 networks under `::/96`, as MaxMind's are)
/// of `networks` — (address, prefix length, record), disjoint — to `path`.
pub fn write(
    path: &Path,
    database_type: &str,
    networks: &[(IpAddr, u8, Value)],
) -> std::io::Result<()> {
    std::fs::write(path, build(database_type, networks))
}

/// The bytes [`write`] writes.
pub fn build(database_type: &str, networks: &[(IpAddr, u8, Value)]) -> Vec<u8> {
    // The search tree: node 0 is the root; each node holds two records.
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    for (ip, len, value) in networks {
        let (bits, len) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(*a)), 96 + u32::from(*len)),
            IpAddr::V6(a) => (u128::from(*a), u32::from(*len)),
        };
        assert!(len <= 128 && len > 0, "prefix length {len}");
        let offset = data.len();
        encode(&mut data, value);
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    Rec::Empty => {
                        nodes.push([Rec::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                    Rec::Data(_) => panic!("networks overlap at {ip}/{len}"),
                };
            }
        }
    }
    let count = nodes.len();
    // 32-bit records: the tree is 8 bytes a node.
    let mut out = Vec::with_capacity(count * 8 + 16 + data.len() + 256);
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    let meta = Value::map([
        ("binary_format_major_version", Value::U32(2)),
        ("binary_format_minor_version", Value::U32(0)),
        ("build_epoch", Value::U32(1_795_788_000)),
        ("database_type", Value::str(database_type)),
        (
            "description",
            Value::map([("en", Value::str("earshot test database"))]),
        ),
        ("ip_version", Value::U32(6)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("node_count", Value::U32(count as u32)),
        ("record_size", Value::U32(32)),
    ]);
    encode_meta(&mut out, &meta);
    out
}

/// Metadata uses the same encoding, except that its version and size
/// fields are uint16 where the spec says so.
fn encode_meta(out: &mut Vec<u8>, meta: &Value) {
    const UINT16: [&str; 4] = [
        "binary_format_major_version",
        "binary_format_minor_version",
        "ip_version",
        "record_size",
    ];
    let Value::Map(entries) = meta else {
        unreachable!("metadata is a map")
    };
    control(out, 7, entries.len());
    for (k, v) in entries {
        encode(out, &Value::Str(k.clone()));
        match v {
            Value::U32(n) if UINT16.contains(&k.as_str()) => uint(out, 5, u64::from(*n)),
            Value::U32(n) if k == "build_epoch" => uint(out, 9, u64::from(*n)),
            other => encode(out, other),
        }
    }
}

fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::Map(entries) => {
            control(out, 7, entries.len());
            for (k, v) in entries {
                encode(out, &Value::Str(k.clone()));
                encode(out, v);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

/// An unsigned integer of type 5 (uint16), 6 (uint32) or 9 (uint64), in
/// as few big-endian bytes as it needs.
fn uint(out: &mut Vec<u8>, kind: u8, n: u64) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// The control byte(s): type in the top three bits (extended types in a
/// second byte), then the size.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, ext) = if kind <= 7 {
        (kind << 5, None)
    } else {
        (0, Some(kind - 7))
    };
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(first | size_bits);
    out.extend(ext);
    out.extend(extra);
}
