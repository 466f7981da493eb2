//! The NDJSON wire format of the tracking event (schema version 1).
//!
//! One event is one JSON object on one line, ending in `\n`. The edge writes
//! it, Firehose lands it in S3, Athena and the loader read it, so the field
//! names and meanings below are a public, versioned contract (see
//! `docs/WIRE_FORMAT.md`). Additive changes keep `v = 1`; anything else bumps
//! it, and decoders refuse versions they do not know instead of guessing.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

use crate::event::{EventFields, EventKind, Placement, TrackingEvent, Verdict};
use crate::geo::{CountryCode, RegionCode};
use crate::ids::{CampaignId, CreativeId, EpisodeId, ShowId};
use crate::listener::{ListenerId, ListenerPeriod};
use crate::sequence::{EdgeId, EdgeSeq};

/// Version written into every line's `v` field.
pub const WIRE_SCHEMA_VERSION: u32 = 1;

/// The JSON type of a wire field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Int,
    /// An integer that may pass 2^31 (a sequence number): `int` on the
    /// wire, `bigint` in Glue.
    BigInt,
    String,
}

impl WireType {
    /// As docs/WIRE_FORMAT.md's table names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireType::Int | WireType::BigInt => "int",
            WireType::String => "string",
        }
    }

    /// The column type of the Glue (Athena) table over the raw events
    /// (`deploy/sam/template.yaml`). `ts` is a string there as on the wire;
    /// queries compare its `YYYY-MM-DD` prefix or read it with
    /// `from_iso8601_timestamp(ts)`.
    pub const fn glue(self) -> &'static str {
        match self {
            WireType::Int => "int",
            WireType::BigInt => "bigint",
            WireType::String => "string",
        }
    }
}

/// One field of a line: its name, type, and whether it may be `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireField {
    pub name: &'static str,
    pub ty: WireType,
    pub nullable: bool,
}

const fn field(name: &'static str, ty: WireType, nullable: bool) -> WireField {
    WireField { name, ty, nullable }
}

/// The schema of version 1: every field of a line, in the order the
/// encoders write them ([`EventFields::write_ndjson`] and `TrackingEvent`'s
/// `Serialize`). The one definition that docs/WIRE_FORMAT.md and the SAM
/// template's Glue table are checked against (`shared/tests/wire_schema.rs`);
/// a new field goes here first.
pub const WIRE_FIELDS: [WireField; 23] = {
    use WireType::{BigInt, Int, String as Str};
    [
        field("v", Int, false),
        field("id", Str, false),
        field("ts", Str, false),
        field("campaign", Str, true),
        field("creative", Str, true),
        field("episode", Str, true),
        field("show", Str, true),
        field("placement", Str, true),
        field("event", Str, true),
        field("error_code", Int, true),
        field("listener", Str, false),
        field("listener_period", Str, false),
        field("ua", Str, true),
        field("app", Str, true),
        field("device", Str, true),
        field("os", Str, true),
        field("country", Str, true),
        field("region", Str, true),
        field("verdict", Str, false),
        field("reason", Str, true),
        field("trace_id", Str, true),
        field("edge", Str, true),
        field("seq", BigInt, true),
    ]
};

impl EventFields<'_> {
    /// Appends the event as one NDJSON line (JSON, then `\n`), the fields of
    /// [`WIRE_FIELDS`] in their order: byte for byte
    /// what `serde_json` writes for `TrackingEvent`'s `Serialize` impl (a
    /// test holds them equal), written by hand because it runs for every hit and
    /// serde_json's per-byte escaping was a quarter of the edge's CPU.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        out.reserve(512);
        out.extend_from_slice(b"{\"v\":");
        push_u32(out, WIRE_SCHEMA_VERSION);
        out.extend_from_slice(b",\"id\":\"");
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(self.id.hyphenated().encode_lower(&mut id).as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        out.extend_from_slice(&ts_bytes(self.ts));
        out.push(b'"');
        // Ids, kinds, the listener and the country are validated ASCII that
        // never needs escaping; free text goes through `push_json_str`.
        ascii(out, b",\"campaign\":", self.campaign.map(|x| x.as_bytes()));
        ascii(out, b",\"creative\":", self.creative.map(|x| x.as_bytes()));
        ascii(out, b",\"episode\":", self.episode.map(|x| x.as_bytes()));
        ascii(out, b",\"show\":", self.show.map(|x| x.as_bytes()));
        ascii(
            out,
            b",\"placement\":",
            self.placement.map(|p| p.as_str().as_bytes()),
        );
        ascii(
            out,
            b",\"event\":",
            self.event.map(|e| e.as_str().as_bytes()),
        );
        out.extend_from_slice(b",\"error_code\":");
        match self.error_code {
            Some(c) => push_u32(out, u32::from(c)),
            None => out.extend_from_slice(b"null"),
        }
        ascii(out, b",\"listener\":", Some(self.listener.as_bytes()));
        ascii(
            out,
            b",\"listener_period\":",
            Some(self.listener_period.as_str().as_bytes()),
        );
        text(out, b",\"ua\":", self.ua);
        text(out, b",\"app\":", self.app);
        text(out, b",\"device\":", self.device);
        text(out, b",\"os\":", self.os);
        ascii(
            out,
            b",\"country\":",
            self.country.as_ref().map(|c| c.as_bytes()),
        );
        ascii(
            out,
            b",\"region\":",
            self.region.as_ref().map(|r| r.as_bytes()),
        );
        ascii(
            out,
            b",\"verdict\":",
            Some(self.verdict.as_str().as_bytes()),
        );
        text(out, b",\"reason\":", self.reason);
        text(out, b",\"trace_id\":", self.trace_id);
        match &self.sequence {
            Some(s) => {
                ascii(out, b",\"edge\":", Some(s.edge.as_bytes()));
                out.extend_from_slice(b",\"seq\":");
                out.extend_from_slice(itoa::Buffer::new().format(s.seq).as_bytes());
            }
            None => out.extend_from_slice(b",\"edge\":null,\"seq\":null"),
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Truncates to whole milliseconds in UTC, the precision of the wire format.
pub fn to_wire_precision(ts: OffsetDateTime) -> OffsetDateTime {
    let ts = ts.to_offset(UtcOffset::UTC);
    let ms = ts.millisecond();
    ts.replace_millisecond(ms).unwrap_or(ts)
}

/// Formats `2026-11-27T00:14:48.123Z`.
pub fn format_ts(ts: OffsetDateTime) -> String {
    let mut out = String::with_capacity(24);
    write_ts(&mut out, ts);
    out
}

/// Appends `format_ts(ts)` to `out` (no allocation beyond `out`'s own).
pub fn write_ts(out: &mut String, ts: OffsetDateTime) {
    let b = ts_bytes(ts);
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` into a stack buffer: this runs for every hit
/// and every loaded event, and `format!` costs several times more.
pub(crate) fn ts_bytes(ts: OffsetDateTime) -> [u8; 24] {
    let ts = ts.to_offset(UtcOffset::UTC);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, ts.year().clamp(0, 9999) as u32);
    put(5, 2, u8::from(ts.month()) as u32);
    put(8, 2, ts.day() as u32);
    put(11, 2, ts.hour() as u32);
    put(14, 2, ts.minute() as u32);
    put(17, 2, ts.second() as u32);
    put(20, 3, ts.millisecond() as u32);
    b
}

pub(crate) fn parse_ts(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(to_wire_precision)
        .map_err(|e| format!("ts {s:?} is not RFC 3339: {e}"))
}

impl Serialize for TrackingEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TrackingEvent", WIRE_FIELDS.len())?;
        st.serialize_field("v", &WIRE_SCHEMA_VERSION)?;
        st.serialize_field("id", &self.id)?;
        let ts = ts_bytes(self.ts);
        st.serialize_field("ts", std::str::from_utf8(&ts).unwrap_or_default())?;
        st.serialize_field("campaign", &self.campaign.as_ref().map(|x| x.as_str()))?;
        st.serialize_field("creative", &self.creative.as_ref().map(|x| x.as_str()))?;
        st.serialize_field("episode", &self.episode.as_ref().map(|x| x.as_str()))?;
        st.serialize_field("show", &self.show.as_ref().map(|x| x.as_str()))?;
        st.serialize_field("placement", &self.placement.map(Placement::as_str))?;
        st.serialize_field("event", &self.event.map(EventKind::as_str))?;
        st.serialize_field("error_code", &self.error_code)?;
        st.serialize_field("listener", self.listener.as_str())?;
        st.serialize_field("listener_period", self.listener_period.as_str())?;
        st.serialize_field("ua", &self.ua)?;
        st.serialize_field("app", &self.app)?;
        st.serialize_field("device", &self.device)?;
        st.serialize_field("os", &self.os)?;
        st.serialize_field("country", &self.country.as_ref().map(|c| c.as_str()))?;
        st.serialize_field("region", &self.region.as_ref().map(|r| r.as_str()))?;
        st.serialize_field("verdict", self.verdict.as_str())?;
        st.serialize_field("reason", &self.reason)?;
        st.serialize_field("trace_id", &self.trace_id)?;
        st.serialize_field("edge", &self.sequence.as_ref().map(|s| s.edge))?;
        st.serialize_field("seq", &self.sequence.as_ref().map(|s| s.seq))?;
        st.end()
    }
}

/// Appends `key` (the field's `,"name":`, a literal), then the value, a
/// validated ASCII id, kind or code that never needs escaping, as a JSON
/// string, or `null`. Bytes, not `&str`: the inline ids would check their
/// UTF-8 again for a `&str`, which makes encoding 40% slower. Inlined so that
/// each literal key is copied with fixed-size moves: a call taking the bare
/// name would copy the key's three pieces with three `memcpy` calls of
/// unknown length, a third more instructions per encode (callgrind).
#[inline(always)]
fn ascii(out: &mut Vec<u8>, key: &'static [u8], value: Option<&[u8]>) {
    out.extend_from_slice(key);
    match value {
        None => out.extend_from_slice(b"null"),
        Some(v) => {
            debug_assert!(!v.iter().copied().any(needs_escape), "{v:?}");
            out.push(b'"');
            out.extend_from_slice(v);
            out.push(b'"');
        }
    }
}

/// Appends `key`, then free text escaped as serde_json does, or `null`.
#[inline(always)]
fn text(out: &mut Vec<u8>, key: &'static [u8], value: Option<&str>) {
    out.extend_from_slice(key);
    match value {
        None => out.extend_from_slice(b"null"),
        Some(v) => push_json_str(out, v),
    }
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the eight bytes of `w` needs escaping (`needs_escape`),
/// without looking at them one by one. `(x - n·0x01…) & !x & 0x80…` is
/// non-zero exactly when some byte of `x` is below `n` (n ≤ 0x80; the
/// classic "hasless" test): below 0x20, or zero after XOR with `"` or `\\`.
fn any_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    (below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1))
        != 0
}

/// A JSON string as serde_json writes it: `"` and `\\` escaped, the short
/// escapes for backspace, form feed, newline, carriage return and tab,
/// `\\u00XX` (lowercase hex) for the other control characters, everything
/// else (DEL, non-ASCII UTF-8) as is.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping: user agents and
        // trace ids rarely do, and the byte-by-byte scan was most of
        // encoding's time.
        if let Some(w) = bytes.get(i..i + 8) {
            if !any_needs_escape(u64::from_le_bytes(w.try_into().expect("8 bytes"))) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            push_escaped(out, b);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The JSON escape of one byte that `needs_escape`.
fn push_escaped(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

/// What a line on the wire looks like to the decoder. Unknown fields are
/// ignored (additive changes within a version); missing optional fields are
/// null.
#[derive(Deserialize)]
struct WireIn<'a> {
    v: u32,
    id: Uuid,
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    #[serde(default)]
    campaign: Option<CampaignId>,
    #[serde(default)]
    creative: Option<CreativeId>,
    #[serde(default)]
    episode: Option<EpisodeId>,
    #[serde(default)]
    show: Option<ShowId>,
    #[serde(default, borrow)]
    placement: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    error_code: Option<u16>,
    listener: ListenerId,
    /// Absent on lines of edges that knew only daily ids.
    #[serde(default, borrow)]
    listener_period: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    ua: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default, borrow)]
    country: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    region: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    verdict: std::borrow::Cow<'a, str>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    /// Absent on lines of edges that did not number their events.
    #[serde(default)]
    edge: Option<EdgeId>,
    #[serde(default)]
    seq: Option<u64>,
}

/// Why a line could not be decoded. The message is what the quarantine
/// table records, so it names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty line")]
    Empty,
    #[error("not a v{WIRE_SCHEMA_VERSION} event: {0}")]
    Json(String),
    #[error("unsupported schema version {0}; this decoder reads v{WIRE_SCHEMA_VERSION}")]
    UnsupportedVersion(u32),
    #[error("bad field: {0}")]
    Field(String),
    #[error("inconsistent event: {0}")]
    Inconsistent(&'static str),
}

impl TrackingEvent {
    /// Appends the event as one NDJSON line (JSON, then `\n`): see
    /// [`EventFields::write_ndjson`].
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        self.fields().write_ndjson(out);
    }

    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_ndjson(&mut out);
        out
    }

    /// Decodes one line (with or without its trailing newline). Any bytes
    /// give a value or an error, never a panic.
    pub fn decode(line: &[u8]) -> Result<TrackingEvent, DecodeError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(DecodeError::Empty);
        }
        // One parse on the hot path; only when it fails is the version looked
        // at alone, so a v2 line says "unsupported version" rather than
        // whatever v2 changed.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        // A line checked as UTF-8 once, whole, spares serde_json checking
        // each of its strings on its own (a tenth of the loader's CPU, in
        // `perf`); a line that is not UTF-8 goes the byte way, which names
        // where it breaks.
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(line),
        };
        let w: WireIn<'_> = match parsed {
            Ok(w) => w,
            Err(e) => {
                return Err(match serde_json::from_slice::<VersionOnly>(line) {
                    Ok(VersionOnly { v }) if v != WIRE_SCHEMA_VERSION => {
                        DecodeError::UnsupportedVersion(v)
                    }
                    _ => DecodeError::Json(e.to_string()),
                })
            }
        };
        if w.v != WIRE_SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(w.v));
        }
        let placement = w
            .placement
            .map(|p| p.parse::<Placement>())
            .transpose()
            .map_err(|e| DecodeError::Field(e.to_string()))?;
        let event = w
            .event
            .map(|p| p.parse::<EventKind>())
            .transpose()
            .map_err(|e| DecodeError::Field(e.to_string()))?;
        let country = match w.country {
            None => None,
            Some(c) => Some(CountryCode::parse(&c).ok_or_else(|| {
                DecodeError::Field(format!("country {c:?} is not ISO 3166-1 alpha-2"))
            })?),
        };
        let region = match w.region {
            None => None,
            Some(r) => Some(RegionCode::parse(&r).ok_or_else(|| {
                DecodeError::Field(format!("region {r:?} is not an ISO 3166-2 code"))
            })?),
        };
        let listener_period = match w.listener_period {
            None => ListenerPeriod::Day,
            Some(p) => p
                .parse::<ListenerPeriod>()
                .map_err(|e| DecodeError::Field(e.to_string()))?,
        };
        let verdict = w.verdict.parse::<Verdict>().map_err(DecodeError::Field)?;
        let sequence = match (w.edge, w.seq) {
            (Some(edge), Some(seq)) if seq >= 1 => Some(EdgeSeq { edge, seq }),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(DecodeError::Field("seq must be at least 1".into())),
            _ => {
                return Err(DecodeError::Inconsistent(
                    "edge and seq come together or not at all",
                ))
            }
        };
        let ev = TrackingEvent {
            id: w.id,
            ts: parse_ts(&w.ts).map_err(DecodeError::Field)?,
            campaign: w.campaign,
            creative: w.creative,
            episode: w.episode,
            show: w.show,
            placement,
            event,
            error_code: w.error_code,
            listener: w.listener,
            listener_period,
            ua: w.ua,
            app: w.app,
            device: w.device,
            os: w.os,
            country,
            region,
            verdict,
            reason: w.reason,
            trace_id: w.trace_id,
            sequence,
        };
        ev.check_consistency()?;
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::ListenerId;

    pub(crate) fn sample() -> TrackingEvent {
        TrackingEvent {
            id: Uuid::parse_str("01a21d40-9432-7c3d-9e2f-0123456789ab").unwrap(),
            ts: time::macros::datetime!(2026-11-27 13:45:01.234 UTC),
            campaign: Some(CampaignId::parse("spring-sale").unwrap()),
            creative: Some(CreativeId::parse("cr_30s").unwrap()),
            episode: Some(EpisodeId::parse("ep.101").unwrap()),
            show: Some(ShowId::parse("dailytech").unwrap()),
            placement: Some(Placement::Mid),
            event: Some(EventKind::FirstQuartile),
            error_code: None,
            listener: ListenerId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            listener_period: ListenerPeriod::Month,
            ua: Some("Overcast/3.0 (+http://overcast.fm/; iOS podcast app)".into()),
            app: Some("Overcast".into()),
            device: Some("Apple iPhone".into()),
            os: Some("ios".into()),
            country: CountryCode::parse("de"),
            region: RegionCode::parse("DE-BE"),
            verdict: Verdict::Valid,
            reason: None,
            trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793".into()),
            sequence: Some(EdgeSeq {
                edge: EdgeId::parse("019ab3c2d4e57a1b8c9d0e1f2a3b4c5d").unwrap(),
                seq: 4_294_967_297,
            }),
        }
    }

    #[test]
    fn line_has_the_documented_fields_in_order() {
        let line = String::from_utf8(sample().to_ndjson()).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"id":"01a21d40-9432-7c3d-9e2f-0123456789ab","ts":"2026-11-27T13:45:01.234Z","#,
                r#""campaign":"spring-sale","creative":"cr_30s","episode":"ep.101","show":"dailytech","#,
                r#""placement":"mid","event":"firstQuartile","error_code":null,"#,
                r#""listener":"0123456789abcdef0123456789abcdef","listener_period":"month","#,
                r#""ua":"Overcast/3.0 (+http://overcast.fm/; iOS podcast app)","app":"Overcast","#,
                r#""device":"Apple iPhone","os":"ios","country":"DE","region":"DE-BE","#,
                r#""verdict":"valid","reason":null,"#,
                r#""trace_id":"Root=1-5759e988-bd862e3fe1be46a994272793","#,
                r#""edge":"019ab3c2d4e57a1b8c9d0e1f2a3b4c5d","seq":4294967297}"#,
                "\n"
            )
        );
    }

    #[test]
    fn the_hand_written_line_is_what_serde_json_writes() {
        let tricky = [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "controls \u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f} del \u{7f}",
            "unicode é 漢字 🎧 \u{2028}",
        ];
        for (i, t) in tricky.iter().enumerate() {
            let mut ev = sample();
            ev.ua = Some((*t).into());
            ev.app = (i % 2 == 0).then(|| format!("{t}!"));
            ev.device = None;
            ev.os = Some((*t).into());
            ev.verdict = Verdict::Bot;
            ev.reason = Some((*t).into());
            ev.trace_id = (i % 2 == 1).then(|| (*t).into());
            if i % 2 == 0 {
                ev.event = Some(EventKind::Error);
                ev.error_code = Some(402 + i as u16);
            }
            ev.episode = None;
            ev.country = None;
            ev.region = None;
            ev.listener_period = ListenerPeriod::Day;
            if i % 2 == 1 {
                ev.sequence = None;
            }
            let mut want = serde_json::to_vec(&ev).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(ev.to_ndjson()).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(TrackingEvent::decode(&ev.to_ndjson()).unwrap(), ev);
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does_wherever_the_special_byte_falls() {
        // The escape scan reads eight bytes at a time: put each kind of byte
        // at every offset of a string longer than two words.
        for special in [
            "\"", "\\", "\n", "\u{0}", "\u{1f}", " ", "\u{7f}", "é", "🎧",
        ] {
            for pos in 0..24 {
                let s = format!("{}{special}{}", "a".repeat(pos), "b".repeat(24 - pos));
                let mut out = Vec::new();
                push_json_str(&mut out, &s);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&s).unwrap(),
                    "{s:?}"
                );
            }
        }
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b'x', b'x', b'x', b, b'x', b'x', b'x', b'x']);
            assert_eq!(any_needs_escape(w), needs_escape(b), "byte {b:#x}");
        }
    }

    #[test]
    fn decoding_an_encoded_event_gives_it_back() {
        let ev = sample();
        assert_eq!(TrackingEvent::decode(&ev.to_ndjson()).unwrap(), ev);
        let mut invalid = sample();
        invalid.campaign = None;
        invalid.event = None;
        invalid.verdict = Verdict::Invalid;
        invalid.reason = Some("bad_campaign_id".into());
        assert_eq!(
            TrackingEvent::decode(&invalid.to_ndjson()).unwrap(),
            invalid
        );
    }

    #[test]
    fn decode_errors_name_what_is_wrong() {
        assert_eq!(TrackingEvent::decode(b"\n"), Err(DecodeError::Empty));
        assert!(matches!(
            TrackingEvent::decode(b"{\"v\":1"),
            Err(DecodeError::Json(_))
        ));
        let line = String::from_utf8(sample().to_ndjson()).unwrap();
        assert_eq!(
            TrackingEvent::decode(line.replace("\"v\":1", "\"v\":2").as_bytes()),
            Err(DecodeError::UnsupportedVersion(2))
        );
        // Not UTF-8 inside a string: an error naming the spot, as before
        // lines were checked whole; not UTF-8 outside one: a JSON error too.
        let ua_at = line.find("\"ua\":\"").unwrap() + 7;
        let mut not_utf8 = line.clone().into_bytes();
        not_utf8[ua_at] = 0xff;
        assert_eq!(
            TrackingEvent::decode(&not_utf8),
            Err(DecodeError::Json(format!(
                "invalid unicode code point at line 1 column {}",
                ua_at + 1
            )))
        );
        let mut outside = line.clone().into_bytes();
        outside.insert(1, 0xff);
        assert!(matches!(
            TrackingEvent::decode(&outside),
            Err(DecodeError::Json(_))
        ));
        let bad_campaign = line.replace("spring-sale", "spring sale");
        let err = TrackingEvent::decode(bad_campaign.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("campaign id has the character ' '"),
            "{err}"
        );
        let bad_event = line.replace("firstQuartile", "halfway");
        assert_eq!(
            TrackingEvent::decode(bad_event.as_bytes()).unwrap_err().to_string(),
            "bad field: unknown event \"halfway\"; expected one of impression, start, firstQuartile, midpoint, thirdQuartile, complete, skip, click, error"
        );
        let other_time = line.replace("13:45:01.234Z", "13:45:01.235Z");
        assert_eq!(
            TrackingEvent::decode(other_time.as_bytes()),
            Err(DecodeError::Inconsistent("the id's timestamp is not ts"))
        );
        let v4 = line.replace("-7c3d-", "-4c3d-");
        assert_eq!(
            TrackingEvent::decode(v4.as_bytes()),
            Err(DecodeError::Inconsistent("the id is not a UUIDv7"))
        );
        let valid_with_reason = line.replace("\"reason\":null", "\"reason\":\"x\"");
        assert_eq!(
            TrackingEvent::decode(valid_with_reason.as_bytes()),
            Err(DecodeError::Inconsistent("a valid event has no reason"))
        );
    }

    #[test]
    fn lines_without_the_later_fields_are_daily_ids_with_no_region() {
        // What an edge wrote before `listener_period` and `region` existed.
        let line = String::from_utf8(sample().to_ndjson()).unwrap();
        let old = line
            .replace(r#","listener_period":"month""#, "")
            .replace(r#","region":"DE-BE""#, "");
        let ev = TrackingEvent::decode(old.as_bytes()).unwrap();
        assert_eq!(
            (ev.listener_period, ev.region, ev.country),
            (ListenerPeriod::Day, None, CountryCode::parse("DE"))
        );
    }

    #[test]
    fn lines_without_edge_and_seq_are_unnumbered_and_half_a_pair_is_refused() {
        let line = String::from_utf8(sample().to_ndjson()).unwrap();
        let old = line.replace(
            r#","edge":"019ab3c2d4e57a1b8c9d0e1f2a3b4c5d","seq":4294967297"#,
            "",
        );
        assert_eq!(
            TrackingEvent::decode(old.as_bytes()).unwrap().sequence,
            None
        );
        let nulls = line.replace(
            r#""edge":"019ab3c2d4e57a1b8c9d0e1f2a3b4c5d","seq":4294967297"#,
            r#""edge":null,"seq":null"#,
        );
        assert_eq!(
            TrackingEvent::decode(nulls.as_bytes()).unwrap().sequence,
            None
        );
        let no_seq = line.replace(r#","seq":4294967297"#, "");
        assert_eq!(
            TrackingEvent::decode(no_seq.as_bytes()),
            Err(DecodeError::Inconsistent(
                "edge and seq come together or not at all"
            ))
        );
        let zero = line.replace(r#""seq":4294967297"#, r#""seq":0"#);
        assert_eq!(
            TrackingEvent::decode(zero.as_bytes())
                .unwrap_err()
                .to_string(),
            "bad field: seq must be at least 1"
        );
    }

    #[test]
    fn regions_and_periods_are_checked() {
        let line = String::from_utf8(sample().to_ndjson()).unwrap();
        let elsewhere = line.replace("DE-BE", "FR-75C");
        assert_eq!(
            TrackingEvent::decode(elsewhere.as_bytes()),
            Err(DecodeError::Inconsistent("a region outside the country"))
        );
        let no_country = line.replace(r#""country":"DE""#, r#""country":null"#);
        assert_eq!(
            TrackingEvent::decode(no_country.as_bytes()),
            Err(DecodeError::Inconsistent("a region outside the country"))
        );
        let bad = line.replace("DE-BE", "Berlin");
        assert_eq!(
            TrackingEvent::decode(bad.as_bytes())
                .unwrap_err()
                .to_string(),
            "bad field: region \"Berlin\" is not an ISO 3166-2 code"
        );
        let weekly = line.replace(
            r#""listener_period":"month""#,
            r#""listener_period":"week""#,
        );
        assert_eq!(
            TrackingEvent::decode(weekly.as_bytes())
                .unwrap_err()
                .to_string(),
            "bad field: unknown listener period \"week\"; expected day or month"
        );
    }

    #[test]
    fn timestamps_format_with_milliseconds_in_utc() {
        assert_eq!(
            format_ts(time::macros::datetime!(2026-01-02 03:04:05.006 UTC)),
            "2026-01-02T03:04:05.006Z"
        );
        assert_eq!(
            format_ts(time::macros::datetime!(2026-01-02 03:04:05.006 +02:00)),
            "2026-01-02T01:04:05.006Z"
        );
    }
}
