//! User-agent classification: bots, podcast apps, libraries, browsers, and
//! the device behind them.
//!
//! Order (as the OPAWG user-agents-v2 files prescribe): a missing user agent
//! or one that calls itself a bot/crawler/spider is a bot; otherwise the first
//! match in bots, then apps, then libraries, then browsers wins. Within each
//! list, patterns from the configured OPAWG files come first, then the small
//! built-in list. A library entry whose OPAWG category is `bot` (scripted
//! HTTP clients such as Go-http-client or python-httpx) counts as a bot.
//! Devices are matched separately, for non-bots only.
//!
//! Patterns are matched as byte regexes with Unicode off, which matches the
//! ASCII semantics of `\d`/`\w` in the JavaScript regexes OPAWG writes; a
//! pattern the regex engine cannot compile (e.g. a lookahead) is skipped and
//! reported, never fatal. How a list is matched: `patterns.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Distinct user agents remembered. A podcast network sees a few thousand
/// distinct strings a day; beyond this the cache starts over rather than
/// grow without bound.
pub const UA_CACHE_CAPACITY: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaClass {
    Bot,
    App,
    Library,
    Browser,
    Unknown,
}

/// What a user agent says about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UaInfo {
    pub class: UaClass,
    /// The matched entry's name (the app, library, browser or bot).
    pub name: Option<String>,
    /// The device name from the devices list, for non-bots.
    pub device: Option<String>,
    /// A coarse operating system guess: ios, android, macos, windows, linux, watchos, tvos.
    pub os: Option<&'static str>,
    /// For bots: the `reason` written on the wire.
    pub bot_reason: Option<String>,
}

struct Entry {
    name: String,
    /// For libraries: OPAWG marks scripted clients with category "bot".
    is_bot: bool,
}

type PatternList = crate::patterns::PatternList<Entry>;

fn pattern_list(items: Items, skipped: &mut Vec<String>) -> PatternList {
    let items = items
        .into_iter()
        .map(|(name, pattern, is_bot)| (Entry { name, is_bot }, pattern))
        .collect();
    PatternList::build(items, |e| &e.name, skipped)
}

/// Built-in lists: a few of the most common clients, so a deployment without
/// OPAWG files still tells Apple Podcasts from a script. (name, pattern)
const BUILTIN_BOTS: &[(&str, &str)] = &[
    ("Facebook External Hit", "facebookexternalhit"),
    ("Headless Chrome", "HeadlessChrome"),
    ("PhantomJS", "PhantomJS"),
    ("Uptime Robot", "UptimeRobot"),
    ("Pingdom", "Pingdom"),
    ("curl", "^curl/"),
    ("Wget", "^Wget/"),
];
const BUILTIN_APPS: &[(&str, &str)] = &[
    (
        "Apple Podcasts",
        "^Podcasts/|^AirPodcasts/|^Balados/|^Podcast/",
    ),
    ("Spotify", "^Spotify/|^spotify"),
    ("Overcast", "^Overcast/"),
    ("Pocket Casts", "^Pocket Casts|PocketCasts/"),
    ("Castro", "^Castro"),
    ("Podcast Addict", "^PodcastAddict/"),
    ("AntennaPod", "^AntennaPod/"),
    ("Castbox", "^CastBox/"),
    ("iHeartRadio", "iHeartRadio/"),
    ("Amazon Music", "^AmazonMusic"),
    ("Podbean", "^Podbean/"),
    ("Deezer", "^Deezer/"),
    ("Audible", "^Audible"),
];
const BUILTIN_LIBRARIES: &[(&str, &str, bool)] = &[
    ("AppleCoreMedia", "^AppleCoreMedia(/|$)", false),
    ("ExoPlayer", "ExoPlayerLib/|^Exo2/", false),
    ("stagefright", "stagefright/", false),
    ("okhttp", "okhttp", true),
    ("ffmpeg", "^Lavf/", true),
    ("Go Http Client", "^Go-http-client", true),
    ("python-requests", "^python-requests/", true),
];
const BUILTIN_BROWSERS: &[(&str, &str)] = &[
    ("Edge", "Edg/|EdgA/|EdgiOS/"),
    ("Firefox", "Firefox/|FxiOS/"),
    ("Chrome", "Chrome/|CriOS/"),
    ("Safari", "AppleWebKit.*Safari/"),
];
const BUILTIN_DEVICES: &[(&str, &str)] = &[
    ("Apple Watch", "Watch OS|watchOS|^Watch/"),
    ("Apple HomePod", "HomePod|^AirPodcasts/"),
    ("Apple iPad", "iPad"),
    ("Apple iPhone", "iPhone|iOS|CFNetwork"),
    ("Apple Computer", "Macintosh|Mac OS X|macOS"),
    ("Amazon Smart Speaker", "Alexa|^Echo/"),
    ("Other Smart Speaker", "Sonos|^Bose/"),
    ("Android Phone", "Android|android"),
    ("Windows Computer", "Windows"),
    ("Other Computer", "Linux|X11"),
];

/// Why the OPAWG folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UaLoadError {
    #[error("user-agent patterns: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("user-agent patterns: {path} is not an OPAWG patterns file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("user-agent patterns: none of bots.json, apps.json, libraries.json, browsers.json, devices.json is in {0}")]
    Empty(String),
}

/// What loading the OPAWG folder did, for the startup log.
#[derive(Debug, Default, Clone)]
pub struct UaLoadReport {
    pub files: Vec<String>,
    pub patterns: usize,
    /// Patterns the regex engine refused, with the reason.
    pub skipped: Vec<String>,
}

#[derive(serde::Deserialize)]
struct OpawgFile {
    entries: Vec<OpawgEntry>,
}

#[derive(serde::Deserialize)]
struct OpawgEntry {
    name: String,
    pattern: String,
    #[serde(default)]
    category: Option<String>,
}

pub struct UaClassifier {
    bots: PatternList,
    apps: PatternList,
    libraries: PatternList,
    browsers: PatternList,
    devices: PatternList,
    cache: Mutex<HashMap<Box<str>, Arc<UaInfo>>>,
}

impl std::fmt::Debug for UaClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaClassifier")
            .field("bots", &self.bots.entries.len())
            .field("apps", &self.apps.entries.len())
            .field("libraries", &self.libraries.entries.len())
            .field("browsers", &self.browsers.entries.len())
            .field("devices", &self.devices.entries.len())
            .finish()
    }
}

type Items = Vec<(String, String, bool)>;

fn builtin(list: &[(&str, &str)]) -> Items {
    list.iter()
        .map(|(n, p)| (n.to_string(), p.to_string(), false))
        .collect()
}

impl UaClassifier {
    /// The built-in lists only.
    pub fn builtin() -> Self {
        Self::from_items(Default::default(), &mut Vec::new())
    }

    /// The OPAWG files in `dir` first, then the built-in lists.
    pub fn with_opawg_dir(dir: &Path) -> Result<(Self, UaLoadReport), UaLoadError> {
        let mut report = UaLoadReport::default();
        let mut lists: [Items; 5] = Default::default();
        for (i, file) in ["bots", "apps", "libraries", "browsers", "devices"]
            .iter()
            .enumerate()
        {
            let path = dir.join(format!("{file}.json"));
            let shown = path.display().to_string();
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(UaLoadError::Read {
                        path: shown,
                        source,
                    })
                }
            };
            let parsed: OpawgFile =
                serde_json::from_slice(&bytes).map_err(|source| UaLoadError::Parse {
                    path: shown.clone(),
                    source,
                })?;
            report.patterns += parsed.entries.len();
            report.files.push(shown);
            lists[i] = parsed
                .entries
                .into_iter()
                .map(|e| {
                    let bot = e.category.as_deref() == Some("bot");
                    (e.name, e.pattern, bot)
                })
                .collect();
        }
        if report.files.is_empty() {
            return Err(UaLoadError::Empty(dir.display().to_string()));
        }
        let classifier = Self::from_items(lists, &mut report.skipped);
        Ok((classifier, report))
    }

    fn from_items(opawg: [Items; 5], skipped: &mut Vec<String>) -> Self {
        let [bots, apps, libraries, browsers, devices] = opawg;
        let chain = |mut first: Items, then: Items| {
            first.extend(then);
            first
        };
        let libs_builtin = BUILTIN_LIBRARIES
            .iter()
            .map(|(n, p, b)| (n.to_string(), p.to_string(), *b))
            .collect();
        Self {
            bots: pattern_list(chain(bots, builtin(BUILTIN_BOTS)), skipped),
            apps: pattern_list(chain(apps, builtin(BUILTIN_APPS)), skipped),
            libraries: pattern_list(chain(libraries, libs_builtin), skipped),
            browsers: pattern_list(chain(browsers, builtin(BUILTIN_BROWSERS)), skipped),
            devices: pattern_list(chain(devices, builtin(BUILTIN_DEVICES)), skipped),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Classifies a user agent (`None` or empty: missing). Results are cached
    /// per distinct string.
    pub fn classify(&self, ua: Option<&str>) -> Arc<UaInfo> {
        let ua = ua.map(str::trim).filter(|s| !s.is_empty());
        let Some(ua) = ua else {
            return Arc::new(UaInfo {
                class: UaClass::Bot,
                name: None,
                device: None,
                os: None,
                bot_reason: Some("ua_missing".into()),
            });
        };
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(ua) {
            return hit.clone();
        }
        let info = Arc::new(self.classify_uncached(ua));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= UA_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(ua.into(), info.clone());
        info
    }

    fn classify_uncached(&self, ua: &str) -> UaInfo {
        let bytes = ua.as_bytes();
        let lower = ua.to_ascii_lowercase();
        let bot = |name: Option<String>, reason: String| UaInfo {
            class: UaClass::Bot,
            name,
            device: None,
            os: None,
            bot_reason: Some(
                crate::event::truncate_to(&reason, crate::event::MAX_LABEL_LEN).to_owned(),
            ),
        };
        if let Some(e) = self.bots.first_match(bytes) {
            return bot(Some(e.name.clone()), format!("ua_listed:{}", e.name));
        }
        // Self-declared bots come after the list so listed bots keep their name.
        if ["bot", "crawler", "spider"]
            .iter()
            .any(|w| lower.contains(w))
        {
            return bot(None, "ua_self_declared".into());
        }
        let (class, entry) = if let Some(e) = self.apps.first_match(bytes) {
            (UaClass::App, Some(e))
        } else if let Some(e) = self.libraries.first_match(bytes) {
            if e.is_bot {
                return bot(Some(e.name.clone()), format!("ua_listed:{}", e.name));
            }
            (UaClass::Library, Some(e))
        } else if let Some(e) = self.browsers.first_match(bytes) {
            (UaClass::Browser, Some(e))
        } else {
            (UaClass::Unknown, None)
        };
        UaInfo {
            class,
            name: entry.map(|e| e.name.clone()),
            device: self.devices.first_match(bytes).map(|e| e.name.clone()),
            os: guess_os(ua),
            bot_reason: None,
        }
    }
}

/// A coarse OS from well-known tokens. CFNetwork/Darwin without other hints
/// is almost always iOS in podcast traffic.
fn guess_os(ua: &str) -> Option<&'static str> {
    const RULES: &[(&str, &str)] = &[
        ("watchOS", "watchos"),
        ("Watch OS", "watchos"),
        ("Apple TV", "tvos"),
        ("AppleTV", "tvos"),
        ("iPhone", "ios"),
        ("iPad", "ios"),
        ("iOS", "ios"),
        ("Android", "android"),
        ("android", "android"),
        ("Windows", "windows"),
        ("Macintosh", "macos"),
        ("Mac OS X", "macos"),
        ("CrOS", "chromeos"),
        ("CFNetwork", "ios"),
        ("Darwin", "ios"),
        ("Linux", "linux"),
    ];
    RULES
        .iter()
        .find(|(token, _)| ua.contains(token))
        .map(|(_, os)| *os)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mini_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/opawg-mini")
    }

    /// The real OPAWG files (MIT, not committed): `EARSHOT_OPAWG_DIR`, which
    /// scripts/test sets when it finds them beside the checkout.
    fn opawg_dir() -> Option<std::path::PathBuf> {
        std::env::var_os("EARSHOT_OPAWG_DIR").map(std::path::PathBuf::from)
    }

    #[test]
    fn missing_and_self_declared_user_agents_are_bots() {
        let c = UaClassifier::builtin();
        assert_eq!(c.classify(None).bot_reason.as_deref(), Some("ua_missing"));
        assert_eq!(
            c.classify(Some("  ")).bot_reason.as_deref(),
            Some("ua_missing")
        );
        let s = c.classify(Some("Mozilla/5.0 (compatible; ExampleSpider/2.1)"));
        assert_eq!(
            (s.class, s.bot_reason.as_deref()),
            (UaClass::Bot, Some("ua_self_declared"))
        );
        let listed = c.classify(Some("curl/8.5.0"));
        assert_eq!(listed.bot_reason.as_deref(), Some("ua_listed:curl"));
    }

    #[test]
    fn builtin_list_names_common_podcast_apps_and_devices() {
        let c = UaClassifier::builtin();
        let i = c.classify(Some("Podcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0"));
        assert_eq!(i.class, UaClass::App);
        assert_eq!(i.name.as_deref(), Some("Apple Podcasts"));
        assert_eq!(i.device.as_deref(), Some("Apple iPhone"));
        assert_eq!(i.os, Some("ios"));
        let s = c.classify(Some("Spotify/8.8.0 Android/33 (SM-G991B)"));
        assert_eq!(
            (s.name.as_deref(), s.os),
            (Some("Spotify"), Some("android"))
        );
        let b = c.classify(Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"));
        assert_eq!(
            (b.class, b.name.as_deref()),
            (UaClass::Browser, Some("Chrome"))
        );
        let u = c.classify(Some("SomethingElse/1.0"));
        assert_eq!(
            (u.class, u.name.as_deref(), u.bot_reason.as_deref()),
            (UaClass::Unknown, None, None)
        );
    }

    #[test]
    fn opawg_format_files_load_in_list_order_and_bad_patterns_are_skipped() {
        let (c, report) = UaClassifier::with_opawg_dir(&mini_dir()).unwrap();
        assert_eq!(report.files.len(), 5);
        assert_eq!(report.patterns, 8);
        assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
        assert!(
            report.skipped[0].starts_with("Lookahead"),
            "{:?}",
            report.skipped
        );
        let bot = c.classify(Some("ExampleChecker/2.0"));
        assert_eq!(bot.bot_reason.as_deref(), Some("ua_listed:Example Checker"));
        let app = c.classify(Some("ExamplePodcasts/1.0 CFNetwork/1.0 Darwin/22.0.0"));
        assert_eq!(
            (app.class, app.name.as_deref(), app.device.as_deref()),
            (
                UaClass::App,
                Some("Example Podcasts"),
                Some("Example Phone")
            )
        );
        // A library OPAWG marks as a bot (scripted client) is a bot.
        assert_eq!(
            c.classify(Some("example-http/3")).bot_reason.as_deref(),
            Some("ua_listed:Example HTTP")
        );
        let lib = c.classify(Some("ExamplePlayerLib/7"));
        assert_eq!(
            (lib.class, lib.name.as_deref()),
            (UaClass::Library, Some("Example Player Lib"))
        );
        assert_eq!(c.classify(Some("ExampleBrowser/9")).class, UaClass::Browser);
        // The built-in lists still apply after the files' entries.
        assert_eq!(
            c.classify(Some("Overcast/3.0")).name.as_deref(),
            Some("Overcast")
        );
        // The files come first: their Spotify entry wins over the built-in one.
        assert_eq!(
            c.classify(Some("Spotify/8.8")).name.as_deref(),
            Some("Spotify (from the file)")
        );
    }

    #[test]
    fn every_bot_example_in_the_real_opawg_files_is_a_bot() {
        let Some(dir) = opawg_dir() else {
            eprintln!("EARSHOT_OPAWG_DIR is not set: the real OPAWG files were not found; scripts/test sets it");
            return;
        };
        let (c, report) = UaClassifier::with_opawg_dir(&dir).unwrap();
        assert_eq!(report.files.len(), 5);
        assert!(report.patterns > 900, "{}", report.patterns);
        let bots: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("bots.json")).unwrap()).unwrap();
        let mut checked = 0;
        for e in bots["entries"].as_array().unwrap() {
            for ex in e["examples"].as_array().into_iter().flatten() {
                let info = c.classify(ex.as_str());
                assert_eq!(info.class, UaClass::Bot, "{ex}");
                checked += 1;
            }
        }
        assert!(checked > 200, "{checked}");
        let app = c.classify(Some("Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"));
        assert_eq!(
            (app.class, app.name.as_deref()),
            (UaClass::App, Some("Overcast"))
        );
        let lib = c.classify(Some("Go-http-client/1.1"));
        assert_eq!(lib.bot_reason.as_deref(), Some("ua_listed:Go Http Client"));
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let err = UaClassifier::with_opawg_dir(Path::new("/nonexistent/opawg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user-agent patterns: none of bots.json, apps.json, libraries.json, browsers.json, devices.json is in /nonexistent/opawg"
        );
    }
}
