//! Lists of networks, one per line: a CIDR (`203.0.113.0/24`,
//! `2001:db8::/32`), a bare address, or an autonomous system number
//! (`AS64500` or `64500`); `#` starts a comment. The compiled-in data-center
//! list and an operator's `EARSHOT_DATACENTER_FILE` are both read here: the
//! first by the build script (`build.rs` includes this file), the second at
//! start-up. Only `std`, for the build script's sake.

use std::fmt;
use std::net::IpAddr;

/// Inclusive ranges of IPv4 addresses, as numbers.
pub type V4Range = (u32, u32);
/// Inclusive ranges of IPv6 addresses, as numbers.
pub type V6Range = (u128, u128);

/// A parsed list: sorted, merged ranges (no two overlap or touch) and
/// sorted, distinct ASNs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList {
    pub v4: Vec<V4Range>,
    pub v6: Vec<V6Range>,
    pub asns: Vec<u32>,
}

/// A line that is none of the accepted forms, by number (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

impl NetList {
    /// Parses a whole list; the first bad line is the error.
    pub fn parse(text: &str) -> Result<NetList, LineError> {
        let mut list = NetList::default();
        for (i, raw) in text.lines().enumerate() {
            let entry = raw.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            add(&mut list, entry).map_err(|message| LineError {
                line: i + 1,
                message,
            })?;
        }
        list.v4 = merge(list.v4);
        list.v6 = merge(list.v6);
        list.asns.sort_unstable();
        list.asns.dedup();
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty() && self.asns.is_empty()
    }

    /// Whether a range of the list holds `ip` (an IPv4-mapped IPv6 address
    /// as the IPv4 it maps).
    pub fn contains(&self, ip: IpAddr) -> bool {
        contains(&self.v4, &self.v6, ip)
    }

    pub fn has_asn(&self, asn: u32) -> bool {
        self.asns.binary_search(&asn).is_ok()
    }
}

/// Whether sorted, merged `v4` / `v6` ranges hold `ip`: a binary search.
pub fn contains(v4: &[V4Range], v6: &[V6Range], ip: IpAddr) -> bool {
    fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
        // The last range starting at or before x is the only one that can
        // hold it: ranges are sorted and disjoint.
        let i = ranges.partition_point(|&(start, _)| start <= x);
        i > 0 && x <= ranges[i - 1].1
    }
    match ip {
        IpAddr::V4(a) => find(v4, u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => find(v4, u32::from(a)),
            None => find(v6, u128::from(a)),
        },
    }
}

fn add(list: &mut NetList, entry: &str) -> Result<(), String> {
    let asn = entry
        .strip_prefix("AS")
        .or_else(|| entry.strip_prefix("as"))
        .unwrap_or(entry);
    if !asn.is_empty() && asn.bytes().all(|b| b.is_ascii_digit()) {
        let n = asn
            .parse::<u32>()
            .map_err(|_| format!("{entry:?} is not an AS number (at most 4294967295)"))?;
        list.asns.push(n);
        return Ok(());
    }
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{entry:?} is not a CIDR, an address or an AS number"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => bits,
        Some(l) => match l.trim().parse::<u32>() {
            Ok(n) if n <= bits => n,
            _ => return Err(format!("{entry:?}: the prefix length is not 0 to {bits}")),
        },
    };
    match ip {
        IpAddr::V4(a) => {
            let (start, end) = span(u128::from(u32::from(a)), len, 32);
            list.v4.push((start as u32, end as u32));
        }
        IpAddr::V6(a) => match (a.to_ipv4_mapped(), len >= 96) {
            (Some(v4), true) => {
                let (start, end) = span(u128::from(u32::from(v4)), len - 96, 32);
                list.v4.push((start as u32, end as u32));
            }
            _ => list.v6.push(span(u128::from(a), len, 128)),
        },
    }
    Ok(())
}

/// The first and last address of the `len`-bit prefix of `x` in a `bits`-bit
/// address space. Host bits set in the entry are ignored, as routers do.
fn span(x: u128, len: u32, bits: u32) -> (u128, u128) {
    let host = bits - len;
    let mask = if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    (x & !mask, x | mask)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)>
where
    T: Ord + Copy + Successor,
{
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1.next().is_none_or(|n| start <= n) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

/// The next address, if any.
trait Successor: Sized {
    fn next(self) -> Option<Self>;
}

impl Successor for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Successor for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_addresses_and_asns_parse_and_ranges_merge() {
        let list = NetList::parse(
            "# hosting\n\
             203.0.113.0/25\n\
             203.0.113.128/25   # touches the one above\n\
             198.51.100.7\n\
             198.51.100.0/24\n\
             10.1.2.3/8\n\
             2001:db8::/33\n\
             ::ffff:192.0.2.0/120\n\
             AS64500\n\
             as64501\n\
             64500\n\
             \n",
        )
        .unwrap();
        assert_eq!(
            list.v4,
            vec![
                (
                    u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)),
                    u32::from(std::net::Ipv4Addr::new(10, 255, 255, 255))
                ),
                (
                    u32::from(std::net::Ipv4Addr::new(192, 0, 2, 0)),
                    u32::from(std::net::Ipv4Addr::new(192, 0, 2, 255))
                ),
                (
                    u32::from(std::net::Ipv4Addr::new(198, 51, 100, 0)),
                    u32::from(std::net::Ipv4Addr::new(198, 51, 100, 255))
                ),
                (
                    u32::from(std::net::Ipv4Addr::new(203, 0, 113, 0)),
                    u32::from(std::net::Ipv4Addr::new(203, 0, 113, 255))
                ),
            ]
        );
        assert_eq!(list.v6.len(), 1);
        assert_eq!(list.asns, vec![64500, 64501]);
        for (addr, inside) in [
            ("203.0.113.0", true),
            ("203.0.113.255", true),
            ("203.0.114.0", false),
            ("203.0.112.255", false),
            ("10.200.0.1", true),
            ("192.0.2.9", true),
            ("::ffff:203.0.113.9", true),
            ("2001:db8:7fff::1", true),
            ("2001:db8:8000::1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
        ] {
            assert_eq!(list.contains(ip(addr)), inside, "{addr}");
        }
        assert!(list.has_asn(64501) && !list.has_asn(64502));
    }

    #[test]
    fn the_whole_space_and_its_edges_are_ranges_too() {
        let list = NetList::parse("0.0.0.0/0\n::/0\n").unwrap();
        assert_eq!(list.v4, vec![(0, u32::MAX)]);
        assert_eq!(list.v6, vec![(0, u128::MAX)]);
        assert!(list.contains(ip("255.255.255.255")) && list.contains(ip("ffff::1")));
        let list = NetList::parse("255.255.255.255/32\n255.255.255.254/32\n").unwrap();
        assert_eq!(list.v4, vec![(u32::MAX - 1, u32::MAX)]);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        for (text, message) in [
            (
                "192.0.2.0/24\nhosting.example\n",
                "line 2: \"hosting.example\" is not a CIDR, an address or an AS number",
            ),
            (
                "192.0.2.0/33",
                "line 1: \"192.0.2.0/33\": the prefix length is not 0 to 32",
            ),
            (
                "2001:db8::/129",
                "line 1: \"2001:db8::/129\": the prefix length is not 0 to 128",
            ),
            (
                "AS99999999999",
                "line 1: \"AS99999999999\" is not an AS number (at most 4294967295)",
            ),
            (
                "#\n\n192.0.2.0/x",
                "line 3: \"192.0.2.0/x\": the prefix length is not 0 to 32",
            ),
        ] {
            assert_eq!(
                NetList::parse(text).unwrap_err().to_string(),
                message,
                "{text:?}"
            );
        }
    }
}
