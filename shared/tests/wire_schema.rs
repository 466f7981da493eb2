//! The wire format has one definition, `WIRE_FIELDS`: the encoder writes
//! exactly its fields in its order, docs/WIRE_FORMAT.md's table lists them,
//! and the SAM template's Glue table maps each to its column type.

use std::path::PathBuf;

use earshot_domain::{
    CampaignId, CreativeId, EdgeId, EdgeSeq, EpisodeId, EventKind, ListenerId, ListenerPeriod,
    Placement, RegionCode, ShowId, TrackingEvent, Verdict, WireType, WIRE_FIELDS,
};
use serde_json::Value;
use time::macros::datetime;

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// An event with every field set, and one with every nullable field null.
fn events() -> [TrackingEvent; 2] {
    let ts = datetime!(2026-11-27 13:45:01.234 UTC);
    let listener = ListenerId::parse("0123456789abcdef0123456789abcdef").unwrap();
    let full = TrackingEvent {
        id: uuid::Uuid::now_v7(),
        ts,
        campaign: Some(CampaignId::parse("spring-sale").unwrap()),
        creative: Some(CreativeId::parse("cr_30s").unwrap()),
        episode: Some(EpisodeId::parse("ep-101").unwrap()),
        show: Some(ShowId::parse("dailytech").unwrap()),
        placement: Some(Placement::Mid),
        event: Some(EventKind::Error),
        error_code: Some(405),
        listener,
        listener_period: ListenerPeriod::Month,
        ua: Some("Overcast/3.0".into()),
        app: Some("Overcast".into()),
        device: Some("Apple iPhone".into()),
        os: Some("ios".into()),
        country: RegionCode::parse("US-CA").map(|r| r.country()),
        region: RegionCode::parse("US-CA"),
        verdict: Verdict::Bot,
        reason: Some("ua_self_declared".into()),
        trace_id: Some("Root=1-abc".into()),
        sequence: Some(EdgeSeq {
            edge: EdgeId::generate(),
            seq: 3_000_000_000,
        }),
    };
    let bare = TrackingEvent {
        campaign: None,
        creative: None,
        episode: None,
        show: None,
        placement: None,
        event: None,
        error_code: None,
        ua: None,
        app: None,
        device: None,
        os: None,
        country: None,
        region: None,
        verdict: Verdict::Invalid,
        reason: Some("missing_campaign".into()),
        trace_id: None,
        sequence: None,
        ..full.clone()
    };
    [full, bare]
}

/// The keys of one JSON object line, in the order written.
fn keys_in_order(line: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(line);
    // A visitor that records map keys in order, values checked elsewhere.
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, Keys(&mut keys)).unwrap();
    keys
}

#[test]
fn the_encoder_writes_exactly_the_schema_fields_in_order_with_their_types() {
    let names: Vec<&str> = WIRE_FIELDS.iter().map(|f| f.name).collect();
    for ev in events() {
        let line = String::from_utf8(ev.to_ndjson()).unwrap();
        assert_eq!(keys_in_order(line.trim_end()), names, "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        for f in WIRE_FIELDS {
            match (&v[f.name], f.ty) {
                (Value::Null, _) => assert!(f.nullable, "{} is null in {line}", f.name),
                (Value::Number(n), WireType::Int | WireType::BigInt) => {
                    assert!(n.is_u64(), "{}", f.name)
                }
                (Value::String(_), WireType::String) => {}
                (other, ty) => panic!("{} is {other} but the schema says {ty:?}", f.name),
            }
        }
    }
    // Every nullable field is null in the bare event (a reason on a valid
    // one), so each flag is used.
    let [full, bare] = events();
    let bare: Value = serde_json::from_slice(&bare.to_ndjson()).unwrap();
    let valid = TrackingEvent {
        verdict: Verdict::Valid,
        reason: None,
        ..full
    };
    let valid: Value = serde_json::from_slice(&valid.to_ndjson()).unwrap();
    for f in WIRE_FIELDS {
        let null = if f.name == "reason" { &valid } else { &bare }[f.name].is_null();
        assert_eq!(null, f.nullable, "{}", f.name);
    }
}

#[test]
fn wire_format_doc_lists_the_schema_fields_and_types() {
    let doc = repo_file("docs/WIRE_FORMAT.md");
    let rows: Vec<(String, String)> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| field | type |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = WIRE_FIELDS
        .iter()
        .map(|f| {
            let null = if f.nullable { "/null" } else { "" };
            (f.name.to_owned(), format!("{}{null}", f.ty.as_str()))
        })
        .collect();
    assert_eq!(rows, want);
}

/// `- { Name: x, Type: y }` lines of the `Columns:` list under the
/// `EventsTable:` resource (the template writes them in flow style).
fn glue_columns(template: &str) -> Vec<(String, String)> {
    let table = template
        .split("\n  EventsTable:\n")
        .nth(1)
        .expect("the template has an EventsTable resource");
    let columns = table
        .split("Columns:\n")
        .nth(1)
        .expect("EventsTable has Columns");
    let line = regex::Regex::new(r"^\s+- \{ Name: (\w+), Type: (\w+) \}$").unwrap();
    columns
        .lines()
        .map_while(|l| line.captures(l))
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect()
}

#[test]
fn the_glue_table_maps_every_wire_field_to_its_type() {
    let got = glue_columns(&repo_file("deploy/sam/template.yaml"));
    let want: Vec<(String, String)> = WIRE_FIELDS
        .iter()
        .map(|f| (f.name.to_owned(), f.ty.glue().to_owned()))
        .collect();
    assert_eq!(got, want);
}
