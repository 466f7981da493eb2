//! Tracking events for tests and benches, and the bytes they are stored as:
//! one builder instead of a struct literal per test file.

use earshot_domain::wire::to_wire_precision;
use earshot_domain::{
    CampaignId, CountryCode, CreativeId, EpisodeId, EventKind, ListenerId, ListenerPeriod,
    Placement, RegionCode, ShowId, TrackingEvent, Verdict,
};
use time::macros::datetime;
use time::OffsetDateTime;
use uuid::Uuid;

/// When an event happens unless its test says otherwise.
pub const DEFAULT_TS: OffsetDateTime = datetime!(2026-11-27 10:00:00.5 UTC);

/// The listener id numbered `n`: 16 hex digits that look random, as a real
/// id's (an HMAC output) do, then `n` in the other 16. The loader's keys are
/// led by an id's first 8 bytes (migration 32), so ids that all began with
/// zeros would leave that part of every key untested.
pub fn listener(n: u32) -> ListenerId {
    // SplitMix64's finalizer: distinct n, distinct and well-spread digits.
    let mut z = u64::from(n).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ListenerId::parse(&format!("{z:016x}{n:016x}")).expect("32 hex digits")
}

/// A UUIDv7 of `ts` (to the millisecond, as the edge makes them), its
/// other bits random.
pub fn v7_at(ts: OffsetDateTime) -> Uuid {
    let ms = (ts.unix_timestamp_nanos() / 1_000_000) as u64;
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        (ms % 1000) as u32 * 1_000_000,
    ))
}

/// A UUIDv7 of `ts` with `rand` for its other bits: the same id every run
/// of a seeded generator.
pub fn v7_seeded(ts: OffsetDateTime, rand: &[u8; 10]) -> Uuid {
    let ms = (ts.unix_timestamp_nanos() / 1_000_000) as u64;
    uuid::Builder::from_unix_timestamp_millis(ms, rand).into_uuid()
}

/// The reason the edge gives a verdict in tests: a self-declared bot, a bad
/// signature.
pub fn default_reason(verdict: Verdict) -> Option<String> {
    match verdict {
        Verdict::Valid => None,
        Verdict::Bot => Some("ua_self_declared".into()),
        Verdict::Invalid => Some("bad_signature".into()),
    }
}

/// A [`TrackingEvent`] under construction. [`event`] starts from a valid
/// impression of campaign `c1`, creative `cr1`, by listener 0 (a monthly
/// id, the edge's default), at [`DEFAULT_TS`]; every other field is empty.
#[derive(Debug, Clone)]
pub struct EventBuilder(TrackingEvent);

/// A valid impression of campaign `c1`, creative `cr1`, by listener 0, at
/// [`DEFAULT_TS`] with a fresh id of that instant.
pub fn event() -> EventBuilder {
    EventBuilder(TrackingEvent {
        id: v7_at(DEFAULT_TS),
        ts: DEFAULT_TS,
        campaign: Some(CampaignId::parse("c1").expect("an id")),
        creative: Some(CreativeId::parse("cr1").expect("an id")),
        episode: None,
        show: None,
        placement: None,
        event: Some(EventKind::Impression),
        error_code: None,
        listener: listener(0),
        listener_period: ListenerPeriod::Month,
        ua: None,
        app: None,
        device: None,
        os: None,
        country: None,
        region: None,
        verdict: Verdict::Valid,
        reason: None,
        trace_id: None,
        sequence: None,
    })
}

impl EventBuilder {
    /// At `ts` (to the wire's millisecond), with a fresh id of that instant.
    pub fn at(mut self, ts: OffsetDateTime) -> Self {
        self.0.ts = to_wire_precision(ts);
        self.0.id = v7_at(self.0.ts);
        self
    }

    /// At `ts` exactly, keeping the id.
    pub fn ts(mut self, ts: OffsetDateTime) -> Self {
        self.0.ts = ts;
        self
    }

    pub fn id(mut self, id: Uuid) -> Self {
        self.0.id = id;
        self
    }

    /// Numbered `seq` at edge `edge`.
    pub fn seq(mut self, edge: earshot_domain::EdgeId, seq: u64) -> Self {
        self.0.sequence = Some(earshot_domain::EdgeSeq { edge, seq });
        self
    }

    pub fn campaign(mut self, id: &str) -> Self {
        self.0.campaign = Some(CampaignId::parse(id).expect("a campaign id"));
        self
    }

    pub fn no_campaign(mut self) -> Self {
        self.0.campaign = None;
        self
    }

    pub fn creative(mut self, id: &str) -> Self {
        self.0.creative = Some(CreativeId::parse(id).expect("a creative id"));
        self
    }

    pub fn episode(mut self, id: Option<&str>) -> Self {
        self.0.episode = id.map(|e| EpisodeId::parse(e).expect("an episode id"));
        self
    }

    pub fn show(mut self, id: &str) -> Self {
        self.0.show = Some(ShowId::parse(id).expect("a show id"));
        self
    }

    pub fn placement(mut self, p: Placement) -> Self {
        self.0.placement = Some(p);
        self
    }

    pub fn kind(mut self, kind: EventKind) -> Self {
        self.0.event = Some(kind);
        self
    }

    pub fn error_code(mut self, code: Option<u16>) -> Self {
        self.0.error_code = code;
        self
    }

    /// The listener numbered `n` ([`listener`]).
    pub fn listener(self, n: u32) -> Self {
        self.listener_id(listener(n))
    }

    pub fn listener_id(mut self, id: ListenerId) -> Self {
        self.0.listener = id;
        self
    }

    pub fn listener_period(mut self, period: ListenerPeriod) -> Self {
        self.0.listener_period = period;
        self
    }

    /// The verdict, with [`default_reason`] as its reason.
    pub fn verdict(mut self, verdict: Verdict) -> Self {
        self.0.verdict = verdict;
        self.0.reason = default_reason(verdict);
        self
    }

    pub fn reason(mut self, reason: Option<&str>) -> Self {
        self.0.reason = reason.map(str::to_owned);
        self
    }

    pub fn ua(mut self, ua: Option<&str>) -> Self {
        self.0.ua = ua.map(str::to_owned);
        self
    }

    pub fn app(mut self, app: Option<&str>) -> Self {
        self.0.app = app.map(str::to_owned);
        self
    }

    pub fn device(mut self, device: Option<&str>) -> Self {
        self.0.device = device.map(str::to_owned);
        self
    }

    pub fn os(mut self, os: Option<&str>) -> Self {
        self.0.os = os.map(str::to_owned);
        self
    }

    /// The country; a region of another country is dropped.
    pub fn country(mut self, code: &str) -> Self {
        self.0.country = CountryCode::parse(code);
        if self
            .0
            .region
            .is_some_and(|r| Some(r.country()) != self.0.country)
        {
            self.0.region = None;
        }
        self
    }

    /// The region (`US-CA`) and its country.
    pub fn region(mut self, code: &str) -> Self {
        let region = RegionCode::parse(code).expect("an ISO 3166-2 code");
        self.0.country = Some(region.country());
        self.0.region = Some(region);
        self
    }

    pub fn trace_id(mut self, id: Option<String>) -> Self {
        self.0.trace_id = id;
        self
    }

    pub fn build(self) -> TrackingEvent {
        self.0
    }
}

/// The events as the edge writes them: one NDJSON line each.
pub fn ndjson(events: &[TrackingEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 480);
    for e in events {
        e.write_ndjson(&mut out);
    }
    out
}

/// `bytes` gzipped at the fastest level, as a gzip object for a test.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_at(bytes, 1)
}

/// `bytes` gzipped at `level` (0–9).
pub fn gzip_at(bytes: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    gz.write_all(bytes).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}
