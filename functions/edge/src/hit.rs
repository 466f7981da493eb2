//! Turning one HTTP request into one response and at most one event. Pure:
//! no I/O, no clock (the caller passes `now`), so it is tested directly and
//! benchmarked per hit.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use earshot_domain::event::EventFields;
use earshot_domain::event::{truncate_to, MAX_LABEL_LEN, MAX_TRACE_ID_LEN, MAX_UA_LEN};
use earshot_domain::geo::DATACENTER_REASON;
use earshot_domain::{
    CountryCode, DeviceHeaders, ListenerHasher, PixelParams, RegionCode, SsaiError, TrackingEvent,
    UaClassifier, Verdict,
};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{SigningConfig, TrustConfig};
use crate::geo::{Geo, Place};
use crate::sequence::Sequencer;

/// The smallest transparent GIF: 1x1, one transparent colour (43 bytes).
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The pixel path. API Gateway REST stages prefix it (`/Prod/v1/t`), so a
/// path that ends with it is the pixel too.
pub const PIXEL_PATH: &str = "/v1/t";
pub const HEALTH_PATH: &str = "/healthz";

/// What the edge needs to know about a request, whatever carried it
/// (Lambda event or local socket).
#[derive(Debug, Clone, Copy)]
pub struct HitRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The address the request came from, as the platform reports it
    /// (Lambda request context, or the TCP peer).
    pub source_ip: Option<IpAddr>,
    /// X-Ray trace id from the Lambda runtime, if any.
    pub runtime_trace_id: Option<&'a str>,
    /// When the answer must be sent (the Lambda invocation's deadline, less
    /// a margin), if the platform sets one.
    pub deadline: Option<tokio::time::Instant>,
}

/// Which route a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    PixelGet,
    PixelHead,
    Health,
    MethodNotAllowed,
    NotFound,
}

pub fn route(method: &Method, path: &str) -> Route {
    if path == PIXEL_PATH || path.ends_with(PIXEL_PATH) {
        match *method {
            Method::GET => Route::PixelGet,
            Method::HEAD => Route::PixelHead,
            _ => Route::MethodNotAllowed,
        }
    } else if path == HEALTH_PATH && *method == Method::GET {
        Route::Health
    } else {
        Route::NotFound
    }
}

/// The response for a route. The pixel always answers 200 with the GIF,
/// whatever the query said: a pixel never breaks a player.
pub fn response(route: Route) -> Response<Bytes> {
    let r = match route {
        Route::PixelGet | Route::PixelHead => return pixel_response(route == Route::PixelGet),
        Route::Health => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Bytes::from_static(b"ok\n")),
        Route::MethodNotAllowed => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Bytes::from_static(
                b"method not allowed: the pixel answers GET and HEAD\n",
            )),
        Route::NotFound => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Bytes::from_static(b"not found: the pixel is GET /v1/t\n")),
    };
    r.expect("static response parts are valid")
}

/// The pixel's headers, built once: a copy of this map costs two
/// allocations and a copy of five entries, where building it costs the
/// same two allocations plus hashing and placing each header (callgrind).
/// Not `Response::builder()`: it moves a `Result` of the whole response
/// head through each `.header()` call.
static PIXEL_HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
    let mut h = HeaderMap::with_capacity(5);
    h.append(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.append(header::CONTENT_LENGTH, HeaderValue::from_static("43"));
    h.append(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.append(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.append(header::EXPIRES, HeaderValue::from_static("0"));
    h
});

/// The pixel's answer, sent on every hit.
fn pixel_response(with_body: bool) -> Response<Bytes> {
    let mut r = Response::new(if with_body {
        Bytes::from_static(&PIXEL_GIF)
    } else {
        Bytes::new()
    });
    *r.headers_mut() = PIXEL_HEADERS.clone();
    r
}

/// A user-agent label, cut to the wire's limit.
fn label(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(|s| truncate_to(s, MAX_LABEL_LEN))
}

/// Bytes reserved for one hit's NDJSON line: a line with a long user agent
/// and a trace id is about 600 bytes, so one allocation nearly always holds it.
pub const LINE_CAPACITY: usize = 768;

/// Everything a hit needs that does not change between hits.
pub struct Recorder {
    pub listener: ListenerHasher,
    pub signing: SigningConfig,
    pub ua: UaClassifier,
    pub trust: TrustConfig,
    pub geo: Geo,
    /// This environment's edge id and the numbering of its events.
    pub sequencer: Sequencer,
}

// Header names parsed once, not on every lookup.
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_DEVICE_IP: http::HeaderName = http::HeaderName::from_static("x-device-ip");
static X_DEVICE_USER_AGENT: http::HeaderName = http::HeaderName::from_static("x-device-user-agent");
static X_EARSHOT_SSAI: http::HeaderName =
    http::HeaderName::from_static(earshot_domain::ssai::SSAI_SIGNATURE_HEADER);
static X_AMZN_TRACE_ID: http::HeaderName = http::HeaderName::from_static("x-amzn-trace-id");
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static CLOUDFRONT_VIEWER_ADDRESS: http::HeaderName =
    http::HeaderName::from_static("cloudfront-viewer-address");
static CLOUDFRONT_VIEWER_COUNTRY: http::HeaderName =
    http::HeaderName::from_static("cloudfront-viewer-country");
static CLOUDFRONT_VIEWER_COUNTRY_REGION: http::HeaderName =
    http::HeaderName::from_static("cloudfront-viewer-country-region");

/// A header of visible ASCII (addresses, trace ids), trimmed, if not empty.
fn header_str<'a>(h: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A header of free text (user agents), decoded as UTF-8 with invalid bytes
/// replaced, trimmed, if not empty. Localized apps name themselves in their
/// own script and ad servers forward decoded agents: such a value is text,
/// not a missing header.
fn header_text<'a>(h: &'a HeaderMap, name: &http::HeaderName) -> Option<Cow<'a, str>> {
    match String::from_utf8_lossy(h.get(name)?.as_bytes()) {
        Cow::Borrowed(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(Cow::Borrowed),
        Cow::Owned(s) => Some(s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| Cow::Owned(s.to_owned())),
    }
}

/// The address `hops` entries from the right of `X-Forwarded-For` (all its
/// lines, in order): what the farthest of `hops` trusted proxies, each
/// appending the address it saw, wrote. Anything left of it the client
/// may have written. `None` when the list is shorter or that entry is not
/// an address.
fn forwarded_from_right(h: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let mut entries: Vec<&str> = Vec::new();
    for v in h.get_all(&X_FORWARDED_FOR) {
        entries.extend(v.to_str().ok()?.split(',').map(str::trim));
    }
    let i = entries.len().checked_sub(hops)?;
    entries[i].parse().ok()
}

/// `CloudFront-Viewer-Address`: the viewer's address and port, `IP:port`
/// (an IPv6 address unbracketed, so the port is after the last colon).
fn viewer_address(v: &str) -> Option<IpAddr> {
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    v.rsplit_once(':')?.0.parse().ok()
}

/// Who a hit is from, as far as the edge believes the request.
struct Client<'a> {
    ip: Option<IpAddr>,
    /// Whose address `ip` is.
    address: Address,
    user_agent: Option<Cow<'a, str>>,
    /// Device headers were present but not believed.
    refused: Option<SsaiError>,
}

/// Whose address a hit is attributed to: the one its listener id, place
/// and data-center test use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    /// The caller's own (a player, or a refused SSAI beacon).
    Caller,
    /// The player's, as a signed SSAI beacon names it in `X-Device-IP`.
    Device,
    /// A signed SSAI beacon that names no device address: the ad server's.
    /// Where the server is says nothing about the listener, so it has no
    /// place; and it is judged as what it is, a server.
    AdServer,
}

impl Recorder {
    /// The caller's address: what CloudFront saw (only behind CloudFront),
    /// else what the farthest trusted proxy saw, else the platform's.
    fn caller_ip(&self, req: &HitRequest<'_>) -> Option<IpAddr> {
        if self.trust.cloudfront {
            if let Some(ip) =
                header_str(req.headers, &CLOUDFRONT_VIEWER_ADDRESS).and_then(viewer_address)
            {
                return Some(ip);
            }
        }
        if self.trust.proxy_hops > 0 {
            if let Some(ip) = forwarded_from_right(req.headers, self.trust.proxy_hops) {
                return Some(ip);
            }
        }
        req.source_ip
    }

    /// The caller, or the player a signed SSAI beacon names.
    fn client<'a>(&self, req: &HitRequest<'a>, now: OffsetDateTime) -> Client<'a> {
        let user_agent = header_text(req.headers, &header::USER_AGENT);
        let device_ip = header_text(req.headers, &X_DEVICE_IP);
        let device_ua = header_text(req.headers, &X_DEVICE_USER_AGENT);
        let caller = |refused| Client {
            ip: self.caller_ip(req),
            address: Address::Caller,
            user_agent: user_agent.clone(),
            refused,
        };
        if device_ip.is_none() && device_ua.is_none() {
            return caller(None);
        }
        let device = DeviceHeaders {
            ip: device_ip.as_deref().unwrap_or(""),
            user_agent: device_ua.as_deref().unwrap_or(""),
        };
        match device.verify(
            &self.trust.ssai_keys,
            header_str(req.headers, &X_EARSHOT_SSAI),
            req.query.unwrap_or(""),
            now.unix_timestamp(),
        ) {
            Ok(ip) => Client {
                ip: ip.or_else(|| self.caller_ip(req)),
                address: if ip.is_some() {
                    Address::Device
                } else {
                    Address::AdServer
                },
                user_agent: device_ua.clone().or_else(|| user_agent.clone()),
                refused: None,
            },
            Err(e) => caller(Some(e)),
        }
    }

    /// Where the hit came from. Behind CloudFront, for the caller's own hits,
    /// CloudFront's country (and region, when its origin request policy
    /// passes `CloudFront-Viewer-Country-Region`) come first; otherwise the
    /// database's answer for the attributed address. CloudFront's headers
    /// describe the caller: for an SSAI beacon, the ad server.
    fn place(&self, req: &HitRequest<'_>, client: &Client<'_>) -> Place {
        let locate = || {
            client
                .ip
                .map(|ip| self.geo.places.locate(ip))
                .unwrap_or_default()
        };
        match client.address {
            Address::AdServer => Place::default(),
            Address::Device => locate(),
            Address::Caller => {
                let cloudfront = self
                    .trust
                    .cloudfront
                    .then(|| header_str(req.headers, &CLOUDFRONT_VIEWER_COUNTRY))
                    .flatten()
                    .and_then(CountryCode::parse);
                let Some(country) = cloudfront else {
                    return locate();
                };
                let region = header_str(req.headers, &CLOUDFRONT_VIEWER_COUNTRY_REGION)
                    .and_then(|r| RegionCode::new(country, r))
                    .or_else(|| locate().region.filter(|r| r.country() == country));
                Place {
                    country: Some(country),
                    region,
                }
            }
        }
    }

    fn trace_id<'a>(&self, req: &HitRequest<'a>) -> Option<&'a str> {
        header_str(req.headers, &X_AMZN_TRACE_ID)
            .or_else(|| header_str(req.headers, &TRACEPARENT))
            .or(req.runtime_trace_id)
    }

    /// The event for a pixel GET at `now`.
    pub fn record(&self, req: &HitRequest<'_>, now: OffsetDateTime) -> TrackingEvent {
        self.with_event(req, now, |e| e.to_event())
    }

    /// Appends the event for a pixel GET at `now` to `out` as one NDJSON
    /// line, and returns its verdict. What the edge runs per hit: the same
    /// event as [`record`](Self::record), encoded from borrowed fields.
    pub fn record_ndjson(
        &self,
        req: &HitRequest<'_>,
        now: OffsetDateTime,
        out: &mut Vec<u8>,
    ) -> Verdict {
        self.with_event(req, now, |e| {
            e.write_ndjson(out);
            e.verdict
        })
    }

    /// Builds the hit's event from what the request, its parsed query and
    /// the user-agent cache hold, and hands it to `f`.
    fn with_event<R>(
        &self,
        req: &HitRequest<'_>,
        now: OffsetDateTime,
        f: impl FnOnce(EventFields<'_>) -> R,
    ) -> R {
        let now = earshot_domain::wire::to_wire_precision(now);
        let params = PixelParams::parse(req.query.unwrap_or(""));
        let checked = params.check(&self.signing.keys, self.signing.required);
        let client = self.client(req, now);
        let ua = client.user_agent.as_deref();
        let ua_info = self.ua.classify(ua);
        // Without an address (never seen from API Gateway, a Function URL or
        // a socket) every such hit shares one listener per user agent: an
        // undercount, never an overcount.
        let ip = client.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let listener = self.listener.listener_id(now.date(), ip, ua.unwrap_or(""));
        // Judged by the attributed address: a signed SSAI beacon by the
        // player's, whatever network the ad server runs in.
        let datacenter = client
            .ip
            .is_some_and(|ip| self.geo.datacenters.contains(ip));
        let (verdict, reason) = match (
            checked.invalid,
            client.refused,
            datacenter,
            &ua_info.bot_reason,
        ) {
            (Some(r), _, _, _) => (Verdict::Invalid, Some(r.as_str())),
            (None, Some(e), _, _) => (Verdict::Invalid, Some(e.as_str())),
            (None, None, true, _) => (Verdict::Invalid, Some(DATACENTER_REASON)),
            (None, None, false, Some(b)) => (Verdict::Bot, Some(b.as_str())),
            (None, None, false, None) => (Verdict::Valid, None),
        };
        let place = self.place(req, &client);
        let ms = now.unix_timestamp_nanos() / 1_000_000;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            (ms / 1000) as u64,
            ((ms % 1000) * 1_000_000) as u32,
        );
        f(EventFields {
            id: Uuid::new_v7(ts),
            ts: now,
            campaign: checked.campaign.as_ref(),
            creative: checked.creative.as_ref(),
            episode: checked.episode.as_ref(),
            show: checked.show.as_ref(),
            placement: checked.placement,
            event: checked.event,
            error_code: checked.error_code,
            listener: &listener,
            listener_period: self.listener.period(),
            ua: ua.map(|u| truncate_to(u, MAX_UA_LEN)),
            app: label(&ua_info.name),
            device: label(&ua_info.device),
            os: ua_info.os,
            country: place.country,
            region: place.region,
            verdict,
            reason,
            trace_id: self.trace_id(req).map(|t| truncate_to(t, MAX_TRACE_ID_LEN)),
            sequence: Some(self.sequencer.next()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::{DeviceHeaders, EventKind, ListenerPeriod, ListenerSecret, SigningKeys};
    use time::macros::datetime;

    fn recorder(trust: TrustConfig, require_signature: bool) -> Recorder {
        Recorder {
            listener: ListenerHasher::new(
                ListenerSecret::new("test-secret-0123456789").unwrap(),
                ListenerPeriod::Month,
            ),
            signing: SigningConfig {
                keys: SigningKeys::parse("k1:k1-secret-0123456789").unwrap(),
                required: require_signature,
            },
            ua: UaClassifier::builtin(),
            trust,
            geo: crate::geo::Geo::builtin(),
            sequencer: crate::sequence::Sequencer::new(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const OVERCAST: &str = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)";

    fn hit<'a>(query: &'a str, h: &'a HeaderMap, ip: &str) -> HitRequest<'a> {
        HitRequest {
            method: &Method::GET,
            path: PIXEL_PATH,
            query: Some(query),
            headers: h,
            source_ip: Some(ip.parse().unwrap()),
            runtime_trace_id: None,
            deadline: None,
        }
    }

    #[test]
    fn gif_is_the_43_byte_transparent_pixel_with_no_cache_headers() {
        let r = response(Route::PixelGet);
        assert_eq!(r.status(), 200);
        assert_eq!(r.body().len(), 43);
        assert_eq!(&r.body()[..6], b"GIF89a");
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(
            r.headers()["cache-control"],
            "no-cache, no-store, must-revalidate"
        );
        assert_eq!(
            (
                &r.headers()["content-length"],
                &r.headers()["pragma"],
                &r.headers()["expires"],
                r.headers().len()
            ),
            (
                &HeaderValue::from_static("43"),
                &HeaderValue::from_static("no-cache"),
                &HeaderValue::from_static("0"),
                5
            )
        );
        let head = response(Route::PixelHead);
        assert_eq!(head.headers(), r.headers());
        assert!(head.body().is_empty());
        let r = response(Route::MethodNotAllowed);
        assert_eq!(
            (r.status().as_u16(), &r.headers()["allow"]),
            (405, &HeaderValue::from_static("GET, HEAD"))
        );
    }

    #[test]
    fn routes_include_stage_prefixed_paths() {
        assert_eq!(route(&Method::GET, "/v1/t"), Route::PixelGet);
        assert_eq!(route(&Method::GET, "/Prod/v1/t"), Route::PixelGet);
        assert_eq!(route(&Method::HEAD, "/v1/t"), Route::PixelHead);
        assert_eq!(route(&Method::POST, "/v1/t"), Route::MethodNotAllowed);
        assert_eq!(route(&Method::GET, "/healthz"), Route::Health);
        assert_eq!(route(&Method::GET, "/favicon.ico"), Route::NotFound);
    }

    #[test]
    fn a_valid_hit_carries_every_field() {
        let rec = recorder(TrustConfig::default(), false);
        let h = headers(&[("user-agent", OVERCAST), ("x-amzn-trace-id", "Root=1-abc")]);
        let now = datetime!(2026-11-27 10:00:00.123456 UTC);
        let ev = rec.record(
            &hit(
                "c=camp&cr=cr1&ep=e1&sh=s1&pos=pre&ev=complete",
                &h,
                "203.0.113.7",
            ),
            now,
        );
        assert_eq!(ev.verdict, Verdict::Valid);
        assert_eq!(ev.reason, None);
        assert_eq!(ev.ts, datetime!(2026-11-27 10:00:00.123 UTC));
        assert_eq!(ev.event, Some(EventKind::Complete));
        assert_eq!(ev.app.as_deref(), Some("Overcast"));
        assert_eq!(ev.trace_id.as_deref(), Some("Root=1-abc"));
        assert_eq!(ev.id.get_version_num(), 7);
        let (secs, _) = ev.id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, now.unix_timestamp());
        let again = rec.record(&hit("c=camp&cr=cr1&ev=start", &h, "203.0.113.7"), now);
        assert_eq!(again.listener, ev.listener);
        assert_ne!(again.id, ev.id);
    }

    #[test]
    fn listener_ids_live_for_the_configured_period() {
        let h = headers(&[("user-agent", OVERCAST)]);
        let q = "c=camp&cr=cr1&ev=impression";
        let id = |period, now| {
            let mut rec = recorder(TrustConfig::default(), false);
            rec.listener = ListenerHasher::new(
                ListenerSecret::new("test-secret-0123456789").unwrap(),
                period,
            );
            let ev = rec.record(&hit(q, &h, "81.2.69.142"), now);
            assert_eq!(ev.listener_period, period);
            ev.listener
        };
        let nov_1 = datetime!(2026-11-01 00:00:00 UTC);
        let nov_30 = datetime!(2026-11-30 23:59:59.999 UTC);
        let dec_1 = datetime!(2026-12-01 00:00:00 UTC);
        let month = ListenerPeriod::Month;
        assert_eq!(id(month, nov_1), id(month, nov_30));
        assert_ne!(id(month, nov_30), id(month, dec_1));
        let day = ListenerPeriod::Day;
        assert_ne!(id(day, nov_1), id(day, nov_30));
        assert_eq!(id(day, nov_1), id(day, datetime!(2026-11-01 23:59:59 UTC)));
    }

    #[test]
    fn invalid_beats_bot_and_bots_are_flagged() {
        let rec = recorder(TrustConfig::default(), true);
        let h = headers(&[("user-agent", "Googlebot/2.1")]);
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let forged = rec.record(
            &hit(
                "c=camp&cr=cr1&ev=start&k=k1&sig=AAAAAAAAAAAAAAAAAAAAAA",
                &h,
                "203.0.113.7",
            ),
            now,
        );
        assert_eq!(
            (forged.verdict, forged.reason.as_deref()),
            (Verdict::Invalid, Some("bad_signature"))
        );
        let rec = recorder(TrustConfig::default(), false);
        let bot = rec.record(&hit("c=camp&cr=cr1&ev=start", &h, "203.0.113.7"), now);
        assert_eq!(
            (bot.verdict, bot.reason.as_deref()),
            (Verdict::Bot, Some("ua_listed:Googlebot"))
        );
        let h = headers(&[("user-agent", "ExampleSpider/1.0")]);
        let bot = rec.record(&hit("c=camp&cr=cr1&ev=start", &h, "203.0.113.7"), now);
        assert_eq!(
            (bot.verdict, bot.reason.as_deref()),
            (Verdict::Bot, Some("ua_self_declared"))
        );
        let none = HeaderMap::new();
        let no_ua = rec.record(&hit("c=camp&cr=cr1&ev=start", &none, "203.0.113.7"), now);
        assert_eq!(
            (no_ua.verdict, no_ua.reason.as_deref()),
            (Verdict::Bot, Some("ua_missing"))
        );
    }

    /// The listener id a hit from `ip` with `ua` gets at `now`.
    fn listener_of(ip: &str, ua: &str, now: OffsetDateTime) -> earshot_domain::ListenerId {
        recorder(TrustConfig::default(), false)
            .record(
                &hit(
                    "c=camp&cr=cr1&ev=impression",
                    &headers(&[("user-agent", ua)]),
                    ip,
                ),
                now,
            )
            .listener
    }

    #[test]
    fn the_client_is_the_forwarded_entry_n_places_from_the_right() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let q = "c=camp&cr=cr1&ev=impression";
        // The client wrote 192.0.2.66 itself; two proxies appended
        // 198.51.100.1 (the client as the first saw it) and 10.0.0.1.
        let h = headers(&[
            ("user-agent", OVERCAST),
            ("x-forwarded-for", "192.0.2.66, 198.51.100.1, 10.0.0.1"),
        ]);
        let hops = |n| {
            recorder(
                TrustConfig {
                    proxy_hops: n,
                    ..TrustConfig::default()
                },
                false,
            )
            .record(&hit(q, &h, "203.0.113.7"), now)
            .listener
        };
        assert_eq!(
            hops(0),
            listener_of("203.0.113.7", OVERCAST, now),
            "0: the source address"
        );
        assert_eq!(hops(1), listener_of("10.0.0.1", OVERCAST, now));
        assert_eq!(hops(2), listener_of("198.51.100.1", OVERCAST, now));
        assert_ne!(
            hops(2),
            listener_of("192.0.2.66", OVERCAST, now),
            "the leftmost entry is the client's to write"
        );
        assert_eq!(hops(3), listener_of("192.0.2.66", OVERCAST, now));
        assert_eq!(
            hops(4),
            listener_of("203.0.113.7", OVERCAST, now),
            "fewer entries than hops"
        );
        // Entries over several header lines count as one list.
        let mut split = headers(&[("user-agent", OVERCAST)]);
        split.append(
            "x-forwarded-for",
            "192.0.2.66, 198.51.100.1".parse().unwrap(),
        );
        split.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        let ev = recorder(
            TrustConfig {
                proxy_hops: 2,
                ..TrustConfig::default()
            },
            false,
        )
        .record(&hit(q, &split, "203.0.113.7"), now);
        assert_eq!(ev.listener, listener_of("198.51.100.1", OVERCAST, now));
    }

    #[test]
    fn cloudfront_viewer_headers_count_only_behind_cloudfront() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let q = "c=camp&cr=cr1&ev=impression";
        let behind = recorder(
            TrustConfig {
                cloudfront: true,
                ..TrustConfig::default()
            },
            false,
        );
        let direct = recorder(TrustConfig::default(), false);
        for (address, ip) in [
            ("198.51.100.10:46532", "198.51.100.10"),
            (
                "2001:db8:85a3::8a2e:370:7334:46532",
                "2001:db8:85a3::8a2e:370:7334",
            ),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            let h = headers(&[
                ("user-agent", OVERCAST),
                ("cloudfront-viewer-address", address),
                ("cloudfront-viewer-country", "FR"),
                ("x-forwarded-for", "192.0.2.66"),
            ]);
            let ev = behind.record(&hit(q, &h, "203.0.113.7"), now);
            assert_eq!(ev.listener, listener_of(ip, OVERCAST, now), "{address}");
            assert_eq!(ev.country.unwrap().as_str(), "FR");
            let ev = direct.record(&hit(q, &h, "203.0.113.7"), now);
            assert_eq!(ev.listener, listener_of("203.0.113.7", OVERCAST, now));
            assert_eq!(ev.country, None);
        }
    }

    fn ssai_keys() -> SigningKeys {
        SigningKeys::parse("adsrv1:adsrv1-secret-0123456789").unwrap()
    }

    fn ssai_trust() -> TrustConfig {
        TrustConfig {
            ssai_keys: ssai_keys(),
            ..TrustConfig::default()
        }
    }

    /// The player behind an SSAI beacon.
    fn ssai_device(user_agent: &str) -> DeviceHeaders<'_> {
        DeviceHeaders {
            ip: "192.0.2.55",
            user_agent,
        }
    }

    /// The `X-Earshot-SSAI` header the ad server of [`ssai_keys`] sends.
    fn ssai_signed(device: &DeviceHeaders, t: i64, q: &str) -> String {
        device.signature_header(ssai_keys().newest().unwrap(), t, q)
    }

    #[test]
    fn device_headers_count_only_with_a_valid_ssai_signature() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let q = "c=camp&cr=cr1&ev=impression&cb=7";
        let device = ssai_device("Spotify/8.8 iOS");
        let signed = ssai_signed(&device, now.unix_timestamp(), q);
        let with = |sig: Option<&str>| {
            let mut h = headers(&[
                ("user-agent", "Go-http-client/1.1"),
                ("x-device-ip", device.ip),
                ("x-device-user-agent", device.user_agent),
            ]);
            if let Some(s) = sig {
                h.insert("x-earshot-ssai", s.parse().unwrap());
            }
            h
        };
        let rec = recorder(ssai_trust(), false);
        let ev = rec.record(&hit(q, &with(Some(&signed)), "203.0.113.7"), now);
        assert_eq!((ev.verdict, ev.reason.as_deref()), (Verdict::Valid, None));
        assert_eq!(ev.ua.as_deref(), Some("Spotify/8.8 iOS"));
        assert_eq!(ev.app.as_deref(), Some("Spotify"));
        assert_eq!(
            ev.listener,
            listener_of("192.0.2.55", "Spotify/8.8 iOS", now)
        );

        let stale = ssai_signed(&device, now.unix_timestamp() - 301, q);
        let forged = signed.replace("sig=", "sig=A");
        let foreign = device.signature_header(
            SigningKeys::parse("adsrv9:adsrv9-secret-0123456789")
                .unwrap()
                .newest()
                .unwrap(),
            now.unix_timestamp(),
            q,
        );
        for (sig, rec, reason) in [
            (None, recorder(ssai_trust(), false), "ssai_unsigned"),
            (
                Some(signed.as_str()),
                recorder(TrustConfig::default(), false),
                "ssai_unknown_key",
            ),
            (
                Some(forged.as_str()),
                recorder(ssai_trust(), false),
                "ssai_bad_signature",
            ),
            (
                Some(foreign.as_str()),
                recorder(ssai_trust(), false),
                "ssai_unknown_key",
            ),
            (
                Some(stale.as_str()),
                recorder(ssai_trust(), false),
                "ssai_stale",
            ),
        ] {
            let ev = rec.record(&hit(q, &with(sig), "203.0.113.7"), now);
            assert_eq!(
                (ev.verdict, ev.reason.as_deref()),
                (Verdict::Invalid, Some(reason)),
                "{sig:?}"
            );
            // Refused headers change nothing: the caller's address and agent.
            assert_eq!(ev.ua.as_deref(), Some("Go-http-client/1.1"));
            assert_eq!(
                ev.listener,
                listener_of("203.0.113.7", "Go-http-client/1.1", now)
            );
        }
        // Signed for another hit: the query is part of what is signed.
        let ev = rec.record(
            &hit(
                "c=camp&cr=cr2&ev=impression&cb=7",
                &with(Some(&signed)),
                "203.0.113.7",
            ),
            now,
        );
        assert_eq!(ev.reason.as_deref(), Some("ssai_bad_signature"));
        // A bad query is still the first reason.
        let ev = rec.record(
            &hit("c=camp&ev=impression", &with(None), "203.0.113.7"),
            now,
        );
        assert_eq!(ev.reason.as_deref(), Some("missing_creative"));
    }

    #[test]
    fn a_signed_ssai_beacon_behind_cloudfront_has_no_country() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let q = "c=camp&cr=cr1&ev=impression";
        let device = ssai_device(OVERCAST);
        let sig = ssai_signed(&device, now.unix_timestamp(), q);
        let h = headers(&[
            ("x-device-ip", device.ip),
            ("x-device-user-agent", device.user_agent),
            ("x-earshot-ssai", &sig),
            ("cloudfront-viewer-address", "198.51.100.10:443"),
            ("cloudfront-viewer-country", "US"),
        ]);
        let rec = recorder(
            TrustConfig {
                cloudfront: true,
                ..ssai_trust()
            },
            false,
        );
        let ev = rec.record(&hit(q, &h, "203.0.113.7"), now);
        assert_eq!(ev.verdict, Verdict::Valid);
        assert_eq!(ev.listener, listener_of("192.0.2.55", OVERCAST, now));
        assert_eq!(
            ev.country, None,
            "the country CloudFront saw is the ad server's"
        );
    }

    /// Localized Apple Podcasts builds name themselves in their own script;
    /// those bytes are the user agent, not a missing one.
    #[test]
    fn user_agents_in_other_scripts_are_decoded_not_missing() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let rec = recorder(TrustConfig::default(), false);
        let q = "c=camp&cr=cr1&ev=impression";
        let raw = "Подкасты/1520.39 CFNetwork/1206 Darwin/20.1.0";
        let encoded =
            "%D0%9F%D0%BE%D0%B4%D0%BA%D0%B0%D1%81%D1%82%D1%8B/1520.39 CFNetwork/1206 Darwin/20.1.0";
        for ua in [raw, encoded] {
            let mut h = HeaderMap::new();
            h.insert(
                "user-agent",
                HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
            );
            let ev = rec.record(&hit(q, &h, "203.0.113.7"), now);
            assert_eq!(
                (ev.verdict, ev.reason.as_deref()),
                (Verdict::Valid, None),
                "{ua}"
            );
            assert_eq!(ev.app.as_deref(), Some("Apple Podcasts"), "{ua}");
            assert_eq!(ev.ua.as_deref(), Some(ua));
            assert_eq!(ev.listener, listener_of("203.0.113.7", ua, now));
        }
        // Bytes that are not UTF-8 are replaced, not dropped.
        let mut h = HeaderMap::new();
        h.insert(
            "user-agent",
            HeaderValue::from_bytes(b"Podcasts/1.0 \xff CFNetwork/1").unwrap(),
        );
        let ev = rec.record(&hit(q, &h, "203.0.113.7"), now);
        assert_eq!(ev.ua.as_deref(), Some("Podcasts/1.0 \u{fffd} CFNetwork/1"));
        assert_eq!(ev.app.as_deref(), Some("Apple Podcasts"));
    }

    #[test]
    fn traceparent_and_runtime_trace_are_fallbacks() {
        let rec = recorder(TrustConfig::default(), false);
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let ev = rec.record(&hit("c=a&cr=b&ev=start", &h, "203.0.113.7"), now);
        assert_eq!(
            ev.trace_id.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let none = HeaderMap::new();
        let mut req = hit("c=a&cr=b&ev=start", &none, "203.0.113.7");
        req.runtime_trace_id = Some("Root=1-runtime");
        assert_eq!(
            rec.record(&req, now).trace_id.as_deref(),
            Some("Root=1-runtime")
        );
    }

    #[test]
    fn the_line_per_hit_is_the_recorded_event_encoded() {
        // `record_ndjson` (what the edge runs) and `record` + `to_ndjson`
        // must write the same line for every kind of hit; only the random
        // part of the id differs between two calls.
        let rec = recorder(TrustConfig::default(), true);
        let keys = &rec.signing.keys;
        let signed = |q: &str| {
            let sig = keys
                .newest()
                .unwrap()
                .sign(&PixelParams::parse(q).signed_fields().canonical());
            format!("{q}&k=k1&sig={sig}&cb=1")
        };
        let long_ua = format!("Overcast/3.0 {}", "x".repeat(600));
        let quoted_ua = "Pod\"cast\\/1.0\t(bot)";
        let now = datetime!(2026-11-27 10:00:00.123456 UTC);
        let cases = [
            (
                signed("c=camp&cr=cr1&ep=e1&sh=s1&pos=pre&ev=complete"),
                OVERCAST,
            ),
            (signed("c=camp&cr=cr1&ev=error&err=405"), OVERCAST),
            (
                "c=camp&cr=cr1&ev=start&k=k1&sig=forged".to_owned(),
                OVERCAST,
            ),
            ("c=bad%20id&cr=cr1&ev=start".to_owned(), OVERCAST),
            (signed("c=camp&cr=cr1&ev=start"), "Googlebot/2.1"),
            (signed("c=camp&cr=cr1&ev=start"), long_ua.as_str()),
            (signed("c=camp&cr=cr1&ev=start"), quoted_ua),
        ];
        for (q, ua) in &cases {
            let h = headers(&[("user-agent", ua), ("x-amzn-trace-id", "Root=1-abc")]);
            let req = hit(q, &h, "2001:db8::1");
            let mut line = Vec::new();
            let verdict = rec.record_ndjson(&req, now, &mut line);
            let mut ev = rec.record(&req, now);
            assert_eq!(verdict, ev.verdict, "{q}");
            let decoded = TrackingEvent::decode(&line).unwrap();
            ev.id = decoded.id;
            // The line took the number before the event's.
            let numbered = ev.sequence.expect("the edge numbers every event");
            assert_eq!(
                decoded.sequence.map(|s| (s.edge, s.seq + 1)),
                Some((numbered.edge, numbered.seq))
            );
            ev.sequence = decoded.sequence;
            assert_eq!(line, ev.to_ndjson(), "{q} {ua}");
        }
    }
}
