//! User agents as podcast players and bots really send them, with rough
//! shares of podcast downloads (apps' own reports and the OPAWG examples).
//!
//! Every listener agent must be classified as a non-bot and every bot agent
//! as a bot by the edge's user-agent lists (`earshot_domain::UaClassifier`,
//! the OPAWG lists compiled in);
//! the tests below keep the two in step, because the expected report
//! depends on it.

/// A podcast player (or browser) a listener uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerAgent {
    /// What the classifier should call it (`app` on the wire), if anything.
    pub app: Option<&'static str>,
    pub user_agent: &'static str,
    /// Relative share among listeners.
    pub weight: u32,
}

/// A bot, scraper or prefetcher. `None`: no User-Agent header at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotAgent {
    pub user_agent: Option<&'static str>,
    /// The `reason` the edge records.
    pub reason: &'static str,
    pub weight: u32,
}

pub const PLAYERS: &[PlayerAgent] = &[
    PlayerAgent {
        app: Some("Apple Podcasts"),
        user_agent: "Podcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0",
        weight: 18,
    },
    PlayerAgent {
        app: Some("Apple Podcasts"),
        user_agent: "Podcasts/4023.400.1 CFNetwork/1494.0.7 Darwin/23.4.0",
        weight: 10,
    },
    PlayerAgent {
        // Apple Podcasts playing on a HomePod, as OPAWG names it.
        app: Some("Apple HomePod"),
        user_agent: "AirPodcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0",
        weight: 2,
    },
    PlayerAgent {
        // AVPlayer fetching for Apple Podcasts and many iOS apps.
        app: Some("AppleCoreMedia"),
        user_agent: "AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4_1 like Mac OS X; en_us)",
        weight: 6,
    },
    PlayerAgent {
        app: Some("Spotify"),
        user_agent: "Spotify/8.9.36 iOS/17.4.1 (iPhone15,2)",
        weight: 12,
    },
    PlayerAgent {
        app: Some("Spotify"),
        user_agent: "Spotify/8.9.36.616 Android/34 (SM-S918B)",
        weight: 12,
    },
    PlayerAgent {
        app: Some("Overcast"),
        user_agent: "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
        weight: 5,
    },
    PlayerAgent {
        app: Some("Pocket Casts"),
        user_agent: "Pocket Casts/7.62 (iPhone; iOS 17.4.1)",
        weight: 3,
    },
    PlayerAgent {
        app: Some("Pocket Casts"),
        user_agent: "PocketCasts/1.0 (Pocket Casts - Android, v7.62) Mozilla/5.0 (Linux; Android 14)",
        weight: 3,
    },
    PlayerAgent {
        app: Some("Castro"),
        user_agent: "Castro 2024.4 (iPhone; iOS 17.4.1; Scale/3.00)",
        weight: 2,
    },
    PlayerAgent {
        app: Some("Podcast Addict"),
        user_agent: "PodcastAddict/v5 (+https://podcastaddict.com/; Android podcast app)",
        weight: 5,
    },
    PlayerAgent {
        app: Some("AntennaPod"),
        user_agent: "AntennaPod/3.3.2",
        weight: 2,
    },
    PlayerAgent {
        app: Some("Amazon Music"),
        user_agent: "AmazonMusic/24.6.2 iPhone15,2 CFNetwork/1494.0.7 Darwin/23.4.0",
        weight: 4,
    },
    PlayerAgent {
        app: Some("Chrome"),
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        weight: 5,
    },
    PlayerAgent {
        app: Some("Chrome"),
        user_agent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        weight: 3,
    },
    PlayerAgent {
        app: Some("Safari"),
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        weight: 3,
    },
    PlayerAgent {
        app: Some("Firefox"),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        weight: 1,
    },
];

pub const BOTS: &[BotAgent] = &[
    BotAgent {
        user_agent: None,
        reason: "ua_missing",
        weight: 3,
    },
    BotAgent {
        user_agent: Some("curl/8.5.0"),
        reason: "ua_listed:curl",
        weight: 2,
    },
    BotAgent {
        user_agent: Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
        reason: "ua_listed:Googlebot",
        weight: 2,
    },
    BotAgent {
        user_agent: Some("okhttp/4.12.0"),
        reason: "ua_listed:okhttp",
        weight: 2,
    },
    BotAgent {
        user_agent: Some("python-requests/2.31.0"),
        reason: "ua_listed:python-requests",
        weight: 1,
    },
    BotAgent {
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36"),
        reason: "ua_listed:Puppeteer",
        weight: 1,
    },
    BotAgent {
        user_agent: Some("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
        reason: "ua_listed:Facebook Bot",
        weight: 1,
    },
];

/// Countries of listeners, as CloudFront-Viewer-Country, with rough shares.
pub const COUNTRIES: &[(&str, u32)] = &[
    ("US", 45),
    ("GB", 10),
    ("DE", 8),
    ("CA", 7),
    ("AU", 5),
    ("FR", 4),
    ("BR", 4),
    ("SE", 3),
    ("NL", 3),
    ("IN", 3),
    ("MX", 3),
    ("ES", 2),
    ("IE", 2),
    ("NZ", 1),
];

/// Picks an index by weight.
pub(crate) fn pick_weighted<T>(
    rng: &mut fastrand::Rng,
    items: &[T],
    weight: impl Fn(&T) -> u32,
) -> usize {
    let total: u32 = items.iter().map(&weight).sum();
    let mut x = rng.u32(..total.max(1));
    for (i, it) in items.iter().enumerate() {
        let w = weight(it);
        if x < w {
            return i;
        }
        x -= w;
    }
    items.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_domain::{UaClass, UaClassifier};

    #[test]
    fn every_player_is_a_listener_to_the_builtin_list_and_named_as_expected() {
        let c = UaClassifier::builtin();
        for p in PLAYERS {
            let info = c.classify(Some(p.user_agent));
            assert_ne!(
                info.class,
                UaClass::Bot,
                "{} is classified as a bot",
                p.user_agent
            );
            assert_eq!(info.bot_reason, None, "{}", p.user_agent);
            assert_eq!(info.name.as_deref(), p.app, "{}", p.user_agent);
        }
    }

    #[test]
    fn every_bot_is_a_bot_to_the_builtin_list_with_its_reason() {
        let c = UaClassifier::builtin();
        for b in BOTS {
            let info = c.classify(b.user_agent);
            assert_eq!(info.class, UaClass::Bot, "{:?}", b.user_agent);
            assert_eq!(
                info.bot_reason.as_deref(),
                Some(b.reason),
                "{:?}",
                b.user_agent
            );
        }
    }

    #[test]
    fn countries_are_iso_codes() {
        for (c, _) in COUNTRIES {
            assert!(earshot_domain::CountryCode::parse(c).is_some(), "{c}");
        }
    }
}
