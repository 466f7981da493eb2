//! User-agent classification: bots, podcast apps, libraries, browsers, and
//! the device behind them.
//!
//! The lists are OPAWG's user-agents-v2 (MIT), compiled into the crate from
//! `shared/data/opawg/` (its `VERSION` names the upstream commit;
//! `scripts/update-opawg` refreshes it). A folder of newer files can replace
//! them at run time, list by list ([`UaClassifier::load`]).
//!
//! Order: a missing user agent is a bot; then the first match in bots, then
//! apps (OPAWG's order); then one that calls itself a bot/crawler/spider is a
//! bot, so a listed app whose name says "bot" stays an app, as in OP3; then
//! libraries, then browsers. A library entry whose OPAWG category is `bot`
//! (scripted HTTP clients such as Go-http-client or python-httpx) counts as a
//! bot. Devices are matched separately, for non-bots only.
//!
//! One user agent has more than one spelling: CFNetwork percent-encodes an
//! app's name (`Pocket%20Casts/7.96`, `%D0%9F%D0%BE…/1410`) where other
//! clients, and ad servers forwarding a decoded agent, send it raw
//! (`Подкасты/1520`). OPAWG lists both forms for some apps and one for
//! others, so each list is matched against every spelling (the agent as
//! sent, percent-decoded, and with the product name percent-encoded) and the
//! first entry in list order that any of them matches wins: the two forms
//! classify alike.
//!
//! Patterns are matched as byte regexes with Unicode off, which matches the
//! ASCII semantics of `\d`/`\w` in the JavaScript regexes OPAWG writes; a
//! pattern the regex engine cannot compile (e.g. a lookahead) is skipped and
//! reported, never fatal. How a list is matched: `patterns.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use percent_encoding::{AsciiSet, CONTROLS};

/// Distinct user agents remembered. A podcast network sees a few thousand
/// distinct strings a day; beyond this the cache starts over rather than
/// grow without bound.
pub const UA_CACHE_CAPACITY: usize = 8192;

/// The OPAWG lists compiled in, by file stem, in the order they are
/// consulted (`shared/data/opawg/`).
pub(crate) const EMBEDDED_LISTS: [(&str, &str); 5] = [
    ("bots", include_str!("../data/opawg/bots.json")),
    ("apps", include_str!("../data/opawg/apps.json")),
    ("libraries", include_str!("../data/opawg/libraries.json")),
    ("browsers", include_str!("../data/opawg/browsers.json")),
    ("devices", include_str!("../data/opawg/devices.json")),
];

/// The upstream commit (and its date) of the compiled-in OPAWG lists.
pub const OPAWG_VERSION: &str = include_str!("../data/opawg/VERSION");

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

/// Why a folder of OPAWG files could not be used.
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

/// Where each list came from, for the startup log.
#[derive(Debug, Default, Clone)]
pub struct UaLoadReport {
    /// One per list: the file read, or `compiled-in <file> (<upstream commit>)`.
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

/// One list's entries: (name, pattern, is a bot).
type Items = Vec<(String, String, bool)>;

fn parse_list(json: &[u8]) -> Result<Items, serde_json::Error> {
    let parsed: OpawgFile = serde_json::from_slice(json)?;
    Ok(parsed
        .entries
        .into_iter()
        .map(|e| {
            let bot = e.category.as_deref() == Some("bot");
            (e.name, e.pattern, bot)
        })
        .collect())
}

impl UaClassifier {
    /// The OPAWG lists compiled into the crate.
    pub fn builtin() -> Self {
        Self::load(None)
            .expect("the compiled-in OPAWG lists parse (a test holds them to it)")
            .0
    }

    /// The lists in `dir` (`bots.json`, `apps.json`, `libraries.json`,
    /// `browsers.json`, `devices.json`), each in place of its compiled-in
    /// copy; a file missing there keeps the compiled-in list. With no `dir`,
    /// the compiled-in lists. A `dir` holding none of the five is an error
    /// (a wrong path, not a choice).
    pub fn load(dir: Option<&Path>) -> Result<(Self, UaLoadReport), UaLoadError> {
        let mut report = UaLoadReport::default();
        let mut lists: [Items; 5] = Default::default();
        let mut from_dir = 0;
        for (i, (stem, embedded)) in EMBEDDED_LISTS.iter().enumerate() {
            let file = format!("{stem}.json");
            let read = match dir {
                None => None,
                Some(dir) => {
                    let path = dir.join(&file);
                    match std::fs::read(&path) {
                        Ok(bytes) => Some((path.display().to_string(), bytes)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(source) => {
                            return Err(UaLoadError::Read {
                                path: path.display().to_string(),
                                source,
                            })
                        }
                    }
                }
            };
            lists[i] = match read {
                Some((path, bytes)) => {
                    from_dir += 1;
                    let items = parse_list(&bytes).map_err(|source| UaLoadError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                    report.files.push(path);
                    items
                }
                None => {
                    let items =
                        parse_list(embedded.as_bytes()).map_err(|source| UaLoadError::Parse {
                            path: format!("compiled-in {file}"),
                            source,
                        })?;
                    report
                        .files
                        .push(format!("compiled-in {file} ({})", OPAWG_VERSION.trim()));
                    items
                }
            };
            report.patterns += lists[i].len();
        }
        if let Some(dir) = dir.filter(|_| from_dir == 0) {
            return Err(UaLoadError::Empty(dir.display().to_string()));
        }
        let [bots, apps, libraries, browsers, devices] = lists;
        let skipped = &mut report.skipped;
        let classifier = Self {
            bots: pattern_list(bots, skipped),
            apps: pattern_list(apps, skipped),
            libraries: pattern_list(libraries, skipped),
            browsers: pattern_list(browsers, skipped),
            devices: pattern_list(devices, skipped),
            cache: Mutex::new(HashMap::new()),
        };
        Ok((classifier, report))
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
        let forms = spellings(ua);
        let bot = |name: Option<String>, reason: String| UaInfo {
            class: UaClass::Bot,
            name,
            device: None,
            os: None,
            bot_reason: Some(
                crate::event::truncate_to(&reason, crate::event::MAX_LABEL_LEN).to_owned(),
            ),
        };
        if let Some(e) = self.bots.first_match_any(&forms) {
            return bot(Some(e.name.clone()), format!("ua_listed:{}", e.name));
        }
        let app = self.apps.first_match_any(&forms);
        // Self-declared bots come after the bots list, so listed bots keep
        // their name, and after the apps list, so a listed app is an app.
        if app.is_none() && forms.iter().any(|f| declares_itself_a_bot(f)) {
            return bot(None, "ua_self_declared".into());
        }
        let (class, entry) = if let Some(e) = app {
            (UaClass::App, Some(e))
        } else if let Some(e) = self.libraries.first_match_any(&forms) {
            if e.is_bot {
                return bot(Some(e.name.clone()), format!("ua_listed:{}", e.name));
            }
            (UaClass::Library, Some(e))
        } else if let Some(e) = self.browsers.first_match_any(&forms) {
            (UaClass::Browser, Some(e))
        } else {
            (UaClass::Unknown, None)
        };
        UaInfo {
            class,
            name: entry.map(|e| e.name.clone()),
            device: self.devices.first_match_any(&forms).map(|e| e.name.clone()),
            os: guess_os(ua),
            bot_reason: None,
        }
    }
}

fn declares_itself_a_bot(ua: &str) -> bool {
    let lower = ua.to_ascii_lowercase();
    ["bot", "crawler", "spider"]
        .iter()
        .any(|w| lower.contains(w))
}

/// What CFNetwork percent-encodes in an app's name: everything outside
/// printable ASCII (always, in `percent_encoding`), and spaces.
const PRODUCT_NAME_ENCODED: &AsciiSet = &CONTROLS.add(b' ');

/// The spellings of one user agent that the lists are matched against: as
/// sent; percent-decoded (UTF-8, lossy) when it holds escapes; and, when
/// its product name (what comes before the first `/`) holds spaces or
/// non-ASCII text, with that name percent-encoded as CFNetwork sends it.
fn spellings(ua: &str) -> Vec<Cow<'_, str>> {
    let mut forms: Vec<Cow<'_, str>> = vec![Cow::Borrowed(ua)];
    let decoded = percent_encoding::percent_decode_str(ua).decode_utf8_lossy();
    if decoded != ua {
        forms.push(Cow::Owned(decoded.into_owned()));
    }
    let raw = forms.last().expect("the agent as sent").clone();
    let (product, rest) = raw.split_at(raw.find('/').unwrap_or(raw.len()));
    if product.bytes().any(|b| b == b' ' || !b.is_ascii()) {
        let encoded = format!(
            "{}{rest}",
            percent_encoding::utf8_percent_encode(product, PRODUCT_NAME_ENCODED)
        );
        if !forms.iter().any(|f| *f == encoded) {
            forms.push(Cow::Owned(encoded));
        }
    }
    forms
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

    /// The `examples` of every entry of a compiled-in list, with the entry's name.
    fn examples(list: &str) -> Vec<(String, String)> {
        let (_, json) = EMBEDDED_LISTS.iter().find(|(s, _)| *s == list).unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut out = Vec::new();
        for e in v["entries"].as_array().unwrap() {
            for ex in e["examples"].as_array().into_iter().flatten() {
                out.push((
                    e["name"].as_str().unwrap().to_owned(),
                    ex.as_str().unwrap().to_owned(),
                ));
            }
        }
        out
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
    fn the_compiled_in_lists_name_crawlers_podcast_apps_and_devices() {
        let c = UaClassifier::builtin();
        for (ua, reason) in [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "ua_listed:Googlebot",
            ),
            (
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                "ua_listed:AhrefsBot",
            ),
            ("Go-http-client/1.1", "ua_listed:Go Http Client"),
        ] {
            let i = c.classify(Some(ua));
            assert_eq!(
                (i.class, i.bot_reason.as_deref()),
                (UaClass::Bot, Some(reason)),
                "{ua}"
            );
        }
        let i = c.classify(Some("Podcasts/1650.20 CFNetwork/1404.0.5 Darwin/22.3.0"));
        assert_eq!(i.class, UaClass::App);
        assert_eq!(i.name.as_deref(), Some("Apple Podcasts"));
        assert_eq!(i.os, Some("ios"));
        let w = c.classify(Some(
            "Overcast/3.0 (+http://overcast.fm/; Apple Watch podcast app)",
        ));
        assert_eq!(
            (w.class, w.name.as_deref(), w.bot_reason.as_deref()),
            (UaClass::App, Some("Overcast"), None)
        );
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
    fn every_compiled_in_list_parses_and_every_bot_example_is_a_bot() {
        let (c, report) = UaClassifier::load(None).unwrap();
        assert_eq!(report.files.len(), 5);
        assert!(
            report.files.iter().all(|f| f.starts_with("compiled-in ")),
            "{:?}",
            report.files
        );
        assert!(report.patterns > 900, "{}", report.patterns);
        let bots = examples("bots");
        assert!(bots.len() > 200, "{}", bots.len());
        for (_, ex) in &bots {
            assert_eq!(c.classify(Some(ex)).class, UaClass::Bot, "{ex}");
        }
    }

    /// OP3's rule: an agent the apps list names is that app, even when its
    /// name says "bot" (Tweetbot).
    #[test]
    fn a_listed_app_beats_the_self_declared_bot_rule() {
        let c = UaClassifier::builtin();
        let apps = examples("apps");
        let (name, ua) = apps
            .iter()
            .find(|(n, _)| n == "Tweetbot")
            .expect("OPAWG lists Tweetbot as an app");
        assert!(declares_itself_a_bot(ua));
        let i = c.classify(Some(ua));
        assert_eq!(
            (i.class, i.name.as_deref(), i.bot_reason.as_deref()),
            (UaClass::App, Some(name.as_str()), None)
        );
        // Not listed: the rule still applies.
        let s = c.classify(Some("Tweetbotter/1.0 CFNetwork/1335.0.3 Darwin/21.6.0"));
        assert_eq!(s.bot_reason.as_deref(), Some("ua_self_declared"));
    }

    /// Every localized Apple Podcasts example OPAWG lists, in the form it
    /// lists and in the other one (raw for percent-encoded, and back): all
    /// are Apple Podcasts.
    #[test]
    fn localized_apple_podcasts_agents_classify_alike_raw_or_percent_encoded() {
        let c = UaClassifier::builtin();
        let localized: Vec<String> = examples("apps")
            .into_iter()
            .filter(|(n, ua)| n == "Apple Podcasts" && (!ua.is_ascii() || ua.contains('%')))
            .map(|(_, ua)| ua)
            .collect();
        assert!(localized.len() >= 20, "{localized:?}");
        for ua in &localized {
            let other = if ua.is_ascii() {
                percent_encoding::percent_decode_str(ua)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            } else {
                let (product, rest) = ua.split_at(ua.find('/').unwrap());
                format!(
                    "{}{rest}",
                    percent_encoding::utf8_percent_encode(product, PRODUCT_NAME_ENCODED)
                )
            };
            assert_ne!(&other, ua);
            for form in [ua, &other] {
                let i = c.classify(Some(form));
                assert_eq!(
                    (i.class, i.name.as_deref()),
                    (UaClass::App, Some("Apple Podcasts")),
                    "{form}"
                );
            }
        }
        // Listed only raw (Подкасти/) or only encoded (Anghami): both
        // spellings of each are found.
        let anghami = "أنغامي/601041 CFNetwork/1335.0.3 Darwin/21.6.0";
        assert_eq!(c.classify(Some(anghami)).name.as_deref(), Some("Anghami"));
    }

    #[test]
    fn every_app_example_with_escapes_or_non_ascii_text_names_the_same_app_in_both_spellings() {
        let c = UaClassifier::builtin();
        let mut checked = 0;
        for (_, ua) in examples("apps") {
            if !ua.contains('%') && ua.is_ascii() {
                continue;
            }
            let listed = c.classify(Some(&ua));
            let decoded = percent_encoding::percent_decode_str(&ua)
                .decode_utf8_lossy()
                .into_owned();
            let raw = c.classify(Some(&decoded));
            assert_eq!(
                (raw.class, &raw.name),
                (listed.class, &listed.name),
                "{ua} / {decoded}"
            );
            checked += 1;
        }
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn a_folder_replaces_the_lists_it_holds_and_bad_patterns_are_skipped() {
        let (c, report) = UaClassifier::load(Some(&mini_dir())).unwrap();
        assert_eq!(report.files.len(), 5);
        assert!(report
            .files
            .iter()
            .all(|f| f.starts_with(mini_dir().to_str().unwrap())));
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
        assert_eq!(
            c.classify(Some("Spotify/8.8")).name.as_deref(),
            Some("Spotify (from the file)")
        );
        // The folder's apps list replaced the compiled-in one whole.
        assert_eq!(c.classify(Some("Overcast/3.0")).class, UaClass::Unknown);
    }

    #[test]
    fn a_list_missing_from_the_folder_keeps_its_compiled_in_copy() {
        let dir = std::env::temp_dir().join(format!("earshot-ua-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(mini_dir().join("bots.json"), dir.join("bots.json")).unwrap();
        let (c, report) = UaClassifier::load(Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(report.files[0], dir.join("bots.json").display().to_string());
        assert!(report.files[1..]
            .iter()
            .all(|f| f.starts_with("compiled-in ")));
        assert_eq!(
            c.classify(Some("ExampleChecker/2.0")).bot_reason.as_deref(),
            Some("ua_listed:Example Checker")
        );
        assert_eq!(
            c.classify(Some("Overcast/3.0 (+http://overcast.fm/; iOS podcast app)"))
                .name
                .as_deref(),
            Some("Overcast")
        );
        // The folder's bots list replaced the compiled-in one: AhrefsBot is
        // only caught by the self-declared rule now.
        assert_eq!(
            c.classify(Some("Mozilla/5.0 (compatible; AhrefsBot/7.0)"))
                .bot_reason
                .as_deref(),
            Some("ua_self_declared")
        );
    }

    #[test]
    fn a_folder_without_any_list_is_a_clear_error() {
        let err = UaClassifier::load(Some(Path::new("/nonexistent/opawg"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user-agent patterns: none of bots.json, apps.json, libraries.json, browsers.json, devices.json is in /nonexistent/opawg"
        );
    }

    #[test]
    fn the_version_names_an_upstream_commit() {
        let commit = OPAWG_VERSION.split_whitespace().next().unwrap();
        assert_eq!(commit.len(), 40, "{OPAWG_VERSION}");
        assert!(
            commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{OPAWG_VERSION}"
        );
    }
}
