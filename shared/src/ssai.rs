//! Server-side ad insertion (SSAI) beacons: an ad server fires the pixel on a
//! player's behalf and names the player in `X-Device-IP` and
//! `X-Device-User-Agent` (IAB VAST 4). Anyone can write those headers, so
//! the edge believes them only from an ad server that signs them:
//!
//! ```text
//! X-Earshot-SSAI: k=<key id>,t=<unix seconds>,sig=<signature>
//! canonical = "earshot-ssai-v1\n" + t + "\n" + device_ip + "\n" + device_user_agent + "\n" + query
//! sig       = base64url_nopad(HMAC-SHA256(secret_of(k), canonical))[0..22]
//! ```
//!
//! `device_ip` and `device_user_agent` are the two headers' values (empty
//! when absent), `query` the request's query string exactly as sent (what
//! follows `?`, still percent-encoded). The query binds the signature to one
//! pixel URL (campaign, creative, event, cache buster), the timestamp to a
//! few minutes: a captured header cannot vouch for another hit or device,
//! nor be replayed later. Keys (`EARSHOT_SSAI_KEYS`) are one per ad server,
//! in the signing keys' format. `docs/SIGNING.md` has a worked example.

use std::net::IpAddr;

use crate::signing::{SignatureError, SigningKey, SigningKeys};

/// The header carrying the ad server's signature.
pub const SSAI_SIGNATURE_HEADER: &str = "x-earshot-ssai";
/// The first line of the canonical string: the scheme and its version.
pub const SSAI_CANONICAL_PREFIX: &str = "earshot-ssai-v1";
/// How far a signature's timestamp may be from the edge's clock, either way.
/// A beacon is fired as the ad plays; five minutes covers clock skew and a
/// retry, and bounds how long a captured header can be replayed.
pub const SSAI_MAX_SKEW_SECS: i64 = 300;

/// Why device headers were not believed. `as_str` is the `reason` on the
/// wire; such a hit is `invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SsaiError {
    /// Device headers without an `X-Earshot-SSAI` header.
    #[error("ssai_unsigned")]
    Unsigned,
    /// Signed with a key id the edge does not hold.
    #[error("ssai_unknown_key")]
    UnknownKey,
    /// A malformed header, or a signature that does not match.
    #[error("ssai_bad_signature")]
    BadSignature,
    /// A valid signature whose timestamp is outside [`SSAI_MAX_SKEW_SECS`].
    #[error("ssai_stale")]
    Stale,
    /// A valid signature over an `X-Device-IP` that is not an address.
    #[error("ssai_bad_device_ip")]
    BadDeviceIp,
}

impl SsaiError {
    /// The `reason` on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unsigned => "ssai_unsigned",
            Self::UnknownKey => "ssai_unknown_key",
            Self::BadSignature => "ssai_bad_signature",
            Self::Stale => "ssai_stale",
            Self::BadDeviceIp => "ssai_bad_device_ip",
        }
    }
}

/// What an SSAI beacon says about the player, as the headers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceHeaders<'a> {
    /// `X-Device-IP`, trimmed; empty when absent.
    pub ip: &'a str,
    /// `X-Device-User-Agent`, trimmed; empty when absent.
    pub user_agent: &'a str,
}

impl DeviceHeaders<'_> {
    /// The canonical string signed at unix time `t` for a hit with `query`.
    pub fn canonical(&self, t: i64, query: &str) -> String {
        format!(
            "{SSAI_CANONICAL_PREFIX}\n{t}\n{}\n{}\n{query}",
            self.ip, self.user_agent
        )
    }

    /// The `X-Earshot-SSAI` value an ad server sends for this hit at `t`.
    pub fn signature_header(&self, key: &SigningKey, t: i64, query: &str) -> String {
        format!(
            "k={},t={t},sig={}",
            key.id(),
            key.sign(&self.canonical(t, query))
        )
    }

    /// Checks `header` (the `X-Earshot-SSAI` value, if any) against `keys`
    /// at unix time `now`, and returns the device's address (`None` when
    /// only the user agent was given).
    pub fn verify(
        &self,
        keys: &SigningKeys,
        header: Option<&str>,
        query: &str,
        now: i64,
    ) -> Result<Option<IpAddr>, SsaiError> {
        let header = header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(SsaiError::Unsigned)?;
        let (mut k, mut t, mut sig) = (None, None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("k", v)) => k = Some(v),
                Some(("t", v)) => t = Some(v),
                Some(("sig", v)) => sig = Some(v),
                _ => return Err(SsaiError::BadSignature),
            }
        }
        let t: i64 = t
            .and_then(|t| t.parse().ok())
            .ok_or(SsaiError::BadSignature)?;
        keys.verify(k, sig, &self.canonical(t, query))
            .map_err(|e| match e {
                SignatureError::UnknownKey => SsaiError::UnknownKey,
                SignatureError::Missing | SignatureError::MissingKeyId | SignatureError::Bad => {
                    SsaiError::BadSignature
                }
            })?;
        if now.abs_diff(t) > SSAI_MAX_SKEW_SECS.unsigned_abs() {
            return Err(SsaiError::Stale);
        }
        if self.ip.is_empty() {
            return Ok(None);
        }
        self.ip
            .parse()
            .map(Some)
            .map_err(|_| SsaiError::BadDeviceIp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str =
        "c=spring-sale&cr=cr_30s&ev=impression&k=k1&sig=EKQXsVBZ3ris1ECVxJPgOr&cb=81723";
    const T: i64 = 1_795_788_000;

    fn device() -> DeviceHeaders<'static> {
        DeviceHeaders {
            ip: "203.0.113.50",
            user_agent: "Podcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0",
        }
    }

    fn keys() -> SigningKeys {
        SigningKeys::parse("adsrv1:adsrv1-secret-0123456789").unwrap()
    }

    /// docs/SIGNING.md's worked example, pinned (Python there computes it).
    #[test]
    fn known_vector_pins_the_scheme() {
        let header = device().signature_header(keys().newest().unwrap(), T, QUERY);
        assert_eq!(
            header,
            include_str!("../testdata/ssai_vector.txt").trim_end()
        );
        assert_eq!(
            device().canonical(T, QUERY),
            "earshot-ssai-v1\n1795788000\n203.0.113.50\nPodcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0\n\
             c=spring-sale&cr=cr_30s&ev=impression&k=k1&sig=EKQXsVBZ3ris1ECVxJPgOr&cb=81723"
        );
        assert_eq!(
            device().verify(&keys(), Some(&header), QUERY, T + 10),
            Ok(Some("203.0.113.50".parse().unwrap()))
        );
    }

    #[test]
    fn each_way_of_failing_has_its_reason() {
        let keys = keys();
        let key = keys.newest().unwrap();
        let good = device().signature_header(key, T, QUERY);
        let verify =
            |h: Option<&str>, d: DeviceHeaders<'_>, q: &str, now: i64| d.verify(&keys, h, q, now);
        assert_eq!(verify(None, device(), QUERY, T), Err(SsaiError::Unsigned));
        assert_eq!(
            verify(Some(" "), device(), QUERY, T),
            Err(SsaiError::Unsigned)
        );
        for malformed in [
            "k=adsrv1",
            "k=adsrv1,t=soon,sig=x",
            "garbage",
            "k=adsrv1,t=1,x=2",
        ] {
            assert_eq!(
                verify(Some(malformed), device(), QUERY, T),
                Err(SsaiError::BadSignature),
                "{malformed}"
            );
        }
        let other = SigningKeys::parse("adsrv2:adsrv2-secret-0123456789").unwrap();
        let foreign = device().signature_header(other.newest().unwrap(), T, QUERY);
        assert_eq!(
            verify(Some(&foreign), device(), QUERY, T),
            Err(SsaiError::UnknownKey)
        );
        // The signature covers the device, the query and the time.
        let moved = DeviceHeaders {
            ip: "198.51.100.1",
            ..device()
        };
        assert_eq!(
            verify(Some(&good), moved, QUERY, T),
            Err(SsaiError::BadSignature)
        );
        let other_ua = DeviceHeaders {
            user_agent: "Spotify/8.9",
            ..device()
        };
        assert_eq!(
            verify(Some(&good), other_ua, QUERY, T),
            Err(SsaiError::BadSignature)
        );
        assert_eq!(
            verify(Some(&good), device(), &QUERY.replace("cr_30s", "cr_60s"), T),
            Err(SsaiError::BadSignature)
        );
        let retimed = good.replace(&format!("t={T}"), &format!("t={}", T + 1));
        assert_eq!(
            verify(Some(&retimed), device(), QUERY, T),
            Err(SsaiError::BadSignature)
        );
        // Valid but too old or from the future.
        for now in [T + SSAI_MAX_SKEW_SECS + 1, T - SSAI_MAX_SKEW_SECS - 1] {
            assert_eq!(
                verify(Some(&good), device(), QUERY, now),
                Err(SsaiError::Stale)
            );
        }
        for now in [T + SSAI_MAX_SKEW_SECS, T - SSAI_MAX_SKEW_SECS] {
            assert!(verify(Some(&good), device(), QUERY, now).is_ok());
        }
        let not_an_ip = DeviceHeaders {
            ip: "player-7",
            ..device()
        };
        let signed = not_an_ip.signature_header(key, T, QUERY);
        assert_eq!(
            verify(Some(&signed), not_an_ip, QUERY, T),
            Err(SsaiError::BadDeviceIp)
        );
        let ua_only = DeviceHeaders { ip: "", ..device() };
        let signed = ua_only.signature_header(key, T, QUERY);
        assert_eq!(verify(Some(&signed), ua_only, QUERY, T), Ok(None));
    }
}
