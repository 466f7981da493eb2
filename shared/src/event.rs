//! The tracking event: one pixel hit as the edge records it, its kinds,
//! placements and verdicts. Its NDJSON wire format (schema version 1) is in
//! [`crate::wire`].

use std::fmt;
use std::str::FromStr;

use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

pub use crate::geo::{CountryCode, RegionCode};
use crate::ids::{CampaignId, CreativeId, EpisodeId, ShowId};
use crate::listener::{ListenerId, ListenerPeriod};
use crate::sequence::EdgeSeq;
use crate::wire::DecodeError;

/// User agents are kept for audit, but a hostile client can send megabytes.
/// 512 bytes holds every user agent in the OPAWG examples.
pub const MAX_UA_LEN: usize = 512;
/// W3C traceparent is 55 chars, an X-Ray header about 80; 128 leaves room.
pub const MAX_TRACE_ID_LEN: usize = 128;
/// Free-text fields (reason, app, device, os) are short labels.
pub const MAX_LABEL_LEN: usize = 128;

/// A VAST 4 tracking event (VAST 4.2 §3.14.1 names), plus the impression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Impression,
    Start,
    FirstQuartile,
    Midpoint,
    ThirdQuartile,
    Complete,
    Skip,
    Click,
    Error,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Impression,
        EventKind::Start,
        EventKind::FirstQuartile,
        EventKind::Midpoint,
        EventKind::ThirdQuartile,
        EventKind::Complete,
        EventKind::Skip,
        EventKind::Click,
        EventKind::Error,
    ];

    /// The VAST name, as used in `ev=` and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Start => "start",
            EventKind::FirstQuartile => "firstQuartile",
            EventKind::Midpoint => "midpoint",
            EventKind::ThirdQuartile => "thirdQuartile",
            EventKind::Complete => "complete",
            EventKind::Skip => "skip",
            EventKind::Click => "click",
            EventKind::Error => "error",
        }
    }
}

/// The value is not one of the VAST event names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}; expected one of impression, start, firstQuartile, midpoint, thirdQuartile, complete, skip, click, error")]
pub struct UnknownEvent(pub String);

impl FromStr for EventKind {
    type Err = UnknownEvent;
    /// VAST spells these in camelCase; ad servers are not always careful,
    /// so the match ignores ASCII case.
    fn from_str(s: &str) -> Result<Self, UnknownEvent> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownEvent(s.chars().take(MAX_LABEL_LEN).collect()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the episode the ad ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    Pre,
    Mid,
    Post,
}

impl Placement {
    pub const fn as_str(self) -> &'static str {
        match self {
            Placement::Pre => "pre",
            Placement::Mid => "mid",
            Placement::Post => "post",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement {0:?}; expected pre, mid or post")]
pub struct UnknownPlacement(pub String);

impl FromStr for Placement {
    type Err = UnknownPlacement;
    fn from_str(s: &str) -> Result<Self, UnknownPlacement> {
        [Placement::Pre, Placement::Mid, Placement::Post]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPlacement(s.chars().take(MAX_LABEL_LEN).collect()))
    }
}

/// Whether a hit can be billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Well-formed, correctly signed (when required), from a non-bot.
    Valid,
    /// Well-formed but from a bot: recorded, shown in reports, never billed.
    Bot,
    /// Malformed, forged or tampered: recorded, never billed.
    Invalid,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Bot => "bot",
            Verdict::Invalid => "invalid",
        }
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "valid" => Ok(Verdict::Valid),
            "bot" => Ok(Verdict::Bot),
            "invalid" => Ok(Verdict::Invalid),
            _ => Err(format!(
                "unknown verdict {s:?}; expected valid, bot or invalid"
            )),
        }
    }
}

/// One pixel hit, as recorded by the edge. Every GET yields exactly one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingEvent {
    /// UUIDv7: unique, and ordered by time, which keeps index inserts local.
    pub id: Uuid,
    /// When the edge received the hit, UTC, millisecond precision.
    pub ts: OffsetDateTime,
    pub campaign: Option<CampaignId>,
    pub creative: Option<CreativeId>,
    pub episode: Option<EpisodeId>,
    pub show: Option<ShowId>,
    pub placement: Option<Placement>,
    pub event: Option<EventKind>,
    /// VAST error code (`err=`), for `error` events.
    pub error_code: Option<u16>,
    pub listener: ListenerId,
    /// The period whose key made `listener`: ids of one listener are equal
    /// within it, and unrelated across periods.
    pub listener_period: ListenerPeriod,
    pub ua: Option<String>,
    pub app: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub country: Option<CountryCode>,
    /// The country's first-level subdivision, when the edge's data has it.
    pub region: Option<RegionCode>,
    pub verdict: Verdict,
    /// Why the verdict is not `valid` (see `docs/WIRE_FORMAT.md`).
    pub reason: Option<String>,
    pub trace_id: Option<String>,
    /// The edge that recorded the hit and its number there (`edge`, `seq`);
    /// `None` on lines of edges that did not number their events.
    pub sequence: Option<EdgeSeq>,
}

/// A [`TrackingEvent`]'s fields, borrowed: what the NDJSON encoder reads.
/// The edge builds one per hit from the request, the parsed query and the
/// user-agent cache, and encodes it with no owned event in between (an
/// owned one cost an allocation and a copy per text field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFields<'a> {
    pub id: Uuid,
    pub ts: OffsetDateTime,
    pub campaign: Option<&'a CampaignId>,
    pub creative: Option<&'a CreativeId>,
    pub episode: Option<&'a EpisodeId>,
    pub show: Option<&'a ShowId>,
    pub placement: Option<Placement>,
    pub event: Option<EventKind>,
    pub error_code: Option<u16>,
    pub listener: &'a ListenerId,
    pub listener_period: ListenerPeriod,
    pub ua: Option<&'a str>,
    pub app: Option<&'a str>,
    pub device: Option<&'a str>,
    pub os: Option<&'a str>,
    pub country: Option<CountryCode>,
    pub region: Option<RegionCode>,
    pub verdict: Verdict,
    pub reason: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub sequence: Option<EdgeSeq>,
}

impl EventFields<'_> {
    /// The owned event holding these fields.
    pub fn to_event(&self) -> TrackingEvent {
        TrackingEvent {
            id: self.id,
            ts: self.ts,
            campaign: self.campaign.cloned(),
            creative: self.creative.cloned(),
            episode: self.episode.cloned(),
            show: self.show.cloned(),
            placement: self.placement,
            event: self.event,
            error_code: self.error_code,
            listener: *self.listener,
            listener_period: self.listener_period,
            ua: self.ua.map(str::to_owned),
            app: self.app.map(str::to_owned),
            device: self.device.map(str::to_owned),
            os: self.os.map(str::to_owned),
            country: self.country,
            region: self.region,
            verdict: self.verdict,
            reason: self.reason.map(str::to_owned),
            trace_id: self.trace_id.map(str::to_owned),
            sequence: self.sequence,
        }
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl TrackingEvent {
    /// The event's fields, borrowed.
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            id: self.id,
            ts: self.ts,
            campaign: self.campaign.as_ref(),
            creative: self.creative.as_ref(),
            episode: self.episode.as_ref(),
            show: self.show.as_ref(),
            placement: self.placement,
            event: self.event,
            error_code: self.error_code,
            listener: &self.listener,
            listener_period: self.listener_period,
            ua: self.ua.as_deref(),
            app: self.app.as_deref(),
            device: self.device.as_deref(),
            os: self.os.as_deref(),
            country: self.country,
            region: self.region,
            verdict: self.verdict,
            reason: self.reason.as_deref(),
            trace_id: self.trace_id.as_deref(),
            sequence: self.sequence,
        }
    }

    /// The invariants the edge guarantees; a line that breaks them did not
    /// come from a correct edge and is not counted.
    pub(crate) fn check_consistency(&self) -> Result<(), DecodeError> {
        // The id is a UUIDv7 of ts: this is what makes (id, ts) unique mean
        // id unique in the partitioned events table.
        match self.id.get_timestamp() {
            Some(t) if self.id.get_version_num() == 7 => {
                let (secs, nanos) = t.to_unix();
                let id_ms = secs as i128 * 1000 + (nanos / 1_000_000) as i128;
                if id_ms != self.ts.unix_timestamp_nanos() / 1_000_000 {
                    return Err(DecodeError::Inconsistent("the id's timestamp is not ts"));
                }
            }
            _ => return Err(DecodeError::Inconsistent("the id is not a UUIDv7")),
        }
        if self.verdict != Verdict::Invalid {
            if self.campaign.is_none() {
                return Err(DecodeError::Inconsistent(
                    "a valid or bot event needs a campaign",
                ));
            }
            if self.creative.is_none() {
                return Err(DecodeError::Inconsistent(
                    "a valid or bot event needs a creative",
                ));
            }
            if self.event.is_none() {
                return Err(DecodeError::Inconsistent(
                    "a valid or bot event needs an event kind",
                ));
            }
        }
        if let Some(r) = self.region {
            if self.country != Some(r.country()) {
                return Err(DecodeError::Inconsistent("a region outside the country"));
            }
        }
        if self.verdict == Verdict::Valid && self.reason.is_some() {
            return Err(DecodeError::Inconsistent("a valid event has no reason"));
        }
        if self.verdict != Verdict::Valid && self.reason.is_none() {
            return Err(DecodeError::Inconsistent(
                "a bot or invalid event needs a reason",
            ));
        }
        Ok(())
    }

    /// The UTC day the event belongs to (counting, partitions, listener key).
    pub fn day(&self) -> time::Date {
        self.ts.to_offset(UtcOffset::UTC).date()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_ignore_case_but_print_canonically() {
        assert_eq!(
            "FIRSTQUARTILE".parse::<EventKind>().unwrap(),
            EventKind::FirstQuartile
        );
        assert_eq!(EventKind::ThirdQuartile.to_string(), "thirdQuartile");
        assert!("quarter".parse::<EventKind>().is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_to("héllo", 2), "h");
        assert_eq!(truncate_to("abc", 10), "abc");
    }
}
