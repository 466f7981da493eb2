//! Geography and data-center traffic: what the client's address says before
//! it is hashed. The recorder on its own (CloudFront, SSAI beacons, the
//! order of reasons), then the real binary in Lambda mode (under the Runtime
//! API emulator, into moto's Firehose) and in local mode (over loopback,
//! the address under test in a trusted `X-Forwarded-For`).

use std::collections::HashMap;
use std::path::Path;

use earshot_domain::{
    DeviceHeaders, ListenerHasher, ListenerSecret, SigningKeys, TrackingEvent, UaClassifier,
    Verdict,
};
use earshot_edge::config::{SigningConfig, TrustConfig, DEFAULT_LISTENER_PERIOD};
use earshot_edge::geo::{Geo, GeoError};
use earshot_edge::hit::{HitRequest, Recorder, PIXEL_PATH};
use earshot_testkit::edge::{decode_objects, events_in_sink_dir};
use earshot_testkit::mmdb::{self, city_record};
use earshot_testkit::LocalEdge;
use http::{HeaderMap, Method};
use serde_json::Value;
use time::macros::datetime;

mod support;
use support::{fixture, lambda_function, moto_with_stream, BUCKET, PREFIX};

const SECRET: &str = "geography-listener-secret-0123456789";
const OVERCAST: &str = "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)";
const QUERY: &str = "c=spring-sale&cr=cr_30s&ev=impression";

/// Addresses and the country the compiled-in database (data/geo/VERSION)
/// gives them: the regional Internet registries' own networks, and
/// residential ISPs'. None is in a data-center network.
const PLACED: [(&str, &str); 6] = [
    ("193.0.6.139", "NL"),               // RIPE NCC
    ("2001:67c:2e8:22::c100:68b", "NL"), // RIPE NCC, IPv6
    ("202.12.29.205", "AU"),             // APNIC
    ("200.3.14.10", "UY"),               // LACNIC
    ("192.136.136.1", "US"),             // ARIN
    ("81.2.69.142", "GB"),               // a British ISP
];
/// Addresses with no place: special-purpose (the database itself says AU
/// for 203.0.113.7, a documentation address), private, unallocated.
const UNPLACED: [&str; 4] = ["203.0.113.7", "10.20.30.40", "2001:db8::1", "fd12::1"];
/// In the compiled-in data-center list: AWS (Seoul, KR), Hetzner (IPv6).
const DATACENTER: [&str; 2] = ["3.5.140.1", "2a01:4f8::1"];
const RESIDENTIAL_DEVICE: &str = "89.160.20.112"; // a Swedish ISP

fn recorder(trust: TrustConfig, geo: Geo) -> Recorder {
    Recorder {
        listener: ListenerHasher::new(
            ListenerSecret::new(SECRET).unwrap(),
            DEFAULT_LISTENER_PERIOD,
        ),
        signing: SigningConfig::default(),
        ua: UaClassifier::builtin(),
        trust,
        geo,
        sequencer: earshot_edge::sequence::Sequencer::new(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn record(rec: &Recorder, query: &str, h: &HeaderMap, source: &str) -> TrackingEvent {
    rec.record(
        &HitRequest {
            method: &Method::GET,
            path: PIXEL_PATH,
            query: Some(query),
            headers: h,
            source_ip: Some(source.parse().unwrap()),
            runtime_trace_id: None,
            deadline: None,
        },
        datetime!(2026-11-27 10:00:00 UTC),
    )
}

fn outcome(ev: &TrackingEvent) -> (Verdict, Option<&str>, Option<&str>, Option<&str>) {
    (
        ev.verdict,
        ev.reason.as_deref(),
        ev.country.as_ref().map(|c| c.as_str()),
        ev.region.as_ref().map(|r| r.as_str()),
    )
}

fn listener_of(ip: &str, ua: &str) -> earshot_domain::ListenerId {
    ListenerHasher::new(
        ListenerSecret::new(SECRET).unwrap(),
        DEFAULT_LISTENER_PERIOD,
    )
    .listener_id(
        datetime!(2026-11-27 10:00:00 UTC).date(),
        ip.parse().unwrap(),
        ua,
    )
}

#[test]
fn datacenter_hits_are_invalid_after_the_query_and_before_bots() {
    let rec = recorder(TrustConfig::default(), Geo::builtin());
    let overcast = headers(&[("user-agent", OVERCAST)]);
    let bot = headers(&[("user-agent", "Googlebot/2.1")]);
    for ip in DATACENTER {
        let ev = record(&rec, QUERY, &overcast, ip);
        assert_eq!(
            (ev.verdict, ev.reason.as_deref()),
            (Verdict::Invalid, Some("datacenter")),
            "{ip}"
        );
        assert_eq!(ev.listener, listener_of(ip, OVERCAST));
        let ev = record(&rec, QUERY, &bot, ip);
        assert_eq!(
            ev.reason.as_deref(),
            Some("datacenter"),
            "an invalid hit beats a bot one"
        );
        let ev = record(&rec, "c=spring-sale&ev=impression", &overcast, ip);
        assert_eq!(
            ev.reason.as_deref(),
            Some("missing_creative"),
            "the query's problem comes first"
        );
    }
    let ev = record(&rec, QUERY, &overcast, "3.5.140.1");
    assert_eq!(
        ev.country.map(|c| c.as_str().to_owned()).as_deref(),
        Some("KR")
    );
    // Not the compiled-in list: nothing is a data center.
    let off = Geo::load(&earshot_edge::config::GeoConfig {
        builtin_datacenters: false,
        ..Default::default()
    })
    .unwrap();
    let ev = record(
        &recorder(TrustConfig::default(), off),
        QUERY,
        &overcast,
        "3.5.140.1",
    );
    assert_eq!(outcome(&ev), (Verdict::Valid, None, Some("KR"), None));
}

#[test]
fn hits_are_placed_by_the_callers_address_and_unknown_ones_nowhere() {
    let rec = recorder(TrustConfig::default(), Geo::builtin());
    let h = headers(&[("user-agent", OVERCAST)]);
    for (ip, country) in PLACED {
        assert_eq!(
            outcome(&record(&rec, QUERY, &h, ip)),
            (Verdict::Valid, None, Some(country), None),
            "{ip}"
        );
    }
    for ip in UNPLACED {
        assert_eq!(
            outcome(&record(&rec, QUERY, &h, ip)),
            (Verdict::Valid, None, None, None),
            "{ip}"
        );
    }
}

fn ssai_trust() -> TrustConfig {
    TrustConfig {
        ssai_keys: SigningKeys::parse("adsrv1:adsrv1-secret-0123456789").unwrap(),
        ..TrustConfig::default()
    }
}

/// The headers of a beacon `adsrv1` signed, naming `device_ip` (if any).
fn beacon(device_ip: Option<&str>) -> HeaderMap {
    let device = DeviceHeaders {
        ip: device_ip.unwrap_or(""),
        user_agent: OVERCAST,
    };
    let keys = SigningKeys::parse("adsrv1:adsrv1-secret-0123456789").unwrap();
    let sig = device.signature_header(
        keys.newest().unwrap(),
        datetime!(2026-11-27 10:00:00 UTC).unix_timestamp(),
        QUERY,
    );
    let mut pairs = vec![
        ("user-agent", "AdServer/2.0"),
        ("x-device-user-agent", OVERCAST),
        ("x-earshot-ssai", sig.as_str()),
    ];
    if let Some(ip) = device_ip {
        pairs.push(("x-device-ip", ip));
    }
    headers(&pairs)
}

#[test]
fn an_ssai_beacon_is_judged_and_placed_by_the_device_address() {
    let rec = recorder(ssai_trust(), Geo::builtin());
    let server = DATACENTER[0];
    // From an ad server in AWS, for a player on a Swedish ISP: valid, in SE.
    let ev = record(&rec, QUERY, &beacon(Some(RESIDENTIAL_DEVICE)), server);
    assert_eq!(outcome(&ev), (Verdict::Valid, None, Some("SE"), None));
    assert_eq!(ev.listener, listener_of(RESIDENTIAL_DEVICE, OVERCAST));
    // A device address in a data center is a data-center hit.
    let ev = record(&rec, QUERY, &beacon(Some(DATACENTER[1])), "81.2.69.142");
    assert_eq!(
        (ev.verdict, ev.reason.as_deref()),
        (Verdict::Invalid, Some("datacenter"))
    );
    // A beacon naming no device address is the ad server's own: judged as
    // the server it comes from, and placed nowhere.
    let ev = record(&rec, QUERY, &beacon(None), server);
    assert_eq!(
        outcome(&ev),
        (Verdict::Invalid, Some("datacenter"), None, None)
    );
    let ev = record(&rec, QUERY, &beacon(None), "81.2.69.142");
    assert_eq!(outcome(&ev), (Verdict::Valid, None, None, None));
    // Device headers without a valid signature are not believed: the
    // caller's address decides, and the refusal is the reason.
    let mut forged = beacon(Some(RESIDENTIAL_DEVICE));
    forged.insert(
        "x-earshot-ssai",
        "k=adsrv1,t=1795788000,sig=AAAAAAAAAAAAAAAAAAAAAA"
            .parse()
            .unwrap(),
    );
    let ev = record(&rec, QUERY, &forged, server);
    assert_eq!(
        (ev.verdict, ev.reason.as_deref()),
        (Verdict::Invalid, Some("ssai_bad_signature"))
    );
    assert_eq!(
        ev.country.map(|c| c.as_str().to_owned()).as_deref(),
        Some("KR")
    );
}

#[test]
fn behind_cloudfront_its_country_and_region_come_first_for_the_callers_own_hits() {
    let dir = tempfile::tempdir().unwrap();
    let city = write_city_db(dir.path());
    let trust = TrustConfig {
        cloudfront: true,
        ..ssai_trust()
    };
    let with_city = recorder(
        trust.clone(),
        Geo::load(&earshot_edge::config::GeoConfig {
            db: Some(city),
            ..Default::default()
        })
        .unwrap(),
    );
    let builtin = recorder(trust, Geo::builtin());
    let viewer = |address: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("user-agent", OVERCAST),
            ("cloudfront-viewer-address", address),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    };
    type Case<'a> = (&'a Recorder, HeaderMap, (Option<&'a str>, Option<&'a str>));
    let cases: [Case<'_>; 6] = [
        // CloudFront's country and region.
        (
            &builtin,
            viewer(
                "81.2.69.142:443",
                &[
                    ("cloudfront-viewer-country", "FR"),
                    ("cloudfront-viewer-country-region", "IDF"),
                ],
            ),
            (Some("FR"), Some("FR-IDF")),
        ),
        // Its country alone: the database's region only within that country.
        (
            &with_city,
            viewer("81.2.69.142:443", &[("cloudfront-viewer-country", "GB")]),
            (Some("GB"), Some("GB-ENG")),
        ),
        (
            &with_city,
            viewer("81.2.69.142:443", &[("cloudfront-viewer-country", "IE")]),
            (Some("IE"), None),
        ),
        // No country header: the database, for the viewer's address.
        (
            &with_city,
            viewer("81.2.69.142:443", &[]),
            (Some("GB"), Some("GB-ENG")),
        ),
        (
            &builtin,
            viewer("[2001:67c:2e8:22::c100:68b]:443", &[]),
            (Some("NL"), None),
        ),
        // A malformed region code is no region.
        (
            &builtin,
            viewer(
                "81.2.69.142:443",
                &[
                    ("cloudfront-viewer-country", "FR"),
                    ("cloudfront-viewer-country-region", "Ile-de-France"),
                ],
            ),
            (Some("FR"), None),
        ),
    ];
    for (i, (rec, h, want)) in cases.iter().enumerate() {
        let ev = record(rec, QUERY, h, "203.0.113.7");
        assert_eq!((outcome(&ev).2, outcome(&ev).3), *want, "case {i}");
    }
    // An SSAI beacon through CloudFront: CloudFront saw the ad server; the
    // place is the device's.
    let mut h = beacon(Some("81.2.69.142"));
    h.insert(
        "cloudfront-viewer-address",
        "3.5.140.1:443".parse().unwrap(),
    );
    h.insert("cloudfront-viewer-country", "US".parse().unwrap());
    let ev = record(&with_city, QUERY, &h, "203.0.113.7");
    assert_eq!(
        outcome(&ev),
        (Verdict::Valid, None, Some("GB"), Some("GB-ENG"))
    );
}

fn write_city_db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("GeoLite2-City.mmdb");
    mmdb::write(
        &path,
        "GeoLite2-City",
        &[
            (
                "81.2.69.0".parse().unwrap(),
                24,
                city_record("GB", Some("ENG")),
            ),
            (
                "89.160.20.0".parse().unwrap(),
                24,
                city_record("SE", Some("AB")),
            ),
            (
                "2a02:cf40::".parse().unwrap(),
                29,
                city_record("US", Some("CA")),
            ),
        ],
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_missing_geo_database_stops_the_edge_with_its_name() {
    let cfg = earshot_edge::config::EdgeConfig::from_lookup(|k| match k {
        "EARSHOT_GEO_DB" => Some("/nonexistent/GeoLite2-City.mmdb".into()),
        "EARSHOT_SINK" => Some("dir:/tmp/earshot-never-written".into()),
        _ => None,
    })
    .unwrap();
    let e = earshot_edge::App::build(cfg)
        .await
        .err()
        .expect("the edge refuses to start");
    let e = e.downcast::<GeoError>().expect("a geography error");
    assert!(
        e.to_string()
            .starts_with("EARSHOT_GEO_DB: /nonexistent/GeoLite2-City.mmdb: "),
        "{e}"
    );
}

/// What the edge recorded for a hit: (verdict, reason, country, region).
type Outcome = (Verdict, Option<String>, Option<String>, Option<String>);
/// What the real edge recorded for each address, by the episode each hit
/// named ([`tag`]).
type Outcomes = HashMap<String, Outcome>;

fn outcomes(events: &[TrackingEvent]) -> Outcomes {
    events
        .iter()
        .map(|e| {
            let (v, r, c, g) = outcome(e);
            (
                e.episode.as_ref().expect("an episode").as_str().to_owned(),
                (v, r.map(Into::into), c.map(Into::into), g.map(Into::into)),
            )
        })
        .collect()
}

/// Each address under test, what the edge must record for it with the
/// compiled-in data, and with the City file of [`write_city_db`].
fn expectations(city: bool) -> Vec<(&'static str, Outcome)> {
    let valid = |c: Option<&str>, r: Option<&str>| {
        (Verdict::Valid, None, c.map(Into::into), r.map(Into::into))
    };
    let mut out: Vec<_> = if city {
        vec![
            ("81.2.69.142", valid(Some("GB"), Some("GB-ENG"))),
            ("89.160.20.112", valid(Some("SE"), Some("SE-AB"))),
            ("2a02:cf40:1::7", valid(Some("US"), Some("US-CA"))),
            ("193.0.6.139", valid(None, None)),
        ]
    } else {
        PLACED
            .iter()
            .map(|(ip, c)| (*ip, valid(Some(c), None)))
            .collect()
    };
    out.extend(UNPLACED.iter().map(|ip| (*ip, valid(None, None))));
    out.push((
        "3.5.140.1",
        (
            Verdict::Invalid,
            Some("datacenter".into()),
            if city { None } else { Some("KR".into()) },
            None,
        ),
    ));
    out
}

/// An episode id naming the address and the data (`city`) a hit was sent
/// with: the events are told apart by it (under Lambda the trace id is the
/// invocation's).
fn tag(ip: &str, city: bool) -> String {
    let h = ip.bytes().fold(u64::from(city), |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    format!("ep-{h:016x}")
}

#[tokio::test]
async fn the_lambda_edge_places_hits_and_flags_data_centers_by_the_request_context_address() {
    let moto = moto_with_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let city = write_city_db(dir.path());
    let city_var = city.display().to_string();
    let runs = [
        (vec![], false),
        (vec![("EARSHOT_GEO_DB", city_var.as_str())], true),
    ];
    let mut sent = 0;
    for (extra, city) in &runs {
        let mut function = lambda_function(moto.aws_env(), SECRET, extra).await;
        for (ip, _) in expectations(*city) {
            let mut event = fixture("apigw-v2-get.json");
            event["requestContext"]["http"]["sourceIp"] = Value::String(ip.into());
            event["headers"]["x-forwarded-for"] = Value::String(ip.into());
            let ep = tag(ip, *city);
            event["rawQueryString"] = Value::String(format!("{QUERY}&ep={ep}"));
            event["queryStringParameters"] = serde_json::json!({
                "c": "spring-sale", "cr": "cr_30s", "ev": "impression", "ep": ep,
            });
            let resp = function.invoke(&event).await.expect("invocation");
            assert_eq!(resp["statusCode"], 200, "{ip}: {resp}");
            sent += 1;
        }
        function.shutdown().await.expect("the function stops");
    }
    // Sync mode: each event was in Firehose before its response.
    let objects = moto
        .read_all_objects(BUCKET, PREFIX)
        .await
        .expect("objects");
    let got = outcomes(&decode_objects(&objects).expect("events"));
    assert_eq!(got.len(), sent);
    for (_, city) in &runs {
        for (ip, want) in expectations(*city) {
            assert_eq!(
                got.get(&tag(ip, *city)),
                Some(&want),
                "{ip} (City file: {city})"
            );
        }
    }
}

#[tokio::test]
async fn the_local_edge_places_hits_and_flags_data_centers_by_the_forwarded_address() {
    let dir = tempfile::tempdir().unwrap();
    let city = write_city_db(dir.path());
    for city in [None, Some(city)] {
        let sink = tempfile::tempdir().unwrap();
        let mut env = vec![
            (
                "EARSHOT_SINK".to_owned(),
                format!("dir:{}", sink.path().display()),
            ),
            ("EARSHOT_LISTENER_SECRET".to_owned(), SECRET.to_owned()),
            ("EARSHOT_TRUSTED_PROXY_HOPS".to_owned(), "1".to_owned()),
        ];
        if let Some(c) = &city {
            env.push(("EARSHOT_GEO_DB".to_owned(), c.display().to_string()));
        }
        let mut edge = LocalEdge::spawn(Path::new(env!("CARGO_BIN_EXE_earshot-edge")), env)
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let want = expectations(city.is_some());
        for (ip, _) in &want {
            let resp = client
                .get(format!(
                    "{}{PIXEL_PATH}?{QUERY}&ep={}",
                    edge.base_url(),
                    tag(ip, city.is_some())
                ))
                .header("user-agent", OVERCAST)
                .header("x-forwarded-for", *ip)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{ip}");
        }
        edge.stop().await.unwrap();
        let got = outcomes(&events_in_sink_dir(sink.path()).unwrap());
        assert_eq!(got.len(), want.len());
        for (ip, want) in want {
            assert_eq!(
                got.get(&tag(ip, city.is_some())),
                Some(&want),
                "{ip} (City file: {})",
                city.is_some()
            );
        }
    }
}
