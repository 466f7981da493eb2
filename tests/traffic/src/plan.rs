//! What to send: campaigns, audience, behaviour and pace.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use earshot_domain::{CampaignId, CreativeId, SigningKeys};
use serde::{Deserialize, Serialize};

/// A campaign and the creatives it runs. Ids are used in pixel URLs as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub id: String,
    pub creatives: Vec<String>,
    /// Relative share of ad plays.
    pub weight: u32,
}

impl CampaignSpec {
    /// `ID:CR1,CR2[@WEIGHT]`, as the command line takes it.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (body, weight) = match s.rsplit_once('@') {
            Some((b, w)) => (b, w.parse().with_context(|| format!("weight in {s:?}"))?),
            None => (s, 1),
        };
        let (id, creatives) = body
            .split_once(':')
            .with_context(|| format!("{s:?} is not CAMPAIGN:CREATIVE[,CREATIVE...][@WEIGHT]"))?;
        Ok(Self {
            id: id.to_owned(),
            creatives: creatives.split(',').map(str::to_owned).collect(),
            weight,
        })
    }
}

/// How listeners behave. Probabilities are per ad play (session) or per hit
/// as named; the expected report is computed from what was actually drawn,
/// so these only shape the traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// Share of ad plays made by bots (bot user agents or none).
    pub bot_share: f64,
    /// Share of hits whose signature is forged, tampered, unknown or missing.
    pub forged_share: f64,
    /// Share of hits the player fires again (same URL, same listener).
    pub duplicate_share: f64,
    /// Plays where the player reports a VAST error instead of starting.
    pub error_rate: f64,
    /// Plays that start after the impression.
    pub start_rate: f64,
    /// Chance of going on to each next quartile (and to complete).
    pub continue_rate: f64,
    /// Plays with a click (companion banner or show notes link).
    pub click_rate: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            bot_share: 0.05,
            forged_share: 0.02,
            duplicate_share: 0.05,
            error_rate: 0.01,
            start_rate: 0.92,
            continue_rate: 0.9,
            click_rate: 0.02,
        }
    }
}

/// A peak: `factor` times the base rate for `seconds`, starting `at`
/// seconds into the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Burst {
    pub at: f64,
    pub seconds: f64,
    pub factor: f64,
}

/// How much to send.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// Exactly this many hits, at the rate.
    Total(u64),
    /// As many hits as the rate (and burst) give in this many seconds.
    Seconds(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Same seed, same plan: same hits, in the same order, at the same offsets.
    pub seed: u64,
    pub campaigns: Vec<CampaignSpec>,
    pub shows: u32,
    pub episodes_per_show: u32,
    /// Distinct listeners (each one IP + one user agent).
    pub listeners: u32,
    /// Distinct bots.
    pub bots: u32,
    pub mix: Mix,
    /// Base rate, hits per second.
    pub rate: f64,
    pub amount: Amount,
    pub burst: Option<Burst>,
    /// Ad plays in progress at once (their hits interleave).
    pub open_plays: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            seed: 42,
            campaigns: vec![CampaignSpec {
                id: "demo-spring-sale".into(),
                creatives: vec!["cr_30s".into(), "cr_60s".into()],
                weight: 1,
            }],
            shows: 4,
            episodes_per_show: 6,
            listeners: 500,
            bots: 40,
            mix: Mix::default(),
            rate: 100.0,
            amount: Amount::Total(1000),
            burst: None,
            open_plays: 64,
        }
    }
}

impl Plan {
    pub fn validate(&self, keys: &SigningKeys) -> anyhow::Result<()> {
        ensure!(
            !self.campaigns.is_empty(),
            "a plan needs at least one campaign"
        );
        for c in &self.campaigns {
            CampaignId::parse(&c.id).with_context(|| format!("campaign {:?}", c.id))?;
            ensure!(
                !c.creatives.is_empty(),
                "campaign {} has no creatives",
                c.id
            );
            for cr in &c.creatives {
                CreativeId::parse(cr).with_context(|| format!("creative {cr:?} of {}", c.id))?;
            }
        }
        ensure!(
            self.campaigns.iter().map(|c| c.weight as u64).sum::<u64>() > 0,
            "campaign weights are all zero"
        );
        ensure!(
            self.shows > 0 && self.episodes_per_show > 0,
            "shows and episodes must be at least 1"
        );
        ensure!(self.listeners > 0, "a plan needs at least one listener");
        ensure!(
            self.listeners as u64 + self.bots as u64 <= MAX_AUDIENCE,
            "at most {MAX_AUDIENCE} listeners and bots"
        );
        ensure!(self.open_plays > 0, "open_plays must be at least 1");
        ensure!(
            self.rate > 0.0 && self.rate.is_finite(),
            "the rate must be above 0"
        );
        let m = &self.mix;
        for (name, p) in [
            ("bot_share", m.bot_share),
            ("forged_share", m.forged_share),
            ("duplicate_share", m.duplicate_share),
            ("error_rate", m.error_rate),
            ("start_rate", m.start_rate),
            ("continue_rate", m.continue_rate),
            ("click_rate", m.click_rate),
        ] {
            ensure!((0.0..=1.0).contains(&p), "{name} {p} is not a probability");
        }
        ensure!(m.duplicate_share < 1.0, "duplicate_share must be below 1");
        ensure!(
            m.bot_share == 0.0 || self.bots > 0,
            "bot_share is above 0 but there are no bots"
        );
        if m.forged_share > 0.0 && keys.is_empty() {
            bail!("forged hits need signing keys (EARSHOT_SIGNING_KEYS): without them an edge accepts any URL");
        }
        match self.amount {
            Amount::Total(n) => ensure!(n > 0, "the total must be at least 1"),
            Amount::Seconds(s) => ensure!(s > 0.0 && s.is_finite(), "the duration must be above 0"),
        }
        if let Some(b) = self.burst {
            ensure!(
                b.at >= 0.0 && b.seconds > 0.0 && b.factor > 0.0,
                "a burst needs at >= 0, seconds > 0, factor > 0"
            );
        }
        Ok(())
    }

    /// The hits the plan sends.
    pub fn total_hits(&self) -> u64 {
        match self.amount {
            Amount::Total(n) => n,
            Amount::Seconds(s) => self.hits_by(s).floor() as u64,
        }
    }

    /// Hits due by `t` seconds (the integral of the rate).
    fn hits_by(&self, t: f64) -> f64 {
        let r = self.rate;
        match self.burst {
            None => r * t,
            Some(b) => {
                let before = t.min(b.at);
                let during = (t - b.at).clamp(0.0, b.seconds);
                let after = (t - b.at - b.seconds).max(0.0);
                r * before + r * b.factor * during + r * after
            }
        }
    }

    /// When hit `i` (0-based) is due, from the start of the run: the
    /// inverse of [`Plan::hits_by`].
    pub fn offset_of(&self, i: u64) -> Duration {
        let n = i as f64;
        let r = self.rate;
        let secs = match self.burst {
            None => n / r,
            Some(b) => {
                let at_burst = r * b.at;
                let after_burst = at_burst + r * b.factor * b.seconds;
                if n < at_burst {
                    n / r
                } else if n < after_burst {
                    b.at + (n - at_burst) / (r * b.factor)
                } else {
                    b.at + b.seconds + (n - after_burst) / r
                }
            }
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Listeners get documentation-range IPv4 addresses (762 of them), then
/// IPv6 /64s under 2001:db8::/32: 65,536 × 65,536 of those; this bound only
/// keeps a typo from allocating forever.
pub const MAX_AUDIENCE: u64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_rate_and_the_burst() {
        let p = Plan {
            rate: 10.0,
            burst: Some(Burst {
                at: 2.0,
                seconds: 1.0,
                factor: 10.0,
            }),
            amount: Amount::Seconds(5.0),
            ..Plan::default()
        };
        // 2 s at 10/s, 1 s at 100/s, 2 s at 10/s.
        assert_eq!(p.total_hits(), 20 + 100 + 20);
        assert_eq!(p.offset_of(10), Duration::from_secs(1));
        assert_eq!(p.offset_of(20), Duration::from_secs(2));
        assert_eq!(p.offset_of(70), Duration::from_millis(2500));
        assert_eq!(p.offset_of(120), Duration::from_secs(3));
        assert_eq!(p.offset_of(130), Duration::from_secs(4));
    }

    #[test]
    fn campaign_specs_parse() {
        let c = CampaignSpec::parse("acme-q4:cr_a,cr_b@3").unwrap();
        assert_eq!(c.id, "acme-q4");
        assert_eq!(c.creatives, vec!["cr_a", "cr_b"]);
        assert_eq!(c.weight, 3);
        assert!(CampaignSpec::parse("nocreatives").is_err());
    }

    #[test]
    fn forged_hits_need_keys() {
        let p = Plan::default();
        assert!(p.validate(&SigningKeys::default()).is_err());
        let unsigned = Plan {
            mix: Mix {
                forged_share: 0.0,
                ..Mix::default()
            },
            ..Plan::default()
        };
        unsigned.validate(&SigningKeys::default()).unwrap();
    }
}
