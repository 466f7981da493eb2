//! The pixel's query string: parsed without ever failing, then checked into
//! typed fields and a verdict reason.

use std::borrow::Cow;

use crate::event::{EventKind, Placement};
use crate::ids::{CampaignId, CreativeId, EpisodeId, ShowId};
use crate::signing::{SignatureError, SignedFields, SigningKeys};

/// Query strings longer than this are not parsed (the hit is recorded as
/// invalid). Real pixel URLs are a few hundred bytes; CloudFront caps URLs
/// at 8,192 bytes, so nothing legitimate is longer.
pub const MAX_QUERY_LEN: usize = 8192;

/// The pixel's parameters, percent-decoded. Unknown parameters are ignored;
/// a repeated parameter keeps its first value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PixelParams<'a> {
    pub c: Option<Cow<'a, str>>,
    pub cr: Option<Cow<'a, str>>,
    pub ep: Option<Cow<'a, str>>,
    pub sh: Option<Cow<'a, str>>,
    pub pos: Option<Cow<'a, str>>,
    pub ev: Option<Cow<'a, str>>,
    pub err: Option<Cow<'a, str>>,
    pub k: Option<Cow<'a, str>>,
    pub sig: Option<Cow<'a, str>>,
    pub cb: Option<Cow<'a, str>>,
    /// The query string was over [`MAX_QUERY_LEN`] and was not parsed.
    pub too_long: bool,
}

/// Why a hit is invalid. `as_str` gives the `reason` written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("query_too_long")]
    QueryTooLong,
    #[error("missing_campaign")]
    MissingCampaign,
    #[error("bad_campaign_id")]
    BadCampaignId,
    #[error("missing_creative")]
    MissingCreative,
    #[error("bad_creative_id")]
    BadCreativeId,
    #[error("bad_episode_id")]
    BadEpisodeId,
    #[error("bad_show_id")]
    BadShowId,
    #[error("bad_placement")]
    BadPlacement,
    #[error("missing_event")]
    MissingEvent,
    #[error("unknown_event")]
    UnknownEvent,
    #[error("{0}")]
    Signature(SignatureError),
}

impl InvalidReason {
    /// The `reason` on the wire (the `Display` form, without formatting:
    /// this runs for every invalid hit).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::QueryTooLong => "query_too_long",
            Self::MissingCampaign => "missing_campaign",
            Self::BadCampaignId => "bad_campaign_id",
            Self::MissingCreative => "missing_creative",
            Self::BadCreativeId => "bad_creative_id",
            Self::BadEpisodeId => "bad_episode_id",
            Self::BadShowId => "bad_show_id",
            Self::BadPlacement => "bad_placement",
            Self::MissingEvent => "missing_event",
            Self::UnknownEvent => "unknown_event",
            Self::Signature(e) => e.as_str(),
        }
    }
}

/// The typed fields of a hit, plus the first reason it is invalid, if any.
/// Fields that parse are kept even on an invalid hit, so a forged hit still
/// shows up against the campaign it claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedHit {
    pub campaign: Option<CampaignId>,
    pub creative: Option<CreativeId>,
    pub episode: Option<EpisodeId>,
    pub show: Option<ShowId>,
    pub placement: Option<Placement>,
    pub event: Option<EventKind>,
    pub error_code: Option<u16>,
    pub invalid: Option<InvalidReason>,
}

fn non_empty<'s>(v: &'s Option<Cow<'_, str>>) -> Option<&'s str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl<'a> PixelParams<'a> {
    /// Parses a raw query string (without `?`). Never fails: anything that is
    /// not a known `name=value` pair is ignored.
    pub fn parse(query: &'a str) -> Self {
        if query.len() > MAX_QUERY_LEN {
            return Self {
                too_long: true,
                ..Self::default()
            };
        }
        let mut p = Self::default();
        // form_urlencoded's rules, pair by pair: a pair without `%` or `+`
        // (nearly every one) is borrowed as is instead of going through its
        // decoder, which was a tenth of the edge's CPU per hit. One
        // vectorized scan tells whether any pair is encoded at all, and the
        // pairs are cut at `&`s found the same way: a byte-by-byte loop over
        // the query was most of the parse's instructions. `&` and `=` are
        // ASCII, so every cut below is on a character boundary.
        let bytes = query.as_bytes();
        let any_encoded = memchr::memchr2(b'%', b'+', bytes).is_some();
        let mut start = 0;
        for end in memchr::memchr_iter(b'&', bytes).chain(std::iter::once(bytes.len())) {
            if end > start {
                let pair = &bytes[start..end];
                let (name, value) = if any_encoded && memchr::memchr2(b'%', b'+', pair).is_some() {
                    form_urlencoded::parse(pair).next().unwrap_or_default()
                } else {
                    // Names are a few bytes: a plain search beats a
                    // vectorized one here.
                    match pair.iter().position(|&b| b == b'=') {
                        Some(i) => (
                            Cow::Borrowed(&query[start..start + i]),
                            Cow::Borrowed(&query[start + i + 1..end]),
                        ),
                        None => (Cow::Borrowed(&query[start..end]), Cow::Borrowed("")),
                    }
                };
                p.keep_first(&name, value);
            }
            start = end + 1;
        }
        p
    }

    /// Stores `value` under a known parameter `name` unless it already has
    /// one (the first value wins); unknown names are ignored.
    fn keep_first(&mut self, name: &str, value: Cow<'a, str>) {
        let slot = match name.as_bytes() {
            b"c" => &mut self.c,
            b"cr" => &mut self.cr,
            b"ep" => &mut self.ep,
            b"sh" => &mut self.sh,
            b"pos" => &mut self.pos,
            b"ev" => &mut self.ev,
            b"err" => &mut self.err,
            b"k" => &mut self.k,
            b"sig" => &mut self.sig,
            b"cb" => &mut self.cb,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }

    /// The fields covered by the signature, as the ad server signed them.
    pub fn signed_fields(&self) -> SignedFields<'_> {
        SignedFields {
            c: non_empty(&self.c),
            cr: non_empty(&self.cr),
            ep: non_empty(&self.ep),
            sh: non_empty(&self.sh),
            pos: non_empty(&self.pos),
            ev: non_empty(&self.ev),
        }
    }

    /// Types every field and decides whether the hit is invalid. The first
    /// problem found, in parameter order, is the reason; the signature is
    /// checked last, and only when `require_signature` is set.
    pub fn check(&self, keys: &SigningKeys, require_signature: bool) -> CheckedHit {
        let mut hit = CheckedHit::default();
        let mut first: Option<InvalidReason> = None;
        let mut fail = |r: InvalidReason| {
            first.get_or_insert(r);
        };
        if self.too_long {
            fail(InvalidReason::QueryTooLong);
        }
        match non_empty(&self.c) {
            None => fail(InvalidReason::MissingCampaign),
            Some(c) => match CampaignId::parse(c) {
                Ok(id) => hit.campaign = Some(id),
                Err(_) => fail(InvalidReason::BadCampaignId),
            },
        }
        match non_empty(&self.cr) {
            None => fail(InvalidReason::MissingCreative),
            Some(c) => match CreativeId::parse(c) {
                Ok(id) => hit.creative = Some(id),
                Err(_) => fail(InvalidReason::BadCreativeId),
            },
        }
        if let Some(e) = non_empty(&self.ep) {
            match EpisodeId::parse(e) {
                Ok(id) => hit.episode = Some(id),
                Err(_) => fail(InvalidReason::BadEpisodeId),
            }
        }
        if let Some(s) = non_empty(&self.sh) {
            match ShowId::parse(s) {
                Ok(id) => hit.show = Some(id),
                Err(_) => fail(InvalidReason::BadShowId),
            }
        }
        if let Some(p) = non_empty(&self.pos) {
            match p.parse::<Placement>() {
                Ok(pl) => hit.placement = Some(pl),
                Err(_) => fail(InvalidReason::BadPlacement),
            }
        }
        match non_empty(&self.ev) {
            None => fail(InvalidReason::MissingEvent),
            Some(e) => match e.parse::<EventKind>() {
                Ok(k) => hit.event = Some(k),
                Err(_) => fail(InvalidReason::UnknownEvent),
            },
        }
        if hit.event == Some(EventKind::Error) {
            // An unfilled macro ("[ERRORCODE]") or junk leaves the code empty;
            // the error event itself still happened and is valid.
            hit.error_code = non_empty(&self.err).and_then(|e| e.parse::<u16>().ok());
        }
        if require_signature && first.is_none() {
            if let Err(e) = keys.verify_fields(
                non_empty(&self.k),
                non_empty(&self.sig),
                &self.signed_fields(),
            ) {
                first = Some(InvalidReason::Signature(e));
            }
        }
        hit.invalid = first;
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_as_str_is_its_display_form() {
        use InvalidReason as R;
        let all = [
            R::QueryTooLong,
            R::MissingCampaign,
            R::BadCampaignId,
            R::MissingCreative,
            R::BadCreativeId,
            R::BadEpisodeId,
            R::BadShowId,
            R::BadPlacement,
            R::MissingEvent,
            R::UnknownEvent,
            R::Signature(SignatureError::Missing),
            R::Signature(SignatureError::MissingKeyId),
            R::Signature(SignatureError::UnknownKey),
            R::Signature(SignatureError::Bad),
        ];
        for r in all {
            assert_eq!(r.as_str(), r.to_string());
        }
    }

    fn keys() -> SigningKeys {
        SigningKeys::parse("k1:k1-secret-0123456789").unwrap()
    }

    fn signed(query: &str) -> String {
        let p = PixelParams::parse(query);
        let sig = keys()
            .newest()
            .unwrap()
            .sign(&p.signed_fields().canonical());
        format!("{query}&k=k1&sig={sig}")
    }

    #[test]
    fn a_complete_signed_hit_is_valid() {
        let q = signed("c=camp1&cr=cr1&ep=e1&sh=s1&pos=pre&ev=start");
        let hit = PixelParams::parse(&q).check(&keys(), true);
        assert_eq!(hit.invalid, None);
        assert_eq!(hit.campaign.unwrap().as_str(), "camp1");
        assert_eq!(hit.event, Some(EventKind::Start));
        assert_eq!(hit.placement, Some(Placement::Pre));
    }

    #[test]
    fn each_problem_gives_its_own_reason() {
        let k = keys();
        let cases = [
            ("cr=cr1&ev=start", InvalidReason::MissingCampaign),
            ("c=a%20b&cr=cr1&ev=start", InvalidReason::BadCampaignId),
            ("c=c1&ev=start", InvalidReason::MissingCreative),
            ("c=c1&cr=cr%2F1&ev=start", InvalidReason::BadCreativeId),
            ("c=c1&cr=cr1&ep=%00&ev=start", InvalidReason::BadEpisodeId),
            ("c=c1&cr=cr1&sh=s%201&ev=start", InvalidReason::BadShowId),
            (
                "c=c1&cr=cr1&pos=middle&ev=start",
                InvalidReason::BadPlacement,
            ),
            ("c=c1&cr=cr1", InvalidReason::MissingEvent),
            ("c=c1&cr=cr1&ev=halfway", InvalidReason::UnknownEvent),
            (
                "c=c1&cr=cr1&ev=start",
                InvalidReason::Signature(SignatureError::Missing),
            ),
            (
                "c=c1&cr=cr1&ev=start&sig=x",
                InvalidReason::Signature(SignatureError::MissingKeyId),
            ),
            (
                "c=c1&cr=cr1&ev=start&k=k9&sig=x",
                InvalidReason::Signature(SignatureError::UnknownKey),
            ),
            (
                "c=c1&cr=cr1&ev=start&k=k1&sig=AAAAAAAAAAAAAAAAAAAAAA",
                InvalidReason::Signature(SignatureError::Bad),
            ),
        ];
        for (q, reason) in cases {
            assert_eq!(
                PixelParams::parse(q).check(&k, true).invalid,
                Some(reason),
                "{q}"
            );
        }
        let long = format!("c={}", "a".repeat(MAX_QUERY_LEN));
        assert_eq!(
            PixelParams::parse(&long).check(&k, false).invalid,
            Some(InvalidReason::QueryTooLong)
        );
    }

    #[test]
    fn tampering_with_a_signed_field_invalidates_but_unsigned_macros_do_not() {
        let q = signed("c=camp1&cr=cr1&ev=error");
        let with_err = format!("{q}&err=405&cb=12345");
        let hit = PixelParams::parse(&with_err).check(&keys(), true);
        assert_eq!(hit.invalid, None);
        assert_eq!(hit.error_code, Some(405));
        let tampered = q.replace("cr=cr1", "cr=cr2");
        let hit = PixelParams::parse(&tampered).check(&keys(), true);
        assert_eq!(
            hit.invalid,
            Some(InvalidReason::Signature(SignatureError::Bad))
        );
        // Fields still typed, so the forged hit is attributed to its claimed campaign.
        assert_eq!(hit.campaign.unwrap().as_str(), "camp1");
    }

    #[test]
    fn signatures_are_not_checked_when_not_required() {
        let hit = PixelParams::parse("c=c1&cr=cr1&ev=click").check(&SigningKeys::default(), false);
        assert_eq!(hit.invalid, None);
    }

    #[test]
    fn parsing_follows_form_urlencoded_exactly() {
        let queries = [
            "c=a&cr=b&ev=impression",
            "c=a%2Bb&cr=x+y&ev=start&&sig=abc=def",
            "c&cr=&ev=%zz&ep=%E2%82%AC&sh=%FF",
            "%63=encoded-name&c=second",
            "=novalue&k=k1&cb=%5BCACHEBUSTING%5D&pos=pre",
            "",
            "&&&",
        ];
        for q in queries {
            let mine = PixelParams::parse(q);
            let mut want = PixelParams::default();
            // The same slots, fed by form_urlencoded's own parser.
            for (name, value) in form_urlencoded::parse(q.as_bytes()) {
                want.keep_first(&name, value);
            }
            assert_eq!(mine, want, "{q}");
        }
    }

    #[test]
    fn first_value_wins_and_unknown_params_are_ignored() {
        let p = PixelParams::parse("c=first&c=second&zzz=1&&=&cr");
        assert_eq!(p.c.as_deref(), Some("first"));
        assert_eq!(p.cr.as_deref(), Some(""));
    }
}
