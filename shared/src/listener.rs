//! Listener identity: who heard an ad, without storing who they are.
//!
//! `listener = hex(HMAC-SHA256(period_key, ip_prefix || 0x00 || user_agent))[..32]`
//! where the period key is derived from a secret and the UTC period of the
//! hit ([`ListenerPeriod`]):
//!
//! - `day`: `HMAC-SHA256(secret, "earshot/listener/v1/" || YYYY-MM-DD)`
//! - `month`: `HMAC-SHA256(secret, "earshot/listener/v1/month/" || YYYY-MM)`
//!
//! The IP is reduced first: IPv4 whole, IPv6 to its /64 (one household or
//! phone usually holds a whole /64, and privacy extensions rotate the rest),
//! IPv4-mapped IPv6 as the IPv4 it maps.
//!
//! Because the key changes every period, ids cannot be joined across
//! periods: a monthly id makes a month's reach countable and reveals nothing
//! after the month ends; a daily one makes every listener new each day.
//! Counting dedups per UTC day either way. The raw IP never leaves the
//! function that computes this.

use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::Date;

use crate::hex::{hex_id_impls, Hex};

type HmacSha256 = Hmac<Sha256>;

/// Hex characters kept from the HMAC: 128 bits, collision-free at any
/// audience size a podcast network reaches.
pub const LISTENER_ID_LEN: usize = 32;

/// A listener id: 32 lower-case hex characters, held inline (one heap
/// allocation less per hit and per loaded event).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(Hex<LISTENER_ID_LEN>);

hex_id_impls!(ListenerId, "a listener id");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listener id must be {LISTENER_ID_LEN} lower-case hex characters")]
pub struct BadListenerId;

impl ListenerId {
    pub fn parse(s: &str) -> Result<Self, BadListenerId> {
        Hex::parse(s).map(Self).ok_or(BadListenerId)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The 32 hex digits, without the UTF-8 check `as_str` makes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl TryFrom<String> for ListenerId {
    type Error = BadListenerId;
    fn try_from(s: String) -> Result<Self, BadListenerId> {
        Self::parse(&s)
    }
}

impl From<ListenerId> for String {
    fn from(id: ListenerId) -> String {
        id.as_str().to_owned()
    }
}

/// The secret behind listener ids. Never printed.
#[derive(Clone)]
pub struct ListenerSecret(Vec<u8>);

/// A listener secret shorter than this is refused: it is the only thing
/// standing between a listener id and a dictionary of IPv4 addresses.
pub const MIN_LISTENER_SECRET_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listener secret must be at least {MIN_LISTENER_SECRET_LEN} bytes (got {0})")]
pub struct WeakListenerSecret(pub usize);

impl ListenerSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, WeakListenerSecret> {
        let s = secret.into();
        if s.len() < MIN_LISTENER_SECRET_LEN {
            return Err(WeakListenerSecret(s.len()));
        }
        Ok(Self(s))
    }
}

impl fmt::Debug for ListenerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListenerSecret(<redacted>)")
    }
}

/// How long a listener id lives: the UTC period whose key hashes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenerPeriod {
    /// A new id every UTC day: reach over more than a day is unknowable.
    Day,
    /// A new id every UTC calendar month (OP3's window): a month's reach is
    /// exact, reach across months an upper bound.
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown listener period {0:?}; expected day or month")]
pub struct UnknownListenerPeriod(pub String);

impl ListenerPeriod {
    /// The name, as in settings and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ListenerPeriod::Day => "day",
            ListenerPeriod::Month => "month",
        }
    }

    /// The first UTC day of the period holding `day`.
    pub fn start(self, day: Date) -> Date {
        match self {
            ListenerPeriod::Day => day,
            ListenerPeriod::Month => day.replace_day(1).expect("every month has a 1st"),
        }
    }
}

impl std::str::FromStr for ListenerPeriod {
    type Err = UnknownListenerPeriod;
    fn from_str(s: &str) -> Result<Self, UnknownListenerPeriod> {
        match s {
            "day" => Ok(ListenerPeriod::Day),
            "month" => Ok(ListenerPeriod::Month),
            _ => Err(UnknownListenerPeriod(s.chars().take(16).collect())),
        }
    }
}

impl fmt::Display for ListenerPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Computes listener ids, caching the period key (one HMAC per period
/// instead of one per hit).
pub struct ListenerHasher {
    secret: ListenerSecret,
    period: ListenerPeriod,
    /// A scheduled rotation: from the period that starts on or after this
    /// UTC day, ids use the next secret. Rotating at a period boundary keeps
    /// every period's ids under one secret, so its uniques are never split.
    next: Option<(Date, ListenerSecret)>,
    /// The current period's first day and key.
    current: Mutex<Option<(Date, HmacSha256)>>,
}

impl fmt::Debug for ListenerHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerHasher").finish_non_exhaustive()
    }
}

/// The key of the period that starts on `start`, ready to hash with.
fn period_mac(secret: &ListenerSecret, period: ListenerPeriod, start: Date) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
    let (year, month) = (start.year(), u8::from(start.month()));
    match period {
        // The daily derivation predates the period setting: unchanged, so
        // ids of a day stay what they were.
        ListenerPeriod::Day => {
            mac.update(b"earshot/listener/v1/");
            mac.update(format!("{year:04}-{month:02}-{:02}", start.day()).as_bytes());
        }
        ListenerPeriod::Month => {
            mac.update(b"earshot/listener/v1/month/");
            mac.update(format!("{year:04}-{month:02}").as_bytes());
        }
    }
    let key = mac.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length")
}

/// The bytes of an address that identify a listener: IPv4 whole, IPv6 /64.
fn ip_prefix(ip: IpAddr, out: &mut [u8; 9]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v4.octets());
            &out[..5]
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ip_prefix(IpAddr::V4(v4), out);
            }
            out[0] = 6;
            out[1..9].copy_from_slice(&v6.octets()[..8]);
            &out[..9]
        }
    }
}

impl ListenerHasher {
    pub fn new(secret: ListenerSecret, period: ListenerPeriod) -> Self {
        Self {
            secret,
            period,
            next: None,
            current: Mutex::new(None),
        }
    }

    /// Schedules a rotation: periods starting on `from` (UTC) or later use
    /// `next`. A `from` inside a period takes effect at the next one.
    pub fn with_next(mut self, from: Date, next: ListenerSecret) -> Self {
        self.next = Some((from, next));
        self
    }

    pub fn period(&self) -> ListenerPeriod {
        self.period
    }

    fn secret_for(&self, start: Date) -> &ListenerSecret {
        match &self.next {
            Some((from, next)) if start >= *from => next,
            _ => &self.secret,
        }
    }

    /// The listener id of `ip` + `user_agent` for a hit on the UTC day `day`
    /// (under the key of the period holding it).
    pub fn listener_id(&self, day: Date, ip: IpAddr, user_agent: &str) -> ListenerId {
        let start = self.period.start(day);
        let mut mac = {
            let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
            match &*guard {
                Some((d, mac)) if *d == start => mac.clone(),
                _ => {
                    let mac = period_mac(self.secret_for(start), self.period, start);
                    *guard = Some((start, mac.clone()));
                    mac
                }
            }
        };
        let mut buf = [0u8; 9];
        mac.update(ip_prefix(ip, &mut buf));
        mac.update(&[0]);
        mac.update(user_agent.as_bytes());
        let digest = mac.finalize().into_bytes();
        // hex::encode_to_slice, not hex::encode: the latter collects chars
        // one by one into a String (2% of a hit's CPU).
        let mut id = [0u8; LISTENER_ID_LEN];
        hex::encode_to_slice(&digest[..LISTENER_ID_LEN / 2], &mut id)
            .expect("16 bytes are 32 hex digits");
        ListenerId(Hex::encoded(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn hasher() -> ListenerHasher {
        ListenerHasher::new(
            ListenerSecret::new("0123456789abcdef-test").unwrap(),
            ListenerPeriod::Day,
        )
    }

    fn monthly() -> ListenerHasher {
        ListenerHasher::new(
            ListenerSecret::new("0123456789abcdef-test").unwrap(),
            ListenerPeriod::Month,
        )
    }

    #[test]
    fn id_is_32_hex_and_stable_within_a_day() {
        let h = hasher();
        let ip = "203.0.113.7".parse().unwrap();
        let a = h.listener_id(date!(2026 - 11 - 27), ip, "Overcast/3.0");
        assert_eq!(a.as_str().len(), 32);
        assert!(ListenerId::parse(a.as_str()).is_ok());
        assert_eq!(a, h.listener_id(date!(2026 - 11 - 27), ip, "Overcast/3.0"));
        assert_ne!(a, h.listener_id(date!(2026 - 11 - 28), ip, "Overcast/3.0"));
        assert_ne!(a, h.listener_id(date!(2026 - 11 - 27), ip, "Overcast/3.1"));
    }

    #[test]
    fn known_vector_pins_the_algorithm() {
        // Recomputed by hand from the documented formula with Python's hmac:
        // day_key = HMAC(secret, b"earshot/listener/v1/2026-11-27")
        // HMAC(day_key, b"\x04" + inet_aton("203.0.113.7") + b"\x00" + b"Overcast/3.0").hex()[:32]
        let h = hasher();
        let id = h.listener_id(
            date!(2026 - 11 - 27),
            "203.0.113.7".parse().unwrap(),
            "Overcast/3.0",
        );
        assert_eq!(id.as_str(), KNOWN_VECTOR);
    }
    const KNOWN_VECTOR: &str = include_str!("../testdata/listener_vector.txt");

    #[test]
    fn ipv6_is_truncated_to_its_64_and_mapped_v4_is_v4() {
        let h = hasher();
        let d = date!(2026 - 11 - 27);
        let a = h.listener_id(d, "2001:db8:1:2:aaaa::1".parse().unwrap(), "ua");
        let b = h.listener_id(d, "2001:db8:1:2:bbbb:cccc::9".parse().unwrap(), "ua");
        let c = h.listener_id(d, "2001:db8:1:3::1".parse().unwrap(), "ua");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = h.listener_id(d, "192.0.2.1".parse().unwrap(), "ua");
        let mapped = h.listener_id(d, "::ffff:192.0.2.1".parse().unwrap(), "ua");
        assert_eq!(v4, mapped);
    }

    #[test]
    fn a_scheduled_rotation_switches_secrets_at_the_day_boundary() {
        let old = hasher();
        let new = ListenerHasher::new(
            ListenerSecret::new("the-next-secret-0123456789").unwrap(),
            ListenerPeriod::Day,
        );
        let rotating = hasher().with_next(
            date!(2026 - 11 - 28),
            ListenerSecret::new("the-next-secret-0123456789").unwrap(),
        );
        let ip = "203.0.113.7".parse().unwrap();
        for (day, want) in [
            (date!(2026 - 11 - 27), &old),
            (date!(2026 - 11 - 28), &new),
            (date!(2026 - 11 - 29), &new),
        ] {
            assert_eq!(
                rotating.listener_id(day, ip, "ua"),
                want.listener_id(day, ip, "ua"),
                "{day}"
            );
        }
    }

    #[test]
    fn monthly_ids_hold_for_every_day_of_a_month_and_change_with_it() {
        let h = monthly();
        let ip = "203.0.113.7".parse().unwrap();
        let nov = h.listener_id(date!(2026 - 11 - 01), ip, "Overcast/3.0");
        for day in [
            date!(2026 - 11 - 02),
            date!(2026 - 11 - 27),
            date!(2026 - 11 - 30),
        ] {
            assert_eq!(h.listener_id(day, ip, "Overcast/3.0"), nov, "{day}");
        }
        let dec = h.listener_id(date!(2026 - 12 - 01), ip, "Overcast/3.0");
        assert_ne!(dec, nov);
        assert_eq!(
            h.listener_id(date!(2026 - 12 - 31), ip, "Overcast/3.0"),
            dec
        );
        // The cache holds one period: going back recomputes the same key.
        assert_eq!(
            h.listener_id(date!(2026 - 11 - 15), ip, "Overcast/3.0"),
            nov
        );
        assert_ne!(
            h.listener_id(date!(2026 - 11 - 15), ip, "Overcast/3.1"),
            nov
        );
        // A month's id is none of its days' daily ids.
        assert_ne!(
            hasher().listener_id(date!(2026 - 11 - 01), ip, "Overcast/3.0"),
            nov
        );
    }

    #[test]
    fn known_monthly_vector_pins_the_algorithm() {
        // From the documented formula with Python's hmac:
        // key = HMAC(secret, b"earshot/listener/v1/month/2026-11")
        // HMAC(key, b"\x04" + inet_aton("203.0.113.7") + b"\x00" + b"Overcast/3.0").hex()[:32]
        let id = monthly().listener_id(
            date!(2026 - 11 - 27),
            "203.0.113.7".parse().unwrap(),
            "Overcast/3.0",
        );
        assert_eq!(id.as_str(), KNOWN_MONTHLY_VECTOR);
    }
    const KNOWN_MONTHLY_VECTOR: &str = include_str!("../testdata/listener_vector_month.txt");

    #[test]
    fn a_rotation_inside_a_month_waits_for_the_next_month() {
        let ip = "203.0.113.7".parse().unwrap();
        let next = || ListenerSecret::new("the-next-secret-0123456789").unwrap();
        let rotating = monthly().with_next(date!(2026 - 11 - 15), next());
        let new = ListenerHasher::new(next(), ListenerPeriod::Month);
        assert_eq!(
            rotating.listener_id(date!(2026 - 11 - 20), ip, "ua"),
            monthly().listener_id(date!(2026 - 11 - 20), ip, "ua"),
            "November keeps its secret"
        );
        assert_eq!(
            rotating.listener_id(date!(2026 - 12 - 01), ip, "ua"),
            new.listener_id(date!(2026 - 12 - 01), ip, "ua")
        );
    }

    #[test]
    fn periods_parse_by_name_and_start_where_they_should() {
        assert_eq!("day".parse::<ListenerPeriod>(), Ok(ListenerPeriod::Day));
        assert_eq!("month".parse::<ListenerPeriod>(), Ok(ListenerPeriod::Month));
        assert_eq!(
            "week".parse::<ListenerPeriod>().unwrap_err().to_string(),
            "unknown listener period \"week\"; expected day or month"
        );
        assert_eq!(
            ListenerPeriod::Month.start(date!(2026 - 02 - 28)),
            date!(2026 - 02 - 01)
        );
        assert_eq!(
            ListenerPeriod::Day.start(date!(2026 - 02 - 28)),
            date!(2026 - 02 - 28)
        );
    }

    #[test]
    fn weak_secrets_are_refused_and_secrets_never_print() {
        assert_eq!(
            ListenerSecret::new("short").unwrap_err(),
            WeakListenerSecret(5)
        );
        let s = ListenerSecret::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{s:?}"), "ListenerSecret(<redacted>)");
    }
}
