//! Edge ids, sequence numbers and heartbeats: what lets earshot show that
//! nothing was lost between the edge and PostgreSQL (docs/COUNTING.md,
//! "How we know nothing was lost").
//!
//! Each execution environment of the edge (a Lambda environment, a local
//! process) draws an [`EdgeId`] when it starts and numbers its events 1, 2,
//! 3, … in the order it hands them to its sink ([`EdgeSeq`], the wire
//! fields `edge` and `seq`). Every minute and at shutdown it also writes a
//! [`Heartbeat`] line through the same sink: the last number it gave out.
//! A heartbeat is never an event and never counted.

use std::fmt;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::hex::{hex_id_impls, Hex};
use crate::wire::{parse_ts, ts_bytes, DecodeError, WIRE_SCHEMA_VERSION};

/// Characters of an edge id: a UUIDv7 as 32 lower-case hex digits.
pub const EDGE_ID_LEN: usize = 32;

/// The `type` of a heartbeat line.
pub const HEARTBEAT_TYPE: &str = "heartbeat";

/// One execution environment of the edge, for as long as it lives: a
/// restarted environment is another edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(Hex<EDGE_ID_LEN>);

hex_id_impls!(EdgeId, "an edge id");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edge id must be {EDGE_ID_LEN} lower-case hex characters")]
pub struct BadEdgeId;

impl EdgeId {
    /// A new id: a UUIDv7 (its millisecond timestamp, then 74 random bits),
    /// so two environments started in the same millisecond still differ.
    pub fn generate() -> Self {
        let mut buf = [0u8; EDGE_ID_LEN];
        uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
        Self(Hex::encoded(buf))
    }

    pub fn parse(s: &str) -> Result<Self, BadEdgeId> {
        Hex::parse(s).map(Self).ok_or(BadEdgeId)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The hex digits, without the UTF-8 check `as_str` makes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an event comes from: its edge and its number there (1, 2, 3, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EdgeSeq {
    pub edge: EdgeId,
    pub seq: u64,
}

/// An edge's statement "I have numbered events up to `seq`", at `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub edge: EdgeId,
    /// The last sequence number given out; 0 before the first event.
    pub seq: u64,
    /// When it was written, UTC, millisecond precision.
    pub ts: OffsetDateTime,
}

impl Heartbeat {
    /// Appends `{"v":1,"type":"heartbeat","edge":"…","seq":N,"ts":"…"}\n`.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(itoa::Buffer::new().format(WIRE_SCHEMA_VERSION).as_bytes());
        out.extend_from_slice(b",\"type\":\"heartbeat\",\"edge\":\"");
        out.extend_from_slice(self.edge.as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        out.extend_from_slice(b",\"ts\":\"");
        out.extend_from_slice(&ts_bytes(self.ts));
        out.extend_from_slice(b"\"}\n");
    }

    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_ndjson(&mut out);
        out
    }

    /// Decodes a heartbeat line; `Ok(None)` when the line is not one (no
    /// `"type":"heartbeat"`), so the caller reports its own error for it.
    pub fn decode(line: &[u8]) -> Result<Option<Heartbeat>, DecodeError> {
        #[derive(Deserialize)]
        struct TypeOnly<'a> {
            #[serde(rename = "type", default, borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct HeartbeatIn<'a> {
            v: u32,
            edge: EdgeId,
            seq: u64,
            #[serde(borrow)]
            ts: std::borrow::Cow<'a, str>,
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match serde_json::from_slice::<TypeOnly<'_>>(line) {
            Ok(TypeOnly { kind: Some(k) }) if k == HEARTBEAT_TYPE => {}
            _ => return Ok(None),
        }
        let h: HeartbeatIn<'_> = serde_json::from_slice(line)
            .map_err(|e| DecodeError::Json(format!("heartbeat: {e}")))?;
        if h.v != WIRE_SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(h.v));
        }
        Ok(Some(Heartbeat {
            edge: h.edge,
            seq: h.seq,
            ts: parse_ts(&h.ts).map_err(DecodeError::Field)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_edge_ids_parse_and_differ() {
        let a = EdgeId::generate();
        let b = EdgeId::generate();
        assert_ne!(a, b);
        assert_eq!(EdgeId::parse(a.as_str()), Ok(a));
        assert_eq!(
            EdgeId::parse("0123456789ABCDEF0123456789abcdef"),
            Err(BadEdgeId)
        );
        assert_eq!(EdgeId::parse("0123"), Err(BadEdgeId));
    }

    #[test]
    fn a_heartbeat_line_has_the_documented_shape_and_decodes_back() {
        let h = Heartbeat {
            edge: EdgeId::parse("019ab3c2d4e57a1b8c9d0e1f2a3b4c5d").unwrap(),
            seq: 1234,
            ts: time::macros::datetime!(2026-11-27 13:45:01.234 UTC),
        };
        let line = h.to_ndjson();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"v\":1,\"type\":\"heartbeat\",\"edge\":\"019ab3c2d4e57a1b8c9d0e1f2a3b4c5d\",\"seq\":1234,\"ts\":\"2026-11-27T13:45:01.234Z\"}\n"
        );
        assert_eq!(Heartbeat::decode(&line), Ok(Some(h)));
        assert_eq!(Heartbeat::decode(b"{\"v\":1,\"id\":\"x\"}"), Ok(None));
        assert_eq!(Heartbeat::decode(b"not json"), Ok(None));
        assert!(matches!(
            Heartbeat::decode(b"{\"v\":1,\"type\":\"heartbeat\",\"edge\":\"x\",\"seq\":1,\"ts\":\"2026-11-27T13:45:01.234Z\"}"),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(
            Heartbeat::decode(
                String::from_utf8(line)
                    .unwrap()
                    .replace("\"v\":1", "\"v\":2")
                    .as_bytes()
            ),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }
}
