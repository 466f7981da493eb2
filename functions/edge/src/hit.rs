//! Turning one HTTP request into one response and at most one event. Pure:
//! no I/O, no clock (the caller passes `now`), so it is tested directly and
//! benchmarked per hit.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use earshot_domain::event::EventFields;
use earshot_domain::event::{truncate_to, MAX_LABEL_LEN, MAX_TRACE_ID_LEN, MAX_UA_LEN};
use earshot_domain::{
    CountryCode, ListenerHasher, PixelParams, SigningKeys, TrackingEvent, UaClassifier, Verdict,
};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::TrustConfig;

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
/// same two allocations plus hashing and placing each header (callgrind,
/// docs/BENCHMARKS.md "Edge"). Before, a checked builder moved a `Result`
/// of the whole response head through each `.header()` call.
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
    pub keys: SigningKeys,
    pub require_signature: bool,
    pub ua: UaClassifier,
    pub trust: TrustConfig,
}

// Header names parsed once, not on every lookup.
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_DEVICE_IP: http::HeaderName = http::HeaderName::from_static("x-device-ip");
static X_DEVICE_USER_AGENT: http::HeaderName = http::HeaderName::from_static("x-device-user-agent");
static X_AMZN_TRACE_ID: http::HeaderName = http::HeaderName::from_static("x-amzn-trace-id");
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static CLOUDFRONT_VIEWER_COUNTRY: http::HeaderName =
    http::HeaderName::from_static("cloudfront-viewer-country");

fn header_str<'a>(h: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The first address of an `X-Forwarded-For` list.
fn first_forwarded(h: &HeaderMap) -> Option<IpAddr> {
    header_str(h, &X_FORWARDED_FOR)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl Recorder {
    /// The address that identifies the listener.
    fn client_ip(&self, req: &HitRequest<'_>) -> Option<IpAddr> {
        if self.trust.device_headers {
            if let Some(ip) = header_str(req.headers, &X_DEVICE_IP).and_then(|s| s.parse().ok()) {
                return Some(ip);
            }
        }
        if self.trust.forwarded {
            if let Some(ip) = first_forwarded(req.headers) {
                return Some(ip);
            }
        }
        req.source_ip
    }

    fn user_agent<'a>(&self, req: &HitRequest<'a>) -> Option<&'a str> {
        if self.trust.device_headers {
            if let Some(ua) = header_str(req.headers, &X_DEVICE_USER_AGENT) {
                return Some(ua);
            }
        }
        header_str(req.headers, &header::USER_AGENT)
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
        let now = earshot_domain::event::to_wire_precision(now);
        let params = PixelParams::parse(req.query.unwrap_or(""));
        let checked = params.check(&self.keys, self.require_signature);
        let ua = self.user_agent(req);
        let ua_info = self.ua.classify(ua);
        // Without an address (never seen from API Gateway, a Function URL or
        // a socket) every such hit shares one listener per user agent: an
        // undercount, never an overcount.
        let ip = self
            .client_ip(req)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let listener = self.listener.listener_id(now.date(), ip, ua.unwrap_or(""));
        let (verdict, reason) = match (checked.invalid, &ua_info.bot_reason) {
            (Some(r), _) => (Verdict::Invalid, Some(r.as_str())),
            (None, Some(b)) => (Verdict::Bot, Some(b.as_str())),
            (None, None) => (Verdict::Valid, None),
        };
        let country = if self.trust.cloudfront {
            header_str(req.headers, &CLOUDFRONT_VIEWER_COUNTRY).and_then(CountryCode::parse)
        } else {
            None
        };
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
            ua: ua.map(|u| truncate_to(u, MAX_UA_LEN)),
            app: label(&ua_info.name),
            device: label(&ua_info.device),
            os: ua_info.os,
            country,
            verdict,
            reason,
            trace_id: self.trace_id(req).map(|t| truncate_to(t, MAX_TRACE_ID_LEN)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::{EventKind, ListenerSecret};
    use time::macros::datetime;

    fn recorder(trust: TrustConfig, require_signature: bool) -> Recorder {
        Recorder {
            listener: ListenerHasher::new(ListenerSecret::new("test-secret-0123456789").unwrap()),
            keys: SigningKeys::parse("k1:k1-secret-0123456789").unwrap(),
            require_signature,
            ua: UaClassifier::builtin(),
            trust,
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
            (Verdict::Bot, Some("ua_self_declared"))
        );
        let none = HeaderMap::new();
        let no_ua = rec.record(&hit("c=camp&cr=cr1&ev=start", &none, "203.0.113.7"), now);
        assert_eq!(
            (no_ua.verdict, no_ua.reason.as_deref()),
            (Verdict::Bot, Some("ua_missing"))
        );
    }

    #[test]
    fn forwarded_and_device_headers_count_only_when_trusted() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        let h = headers(&[
            ("user-agent", OVERCAST),
            ("x-forwarded-for", "198.51.100.1, 10.0.0.1"),
            ("cloudfront-viewer-country", "FR"),
            ("x-device-ip", "192.0.2.55"),
            ("x-device-user-agent", "Spotify/8.8 iOS"),
        ]);
        let q = "c=camp&cr=cr1&ev=impression";
        let untrusted = recorder(TrustConfig::default(), false);
        let base = untrusted.record(&hit(q, &h, "203.0.113.7"), now);
        assert_eq!(base.country, None);
        assert_eq!(base.ua.as_deref(), Some(OVERCAST));
        let plain = HeaderMap::new();
        let direct = recorder(TrustConfig::default(), false).record(
            &hit(q, &headers(&[("user-agent", OVERCAST)]), "203.0.113.7"),
            now,
        );
        assert_eq!(
            base.listener, direct.listener,
            "untrusted XFF must not change the listener"
        );
        drop(plain);

        let fwd = recorder(
            TrustConfig {
                forwarded: true,
                cloudfront: true,
                device_headers: false,
            },
            false,
        );
        let ev = fwd.record(&hit(q, &h, "203.0.113.7"), now);
        assert_eq!(ev.country.unwrap().as_str(), "FR");
        let from_xff = fwd.record(
            &hit(q, &headers(&[("user-agent", OVERCAST)]), "198.51.100.1"),
            now,
        );
        assert_eq!(ev.listener, from_xff.listener);

        let dev = recorder(
            TrustConfig {
                forwarded: false,
                cloudfront: false,
                device_headers: true,
            },
            false,
        );
        let ev = dev.record(&hit(q, &h, "203.0.113.7"), now);
        assert_eq!(ev.ua.as_deref(), Some("Spotify/8.8 iOS"));
        assert_eq!(ev.app.as_deref(), Some("Spotify"));
        let same = dev.record(
            &hit(
                q,
                &headers(&[("user-agent", "Spotify/8.8 iOS")]),
                "192.0.2.55",
            ),
            now,
        );
        assert_eq!(ev.listener, same.listener);
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
        let keys = SigningKeys::parse("k1:k1-secret-0123456789").unwrap();
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
            assert_eq!(line, ev.to_ndjson(), "{q} {ua}");
        }
    }
}
