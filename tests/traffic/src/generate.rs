//! Turning a plan into hits: listeners, ad plays through the VAST funnel,
//! re-fired pixels, bots and forged URLs, all drawn from one seeded RNG.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use earshot_domain::{EventKind, Placement, SignedFields, SigningKey, SigningKeys};
use serde::{Deserialize, Serialize};

use crate::agents::{pick_weighted, BOTS, COUNTRIES, PLAYERS};
use crate::plan::Plan;

/// What the edge must decide about a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitKind {
    /// A listener's correctly signed hit: counted (once per day and key).
    Valid,
    /// A bot's correctly signed hit: recorded as `bot`.
    Bot,
    /// A listener's hit with a bad signature: recorded as `invalid`.
    Forged(Forgery),
}

/// How a URL was forged. Each one is a different `reason` at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forgery {
    /// A signed URL with its creative swapped for another of the campaign
    /// (`bad_signature`).
    TamperedCreative,
    /// A made-up signature (`bad_signature`).
    BadSignature,
    /// A key id the edge does not have (`unknown_key`).
    UnknownKey,
    /// `k` and `sig` left out (`missing_signature`).
    MissingSignature,
}

impl Forgery {
    const ALL: [Forgery; 4] = [
        Forgery::TamperedCreative,
        Forgery::BadSignature,
        Forgery::UnknownKey,
        Forgery::MissingSignature,
    ];

    /// The `reason` the edge writes for it.
    pub fn reason(self) -> &'static str {
        match self {
            Forgery::TamperedCreative | Forgery::BadSignature => "bad_signature",
            Forgery::UnknownKey => "unknown_key",
            Forgery::MissingSignature => "missing_signature",
        }
    }
}

/// One pixel request and what it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// 0-based position in the run.
    pub seq: u64,
    /// When it is due, from the start of the run.
    pub offset: Duration,
    /// The query string, without `?`: a complete tracking URL's, macros filled.
    pub query: String,
    pub user_agent: Option<&'static str>,
    /// The listener's address, sent as `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// Sent as `CloudFront-Viewer-Country`.
    pub country: &'static str,
    /// Sent as `X-Amzn-Trace-Id`; unique within a run, so each recorded
    /// event can be matched to its hit.
    pub trace_id: String,
    /// Campaign and creative as the URL says (a tampered URL names the
    /// creative it was changed to).
    pub campaign: String,
    pub creative: String,
    pub episode: String,
    pub event: EventKind,
    /// Index of the listener (or bot) in the audience: one IP (or /64) and
    /// one user agent, so one listener id per UTC day.
    pub listener: u32,
    pub kind: HitKind,
}

impl Hit {
    /// The headers the player (or ad server) sends with the pixel request,
    /// lowercase names: the listener's address and country as a CDN in
    /// front of the edge passes them, the trace id, the user agent.
    pub fn request_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("x-forwarded-for", self.client_ip.to_string()),
            ("cloudfront-viewer-country", self.country.to_owned()),
            ("x-amzn-trace-id", self.trace_id.clone()),
        ];
        if let Some(ua) = self.user_agent {
            h.push(("user-agent", ua.to_owned()));
        }
        h
    }
}

/// A member of the audience.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// IPv4 address, or the /64 prefix of an IPv6 address (the host part
    /// changes per hit, as privacy addresses do: still one listener).
    net: IpAddr,
    user_agent: Option<&'static str>,
    country: &'static str,
}

/// Documentation ranges (RFC 5737): never routed, never a real listener.
const V4_NETS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
/// Usable hosts per /24 (.1 to .254).
const V4_HOSTS: u32 = 254;

/// The address of audience member `i`: documentation IPv4 first, then a
/// /64 of its own under 2001:db8::/32 (RFC 3849).
fn member_net(i: u32) -> IpAddr {
    let v4 = V4_NETS.len() as u32 * V4_HOSTS;
    if i < v4 {
        let n = V4_NETS[(i / V4_HOSTS) as usize];
        IpAddr::V4(Ipv4Addr::new(n[0], n[1], n[2], (i % V4_HOSTS + 1) as u8))
    } else {
        let j = i - v4;
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            (j >> 16) as u16,
            (j & 0xffff) as u16,
            0,
            0,
            0,
            0,
        ))
    }
}

/// One ad play: a listener hearing one creative in one episode.
struct Play {
    member: u32,
    campaign: usize,
    creative: usize,
    show: u32,
    episode: u32,
    placement: Placement,
    bot: bool,
    /// Events still to fire, in order.
    pending: VecDeque<EventKind>,
}

/// Yields the plan's hits in order. Same plan, same hits.
pub struct Generator {
    plan: Plan,
    key: Option<SigningKey>,
    rng: fastrand::Rng,
    members: Vec<Member>,
    plays: Vec<Play>,
    /// A hit to send again right after this one (a re-fired pixel).
    refire: Option<Hit>,
    next: u64,
    total: u64,
    run_tag: u32,
}

impl Generator {
    /// `keys`: the edge's `EARSHOT_SIGNING_KEYS`; the newest signs. Without
    /// keys URLs are unsigned (and the plan must not ask for forgeries).
    pub fn new(plan: &Plan, keys: &SigningKeys) -> anyhow::Result<Self> {
        plan.validate(keys)?;
        let mut rng = fastrand::Rng::with_seed(plan.seed);
        let audience = plan.listeners + plan.bots;
        let members = (0..audience)
            .map(|i| {
                let user_agent = if i < plan.listeners {
                    Some(PLAYERS[pick_weighted(&mut rng, PLAYERS, |p| p.weight)].user_agent)
                } else {
                    BOTS[pick_weighted(&mut rng, BOTS, |b| b.weight)].user_agent
                };
                Member {
                    net: member_net(i),
                    user_agent,
                    country: COUNTRIES[pick_weighted(&mut rng, COUNTRIES, |c| c.1)].0,
                }
            })
            .collect();
        let run_tag = (plan.seed ^ (plan.seed >> 32)) as u32;
        let mut g = Self {
            plan: plan.clone(),
            key: keys.newest().cloned(),
            rng,
            members,
            plays: Vec::new(),
            refire: None,
            next: 0,
            total: plan.total_hits(),
            run_tag,
        };
        for _ in 0..plan.open_plays {
            let p = g.new_play();
            g.plays.push(p);
        }
        Ok(g)
    }

    /// Every hit of the plan.
    pub fn all(plan: &Plan, keys: &SigningKeys) -> anyhow::Result<Vec<Hit>> {
        Ok(Self::new(plan, keys)?.collect())
    }

    fn new_play(&mut self) -> Play {
        let p = &self.plan;
        let m = &p.mix;
        let rng = &mut self.rng;
        let bot = p.bots > 0 && rng.f64() < m.bot_share;
        let member = if bot {
            p.listeners + rng.u32(..p.bots)
        } else {
            rng.u32(..p.listeners)
        };
        let campaign = pick_weighted(rng, &p.campaigns, |c| c.weight);
        let creative = rng.usize(..p.campaigns[campaign].creatives.len());
        let mut pending = VecDeque::from([EventKind::Impression]);
        if rng.f64() < m.error_rate {
            pending.push_back(EventKind::Error);
        } else if rng.f64() < m.start_rate {
            pending.push_back(EventKind::Start);
            for next in [
                EventKind::FirstQuartile,
                EventKind::Midpoint,
                EventKind::ThirdQuartile,
                EventKind::Complete,
            ] {
                if rng.f64() >= m.continue_rate {
                    break;
                }
                pending.push_back(next);
            }
            if rng.f64() < m.click_rate {
                pending.push_back(EventKind::Click);
            }
        }
        Play {
            member,
            campaign,
            creative,
            show: rng.u32(..p.shows),
            episode: rng.u32(..p.episodes_per_show),
            placement: [Placement::Pre, Placement::Mid, Placement::Post][rng.usize(..3)],
            bot,
            pending,
        }
    }

    fn hit_of(&mut self, play_idx: usize, event: EventKind) -> Hit {
        let seq = self.next;
        let play = &self.plays[play_idx];
        let camp = &self.plan.campaigns[play.campaign];
        let member = self.members[play.member as usize];
        let (member_idx, bot, placement) = (play.member, play.bot, play.placement);
        let campaign = camp.id.clone();
        let mut creative = camp.creatives[play.creative].clone();
        let show = format!("show-{}", play.show + 1);
        let episode = format!("{show}-ep-{}", play.episode + 1);
        let other_creative = (camp.creatives.len() > 1).then(|| {
            let k = (play.creative + 1 + self.rng.usize(..camp.creatives.len() - 1))
                % camp.creatives.len();
            camp.creatives[k].clone()
        });
        let fields = SignedFields {
            c: Some(&campaign),
            cr: Some(&creative),
            ep: Some(&episode),
            sh: Some(&show),
            pos: Some(placement.as_str()),
            ev: Some(event.as_str()),
        };
        let url = match &self.key {
            Some(k) => fields.tracking_url("", k),
            None => fields.unsigned_url(""),
        };
        let mut pairs: Vec<String> = url
            .trim_start_matches('?')
            .split('&')
            .map(str::to_owned)
            .collect();
        let forged = !bot && self.key.is_some() && self.rng.f64() < self.plan.mix.forged_share;
        let kind = if bot {
            HitKind::Bot
        } else if forged {
            let mut f = Forgery::ALL[self.rng.usize(..Forgery::ALL.len())];
            if f == Forgery::TamperedCreative && other_creative.is_none() {
                f = Forgery::BadSignature;
            }
            match f {
                Forgery::TamperedCreative => {
                    let to = other_creative.expect("checked above");
                    set_pair(&mut pairs, "cr", &to);
                    creative = to;
                }
                Forgery::BadSignature => {
                    let fake: String = (0..earshot_domain::signing::SIGNATURE_LEN)
                        .map(|_| self.rng.alphanumeric())
                        .collect();
                    set_pair(&mut pairs, "sig", &fake);
                }
                Forgery::UnknownKey => set_pair(&mut pairs, "k", "retired-2019"),
                Forgery::MissingSignature => {
                    pairs.retain(|p| !p.starts_with("k=") && !p.starts_with("sig="))
                }
            }
            HitKind::Forged(f)
        } else {
            HitKind::Valid
        };
        // The player fills the VAST macros.
        for p in pairs.iter_mut() {
            if p == "cb=[CACHEBUSTING]" {
                *p = format!("cb={}", self.rng.u32(10_000_000..100_000_000));
            } else if p == "err=[ERRORCODE]" {
                *p = format!("err={}", [402, 405, 900][self.rng.usize(..3)]);
            }
        }
        let client_ip = match member.net {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(
                    s[0],
                    s[1],
                    s[2],
                    s[3],
                    self.rng.u16(..),
                    self.rng.u16(..),
                    self.rng.u16(..),
                    self.rng.u16(1..),
                ))
            }
            v4 => v4,
        };
        Hit {
            seq,
            offset: self.plan.offset_of(seq),
            query: pairs.join("&"),
            user_agent: member.user_agent,
            client_ip,
            country: member.country,
            trace_id: format!("Root=1-{:08x}-{:024x}", self.run_tag, seq),
            campaign,
            creative,
            episode,
            event,
            listener: member_idx,
            kind,
        }
    }
}

fn set_pair(pairs: &mut [String], name: &str, value: &str) {
    let prefix = format!("{name}=");
    for p in pairs.iter_mut() {
        if p.starts_with(&prefix) {
            *p = format!(
                "{prefix}{}",
                form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
            );
        }
    }
}

impl Iterator for Generator {
    type Item = Hit;

    fn next(&mut self) -> Option<Hit> {
        if self.next >= self.total {
            return None;
        }
        if let Some(mut again) = self.refire.take() {
            again.seq = self.next;
            again.offset = self.plan.offset_of(self.next);
            again.trace_id = format!("Root=1-{:08x}-{:024x}", self.run_tag, self.next);
            self.next += 1;
            return Some(again);
        }
        let i = self.rng.usize(..self.plays.len());
        let event = match self.plays[i].pending.pop_front() {
            Some(e) => e,
            None => {
                self.plays[i] = self.new_play();
                self.plays[i]
                    .pending
                    .pop_front()
                    .expect("a new play starts with its impression")
            }
        };
        let hit = self.hit_of(i, event);
        if self.rng.f64() < self.plan.mix.duplicate_share {
            // Same URL (cache buster included) from the same listener: a
            // player retrying, or a prefetch followed by the real request.
            self.refire = Some(hit.clone());
        }
        self.next += 1;
        Some(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Amount, Mix};
    use earshot_domain::{PixelParams, UaClassifier, Verdict};

    fn keys() -> SigningKeys {
        SigningKeys::parse("k1:k1-secret-0123456789").unwrap()
    }

    fn plan(n: u64) -> Plan {
        Plan {
            amount: Amount::Total(n),
            listeners: 900,
            mix: Mix {
                forged_share: 0.1,
                duplicate_share: 0.1,
                bot_share: 0.1,
                ..Mix::default()
            },
            ..Plan::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_hits() {
        let a = Generator::all(&plan(500), &keys()).unwrap();
        let b = Generator::all(&plan(500), &keys()).unwrap();
        assert_eq!(a.len(), 500);
        assert_eq!(a, b);
        let other = Generator::all(
            &Plan {
                seed: 7,
                ..plan(500)
            },
            &keys(),
        )
        .unwrap();
        assert_ne!(a, other);
    }

    /// What the edge would decide (its own parsing and checking, the
    /// built-in user-agent list) agrees with what each hit claims.
    #[test]
    fn every_hit_gets_the_verdict_and_fields_it_claims() {
        let k = keys();
        let ua = UaClassifier::builtin();
        let hits = Generator::all(&plan(3000), &k).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut kinds = std::collections::HashMap::new();
        for h in &hits {
            assert!(seen.insert(h.trace_id.clone()), "trace ids are unique");
            let p = PixelParams::parse(&h.query);
            let checked = p.check(&k, true);
            let verdict = match (
                checked.invalid,
                ua.classify(h.user_agent).bot_reason.as_ref(),
            ) {
                (Some(_), _) => Verdict::Invalid,
                (None, Some(_)) => Verdict::Bot,
                (None, None) => Verdict::Valid,
            };
            let want = match h.kind {
                HitKind::Valid => Verdict::Valid,
                HitKind::Bot => Verdict::Bot,
                HitKind::Forged(f) => {
                    assert_eq!(
                        checked.invalid.unwrap().to_string(),
                        f.reason(),
                        "{}",
                        h.query
                    );
                    Verdict::Invalid
                }
            };
            assert_eq!(verdict, want, "{h:?}");
            assert_eq!(checked.campaign.unwrap().as_str(), h.campaign);
            assert_eq!(checked.creative.unwrap().as_str(), h.creative);
            assert_eq!(checked.episode.unwrap().as_str(), h.episode);
            assert_eq!(checked.event, Some(h.event));
            *kinds.entry(std::mem::discriminant(&h.kind)).or_insert(0) += 1;
        }
        assert_eq!(kinds.len(), 3, "valid, bot and forged hits all occur");
    }

    #[test]
    fn each_play_follows_the_funnel_in_order() {
        let hits = Generator::all(
            &Plan {
                open_plays: 1,
                mix: Mix {
                    duplicate_share: 0.0,
                    forged_share: 0.0,
                    ..Mix::default()
                },
                ..plan(2000)
            },
            &keys(),
        )
        .unwrap();
        // With one play at a time, hits come play by play.
        let order = |e: EventKind| EventKind::ALL.iter().position(|k| *k == e).unwrap();
        for w in hits.windows(2) {
            if w[1].event != EventKind::Impression {
                assert!(
                    order(w[1].event) > order(w[0].event),
                    "{:?} after {:?}",
                    w[1].event,
                    w[0].event
                );
                assert_eq!(w[1].listener, w[0].listener);
            }
        }
    }

    #[test]
    fn listeners_have_distinct_networks() {
        let nets: std::collections::HashSet<_> = (0..5000).map(member_net).collect();
        assert_eq!(nets.len(), 5000);
        assert_eq!(member_net(0), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(member_net(762), "2001:db8::".parse::<IpAddr>().unwrap());
    }
}
