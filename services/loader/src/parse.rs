//! Object bytes → events to load and lines to quarantine.

use std::borrow::Cow;
use std::io::Read;

use earshot_domain::{EdgeId, EdgeSeq, Heartbeat, TrackingEvent};
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

/// gzip's magic bytes (RFC 1952). Firehose gzips objects; moto and the
/// local sink do not, and keys do not say which: the bytes do.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A decompressed object larger than this is refused rather than risk the
/// loader's memory: Firehose objects are at most 128 MiB before gzip.
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;
/// Raw bytes kept of a quarantined line: enough to diagnose, bounded.
pub const MAX_QUARANTINED_LINE: usize = 64 * 1024;
/// Events further in the future than this are refused: the edge stamps
/// events with its own clock, so these are corrupt, and each distinct day
/// would create a partition.
pub const MAX_FUTURE_SKEW: Duration = Duration::days(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// 1-based line number within the (decompressed) object.
    pub line_no: u32,
    pub raw: Vec<u8>,
    pub reason: String,
    /// The line's `edge` and `seq`, and its `ts` if it reads as one, when
    /// it carries them: its number arrived, though the line is not stored
    /// (the sequence audit files it as quarantined, not missing).
    pub sequence: Option<(EdgeSeq, Option<OffsetDateTime>)>,
}

#[derive(Debug, Default)]
pub struct Parsed {
    /// The decoded events, each id once, in the object's order.
    pub events: Vec<TrackingEvent>,
    pub quarantined: Vec<Quarantined>,
    pub lines: u32,
    /// Lines repeating an event id already seen in this object.
    pub duplicates_in_object: u32,
    /// The numbers (and times) of those repeats, when they carry one.
    pub duplicate_seqs: Vec<(EdgeSeq, OffsetDateTime)>,
    /// Heartbeat lines: never events, kept for the sequence audit.
    pub heartbeats: Vec<Heartbeat>,
}

/// What a line that is not stored may still say about its number.
fn sequence_of(raw: &[u8]) -> Option<(EdgeSeq, Option<OffsetDateTime>)> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        edge: EdgeId,
        seq: u64,
        #[serde(default)]
        ts: Option<String>,
    }
    let s: SeqOnly = serde_json::from_slice(raw).ok()?;
    let ts = s.ts.and_then(|t| {
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
    });
    (s.seq >= 1).then_some((
        EdgeSeq {
            edge: s.edge,
            seq: s.seq,
        },
        ts,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object is gzip but does not decompress: {0}")]
    Gzip(std::io::Error),
    #[error("object decompresses to more than {MAX_OBJECT_BYTES} bytes")]
    TooLarge,
}

/// Decompresses if gzip; plain bytes are borrowed, not copied (an object
/// is up to 128 MiB).
pub fn decompress(bytes: &[u8]) -> Result<Cow<'_, [u8]>, ObjectError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(bytes.len() * 8);
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(ObjectError::Gzip)?;
        if out.len() as u64 > MAX_OBJECT_BYTES {
            return Err(ObjectError::TooLarge);
        }
        Ok(Cow::Owned(out))
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

fn has_nul(ev: &TrackingEvent) -> bool {
    [
        &ev.ua,
        &ev.app,
        &ev.device,
        &ev.os,
        &ev.reason,
        &ev.trace_id,
    ]
    .iter()
    .any(|f| f.as_deref().is_some_and(|s| s.contains('\0')))
}

/// Decodes every line. `now` bounds how far in the future an event may be;
/// `oldest` how far in the past (older than retention would be dropped at once).
pub fn parse(data: &[u8], now: OffsetDateTime, oldest: Date) -> Parsed {
    // Sized by the lines, not grown: growing by doubling held up to twice
    // the object's events at once.
    let lines_in = memchr::memchr_iter(b'\n', data).count() + 1;
    let mut out = Parsed {
        events: Vec::with_capacity(lines_in),
        ..Parsed::default()
    };
    // foldhash (random seed per set): SipHash is slow for a set per line.
    let mut seen: foldhash::HashSet<Uuid> = foldhash::HashSetExt::with_capacity(lines_in);
    let latest = now + MAX_FUTURE_SKEW;
    for (i, raw) in lines(data).enumerate() {
        let line_no = (i + 1) as u32;
        if raw.is_empty() || raw == b"\r" {
            continue; // the final newline, or blank lines between objects
        }
        out.lines += 1;
        let mut quarantine = |reason: String| {
            out.quarantined.push(Quarantined {
                line_no,
                raw: raw[..raw.len().min(MAX_QUARANTINED_LINE)].to_vec(),
                reason,
                sequence: sequence_of(raw),
            })
        };
        let ev = match TrackingEvent::decode(raw) {
            Ok(ev) => ev,
            // Heartbeats are rare (one a minute per edge): looked for only
            // where an event did not decode.
            Err(e) => {
                match Heartbeat::decode(raw) {
                    Ok(Some(h)) if h.ts <= latest => out.heartbeats.push(h),
                    Ok(Some(h)) => quarantine(format!(
                        "heartbeat ts {} is more than 2 days in the future",
                        earshot_domain::wire::format_ts(h.ts)
                    )),
                    Ok(None) => quarantine(e.to_string()),
                    Err(he) => quarantine(he.to_string()),
                }
                continue;
            }
        };
        if ev.ts > latest {
            quarantine(format!(
                "ts {} is more than 2 days in the future",
                earshot_domain::wire::format_ts(ev.ts)
            ));
            continue;
        }
        let day = ev.day();
        if day < oldest {
            quarantine(format!(
                "ts {} is older than the retention period",
                earshot_domain::wire::format_ts(ev.ts)
            ));
            continue;
        }
        if has_nul(&ev) {
            quarantine(
                "a text field holds a NUL character, which PostgreSQL text cannot store".into(),
            );
            continue;
        }
        if !seen.insert(ev.id) {
            out.duplicates_in_object += 1;
            if let Some(s) = ev.sequence {
                out.duplicate_seqs.push((s, ev.ts));
            }
            continue;
        }
        out.events.push(ev);
    }
    out
}

/// The pieces of `data` between newlines, as `data.split(|b| *b == b'\n')`
/// gives them, found by memchr a word at a time rather than byte by byte.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data)
        .chain(std::iter::once(data.len()))
        .map(move |end| {
            let line = &data[start..end];
            start = end + 1;
            line
        })
}

/// Decompresses and parses an object's bytes. A corrupt object is recorded
/// whole in quarantine, so it is neither lost nor retried forever.
pub fn parse_object(bytes: &[u8], now: OffsetDateTime, oldest: Date) -> Parsed {
    match decompress(bytes) {
        Ok(data) => parse(&data, now, oldest),
        Err(e) => Parsed {
            quarantined: vec![Quarantined {
                line_no: 0,
                raw: bytes[..bytes.len().min(MAX_QUARANTINED_LINE)].to_vec(),
                reason: e.to_string(),
                sequence: None,
            }],
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counting::tests::{event, L1};
    use earshot_domain::{EventKind, Verdict};
    use std::io::Write;
    use time::macros::datetime;

    /// Parses `data` at noon of the events' day, keeping the whole year.
    fn parse_at_noon(data: &[u8]) -> Parsed {
        parse(
            data,
            datetime!(2026-11-27 12:00 UTC),
            time::macros::date!(2026 - 01 - 01),
        )
    }

    #[test]
    fn lines_are_what_splitting_on_newlines_gives() {
        for data in [
            &b""[..],
            b"\n",
            b"\n\n",
            b"a",
            b"a\n",
            b"a\r\nb",
            b"\na\n\nb\n",
        ] {
            let want: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
            assert_eq!(lines(data).collect::<Vec<_>>(), want, "{data:?}");
        }
    }

    #[test]
    fn bad_lines_are_quarantined_with_their_line_number_and_reason() {
        let good = event(L1, EventKind::Impression, Verdict::Valid);
        let mut data = good.to_ndjson();
        data.extend_from_slice(b"not json\n");
        data.extend_from_slice(&good.to_ndjson()); // same id again
        data.extend_from_slice(b"\n");
        let p = parse_at_noon(&data);
        assert_eq!(p.lines, 3);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.duplicates_in_object, 1);
        assert_eq!(p.quarantined.len(), 1);
        assert_eq!(p.quarantined[0].line_no, 2);
        assert_eq!(p.quarantined[0].raw, b"not json");
        assert!(
            p.quarantined[0].reason.starts_with("not a v1 event"),
            "{}",
            p.quarantined[0].reason
        );
    }

    #[test]
    fn heartbeats_are_kept_apart_and_numbers_of_unstored_lines_are_kept() {
        let edge = earshot_domain::EdgeId::generate();
        let ev = |seq| earshot_testkit::event().listener(L1).seq(edge, seq).build();
        let beat = Heartbeat {
            edge,
            seq: 3,
            ts: datetime!(2026-11-27 10:01:00 UTC),
        };
        let first = ev(1);
        let refused = ev(2);
        let mut data = first.to_ndjson();
        data.extend_from_slice(&beat.to_ndjson());
        data.extend_from_slice(&first.to_ndjson()); // a repeat
        let mut bad = String::from_utf8(refused.to_ndjson()).unwrap();
        bad = bad.replace("\"verdict\":\"valid\"", "\"verdict\":\"perhaps\"");
        data.extend_from_slice(bad.as_bytes());
        data.extend_from_slice(b"{\"v\":1,\"type\":\"heartbeat\",\"edge\":\"x\"}\n");
        let p = parse_at_noon(&data);
        assert_eq!(p.lines, 5);
        assert_eq!(p.heartbeats, vec![beat]);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.duplicate_seqs, vec![(first.sequence.unwrap(), first.ts)]);
        assert_eq!(p.quarantined.len(), 2);
        assert_eq!(
            p.quarantined[0].sequence,
            Some((earshot_domain::EdgeSeq { edge, seq: 2 }, Some(refused.ts)))
        );
        assert!(
            p.quarantined[1]
                .reason
                .starts_with("not a v1 event: heartbeat: "),
            "{}",
            p.quarantined[1].reason
        );
        assert_eq!(p.quarantined[1].sequence, None);
    }

    #[test]
    fn events_outside_the_time_window_are_quarantined() {
        let ev = event(L1, EventKind::Impression, Verdict::Valid);
        for (now, oldest, reason) in [
            (
                datetime!(2026-11-20 00:00 UTC),
                time::macros::date!(2026 - 01 - 01),
                "ts 2026-11-27T10:00:00.500Z is more than 2 days in the future",
            ),
            (
                datetime!(2026-11-27 12:00 UTC),
                time::macros::date!(2026 - 11 - 28),
                "ts 2026-11-27T10:00:00.500Z is older than the retention period",
            ),
        ] {
            let p = parse(&ev.to_ndjson(), now, oldest);
            assert_eq!(p.quarantined[0].reason, reason);
        }
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello\n").unwrap();
        let bytes = gz.finish().unwrap();
        assert_eq!(decompress(&bytes).unwrap().as_ref(), b"hello\n");
        assert!(matches!(
            decompress(b"plain\n").unwrap(),
            Cow::Borrowed(b"plain\n")
        ));
        assert!(decompress(&[0x1f, 0x8b, 0, 1, 2]).is_err());
    }
}
