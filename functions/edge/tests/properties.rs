//! Properties of what the edge parses and writes: no input makes it panic,
//! and every event it can write decodes back to itself.

use earshot_domain::{
    CampaignId, CountryCode, CreativeId, EpisodeId, EventKind, ListenerId, ListenerPeriod,
    PixelParams, Placement, RegionCode, ShowId, SigningKeys, TrackingEvent, Verdict,
};
use proptest::prelude::*;
use time::OffsetDateTime;

fn keys() -> SigningKeys {
    SigningKeys::parse("k1:k1-prop-secret-0123456789,k2:k2-prop-secret-0123456789").unwrap()
}

/// Query strings made of the pixel's own parameter names with arbitrary
/// (often percent-encoded) values, which reach deeper than random text.
fn pixel_query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("c"),
        Just("cr"),
        Just("ep"),
        Just("sh"),
        Just("pos"),
        Just("ev"),
        Just("err"),
        Just("k"),
        Just("sig"),
        Just("cb"),
        Just("zz"),
        Just(""),
    ];
    let value = prop_oneof![
        "[A-Za-z0-9._-]{0,70}",
        "(%[0-9A-Fa-f]{2}|%|[^&=]){0,20}",
        Just("impression".to_owned()),
        Just("error".to_owned()),
        Just("mid".to_owned()),
        any::<String>(),
    ];
    proptest::collection::vec((name, value, any::<bool>()), 0..12).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v, with_eq)| {
                if with_eq {
                    format!("{n}={v}")
                } else {
                    n.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// What `PixelParams::parse` must give: form_urlencoded's own pairs, the
/// first value of each known name kept, unknown names ignored.
fn parsed_by_form_urlencoded(q: &str) -> Vec<Option<String>> {
    const NAMES: [&str; 10] = ["c", "cr", "ep", "sh", "pos", "ev", "err", "k", "sig", "cb"];
    let mut slots: Vec<Option<String>> = vec![None; NAMES.len()];
    for (name, value) in form_urlencoded::parse(q.as_bytes()) {
        if let Some(i) = NAMES.iter().position(|n| *n == name) {
            slots[i].get_or_insert_with(|| value.into_owned());
        }
    }
    slots
}

fn slots(p: &PixelParams<'_>) -> Vec<Option<String>> {
    [
        &p.c, &p.cr, &p.ep, &p.sh, &p.pos, &p.ev, &p.err, &p.k, &p.sig, &p.cb,
    ]
    .iter()
    .map(|v| v.as_ref().map(|v| v.to_string()))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pixel_params_parse_is_form_urlencoded_on_any_text(q in any::<String>()) {
        prop_assert_eq!(slots(&PixelParams::parse(&q)), parsed_by_form_urlencoded(&q));
    }

    #[test]
    fn pixel_params_parse_is_form_urlencoded_on_pixel_shaped_queries(q in pixel_query()) {
        prop_assert_eq!(slots(&PixelParams::parse(&q)), parsed_by_form_urlencoded(&q));
    }

    #[test]
    fn pixel_params_parse_and_check_never_panic_on_any_text(q in any::<String>(), require in any::<bool>()) {
        let keys = keys();
        let p = PixelParams::parse(&q);
        let hit = p.check(&keys, require);
        // Whatever was typed is a valid id by construction.
        if let Some(c) = &hit.campaign {
            prop_assert!(CampaignId::parse(c.as_str()).is_ok());
        }
        if require && hit.invalid.is_none() {
            prop_assert!(p.sig.is_some(), "a hit passing a required signature check had a signature");
        }
    }

    #[test]
    fn pixel_params_check_never_panics_on_pixel_shaped_queries(q in pixel_query(), require in any::<bool>()) {
        let keys = keys();
        let hit = PixelParams::parse(&q).check(&keys, require);
        if hit.invalid.is_none() {
            prop_assert!(hit.campaign.is_some() && hit.creative.is_some() && hit.event.is_some());
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = TrackingEvent::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_event_lines(
        ev in tracking_event(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut line = ev.to_ndjson();
        for (at, b) in edits {
            let i = at.index(line.len());
            line[i] = b;
        }
        let _ = TrackingEvent::decode(&line);
        let _ = TrackingEvent::decode(&line[..cut.index(line.len())]);
    }

    #[test]
    fn any_valid_event_decodes_to_itself(ev in tracking_event()) {
        let line = ev.to_ndjson();
        prop_assert_eq!(line.last(), Some(&b'\n'));
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one event, one line");
        prop_assert_eq!(TrackingEvent::decode(&line).unwrap(), ev);
    }
}

fn id_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn label() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

/// Events as the edge can write them: a UUIDv7 carrying `ts`, millisecond
/// precision, and the verdict invariants (valid/bot have campaign, creative
/// and event; valid has no reason; bot and invalid have one).
fn tracking_event() -> impl Strategy<Value = TrackingEvent> {
    // 1970-01-01 to 9999-12-31T23:59:59.999Z: the wire's four-digit years.
    let ms = 0i64..=253_402_300_799_999;
    let ids = (
        id_text(),
        id_text(),
        proptest::option::of(id_text()),
        proptest::option::of(id_text()),
        any::<bool>(),
        any::<bool>(),
    );
    let kinds = (
        proptest::option::of(prop::sample::select(vec![
            Placement::Pre,
            Placement::Mid,
            Placement::Post,
        ])),
        prop::sample::select(EventKind::ALL.to_vec()),
        any::<bool>(),
        proptest::option::of(any::<u16>()),
    );
    let who = (
        "[0-9a-f]{32}",
        label(),
        label(),
        label(),
        label(),
        proptest::option::of("[A-Za-z]{2}"),
        label(),
        proptest::option::of("[A-Za-z0-9]{1,3}"),
        prop::sample::select(vec![ListenerPeriod::Day, ListenerPeriod::Month]),
    );
    let verdict = (
        prop::sample::select(vec![Verdict::Valid, Verdict::Bot, Verdict::Invalid]),
        any::<String>(),
        any::<[u8; 10]>(),
        proptest::option::of(("[0-9a-f]{32}", 1u64..)),
    );
    (ms, ids, kinds, who, verdict).prop_map(
        |(
            ms,
            (campaign, creative, episode, show, drop_campaign, drop_creative),
            (placement, event, drop_event, error_code),
            (listener, ua, app, device, os, country, trace_id, region, listener_period),
            (verdict, reason, random, sequence),
        )| {
            let ts = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            let id = uuid::Builder::from_unix_timestamp_millis(ms as u64, &random).into_uuid();
            let invalid = verdict == Verdict::Invalid;
            let country = country.and_then(|c| CountryCode::parse(&c));
            TrackingEvent {
                id,
                ts,
                campaign: (!(invalid && drop_campaign))
                    .then(|| CampaignId::parse(&campaign).unwrap()),
                creative: (!(invalid && drop_creative))
                    .then(|| CreativeId::parse(&creative).unwrap()),
                episode: episode.map(|e| EpisodeId::parse(&e).unwrap()),
                show: show.map(|s| ShowId::parse(&s).unwrap()),
                placement,
                event: (!(invalid && drop_event)).then_some(event),
                error_code,
                listener: ListenerId::parse(&listener).unwrap(),
                listener_period,
                ua,
                app,
                device,
                os,
                country,
                region: country
                    .zip(region)
                    .and_then(|(c, r)| RegionCode::new(c, &r)),
                verdict,
                reason: (verdict != Verdict::Valid).then_some(reason),
                trace_id,
                sequence: sequence.map(|(edge, seq)| earshot_domain::EdgeSeq {
                    edge: earshot_domain::EdgeId::parse(&edge).unwrap(),
                    seq,
                }),
            }
        },
    )
}
