//! One user-agent list (bots, apps, …): which of its patterns, in list order,
//! is the first to match.
//!
//! Built at process start, so building is what must be cheap: a Lambda cold
//! start pays for it. Most OPAWG patterns are plain strings, at the start of
//! the user agent (`^Overcast/`) or anywhere (`AppleCoreMedia`), or
//! alternatives of those (`^Podcasts/|^Balados/`). Those go into one
//! Aho-Corasick automaton, which builds in well under a millisecond. Only the
//! rest (about a quarter of the OPAWG entries) are compiled as regexes: one
//! Thompson NFA for the whole list, searched by a lazy DFA that builds its
//! states as user agents arrive. The `regex` crate's `RegexSet` compiles the
//! same patterns about three times slower, because it also prepares a
//! reverse automaton, a prefilter and capture support that a
//! which-patterns-match question never uses.
//!
//! Semantics are those of `regex::bytes` with Unicode off (the ASCII meaning
//! of `\d`/`\w` in the JavaScript regexes OPAWG writes). The literal fast
//! path accepts only patterns it can read with certainty; anything else goes
//! to the regex engine. Tests hold both paths to `regex::bytes::RegexSet`.

use std::sync::Mutex;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::nfa::thompson::pikevm::{Cache as VmCache, PikeVM};
use regex_automata::nfa::thompson::{self, WhichCaptures, NFA};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};

/// Size allowed for a list's compiled NFA. The OPAWG apps list needs a few
/// MiB; the engine's 10 MiB default leaves too little room for growth.
const NFA_SIZE_LIMIT: usize = 256 << 20;
/// Memory for the lazy DFA's states per list. When full it is cleared and
/// refilled; a search never fails for it (no minimum clear count is set).
const DFA_CACHE_CAPACITY: usize = 4 << 20;

/// One alternative of a literal pattern: a byte string, anywhere or only at
/// the start (`^`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    pub(crate) at_start: bool,
    pub(crate) bytes: Vec<u8>,
}

/// Characters that a backslash turns into themselves. Other escapes (`\d`,
/// `\ `…) are left to the regex parser.
const ESCAPABLE: &[u8] = br".+*?()|[]{}^$/-\";
/// Characters with a meaning outside a literal (`]` and `}` included: the
/// parser's view of them alone is not worth guessing).
const SPECIAL: &[u8] = br".+*?()|[]{}^$\#";

/// The pattern as literal alternatives, or `None` if it needs a regex. Every
/// alternative must be non-empty, ASCII and free of regex syntax except a
/// leading `^` and escaped punctuation.
pub(crate) fn literal_alternatives(pattern: &str) -> Option<Vec<Literal>> {
    pattern
        .split('|')
        .map(|alt| {
            let (at_start, rest) = match alt.strip_prefix('^') {
                Some(r) => (true, r),
                None => (false, alt),
            };
            let mut bytes = Vec::with_capacity(rest.len());
            let mut it = rest.bytes();
            while let Some(b) = it.next() {
                match b {
                    b'\\' => match it.next() {
                        Some(e) if ESCAPABLE.contains(&e) => bytes.push(e),
                        _ => return None,
                    },
                    b if !b.is_ascii() || b.is_ascii_control() || SPECIAL.contains(&b) => {
                        return None
                    }
                    b => bytes.push(b),
                }
            }
            (!bytes.is_empty()).then_some(Literal { at_start, bytes })
        })
        .collect()
}

fn compile<P: AsRef<str>>(patterns: &[P]) -> Result<NFA, Box<thompson::BuildError>> {
    thompson::Compiler::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            thompson::Config::new()
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
        )
        .build_many(patterns)
        .map_err(Box::new)
}

/// The regex patterns of a list.
struct Regexes {
    /// Pattern i of the NFA is entry `entry[i]` of the list (ascending).
    entry: Vec<u32>,
    dfa: DFA,
    /// The lazy DFA cannot fail with this configuration; the PikeVM is there
    /// so that an engine error still gives the right answer, not a panic.
    vm: PikeVM,
    caches: Mutex<(DfaCache, VmCache)>,
}

impl Regexes {
    fn build(nfa: NFA, entry: Vec<u32>) -> Self {
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(DFA_CACHE_CAPACITY),
            )
            .build_from_nfa(nfa.clone())
            .expect("a lazy DFA builds from any NFA without Unicode word boundaries");
        let vm = PikeVM::builder()
            .configure(PikeVM::config().match_kind(MatchKind::All))
            .build_from_nfa(nfa)
            .expect("a PikeVM builds from any NFA");
        let caches = Mutex::new((dfa.create_cache(), vm.create_cache()));
        Self {
            entry,
            dfa,
            vm,
            caches,
        }
    }

    /// The first entry whose regex matches anywhere in `ua`.
    fn first(&self, ua: &[u8]) -> Option<u32> {
        let input = Input::new(ua);
        let mut set = PatternSet::new(self.entry.len());
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        let (dfa_cache, vm_cache) = &mut *caches;
        if self
            .dfa
            .try_which_overlapping_matches(dfa_cache, &input, &mut set)
            .is_err()
        {
            set.clear();
            self.vm
                .which_overlapping_matches(vm_cache, &input, &mut set);
        }
        set.iter().next().map(|p| self.entry[p.as_usize()])
    }
}

/// A list's patterns, ready to match.
pub(crate) struct PatternList<E> {
    pub(crate) entries: Vec<E>,
    literals: Option<AhoCorasick>,
    /// For each Aho-Corasick pattern: its entry and whether it must start
    /// the user agent.
    literal_entry: Vec<(u32, bool)>,
    regexes: Option<Regexes>,
}

impl<E> PatternList<E> {
    /// Builds the list from (entry, pattern) in priority order. A pattern the
    /// regex engine refuses (a lookahead, say) is left out and described in
    /// `skipped` as `"{label}: {error}"`.
    pub(crate) fn build(
        items: Vec<(E, String)>,
        label: impl Fn(&E) -> &str,
        skipped: &mut Vec<String>,
    ) -> Self {
        let mut items: Vec<(E, String, Option<Vec<Literal>>)> = items
            .into_iter()
            .map(|(e, p)| {
                let lits = literal_alternatives(&p);
                (e, p, lits)
            })
            .collect();
        fn regex_patterns<E>(items: &[(E, String, Option<Vec<Literal>>)]) -> Vec<&str> {
            (items.iter())
                .filter(|(_, _, lits)| lits.is_none())
                .map(|(_, p, _)| p.as_str())
                .collect()
        }
        // The whole list in one compile (the start-up cost that matters);
        // only if some pattern is refused, find it by compiling one by one
        // and leave it out.
        let whole = compile(&regex_patterns(&items));
        let nfa = match whole {
            Ok(nfa) => nfa,
            Err(_) => {
                items.retain(|(e, p, lits)| {
                    let refused = lits.is_none().then(|| compile(&[p])).and_then(Result::err);
                    let Some(err) = refused else { return true };
                    skipped.push(format!("{}: {err}", label(e)));
                    false
                });
                compile(&regex_patterns(&items)).expect("each pattern compiled alone")
            }
        };

        let mut entries = Vec::with_capacity(items.len());
        let mut literals = Vec::new();
        let mut literal_entry = Vec::new();
        let mut regex_entry = Vec::new();
        for (e, _, lits) in items {
            let i = entries.len() as u32;
            entries.push(e);
            match lits {
                Some(alts) => {
                    for lit in alts {
                        literal_entry.push((i, lit.at_start));
                        literals.push(lit.bytes);
                    }
                }
                None => regex_entry.push(i),
            }
        }
        let literals = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                // The noncontiguous NFA builds fastest (about half the
                // contiguous one's time for the OPAWG lists); its search
                // speed is plenty for the distinct user agents the
                // classifier's cache lets through.
                .kind(Some(AhoCorasickKind::NoncontiguousNFA))
                .build(&literals)
                .expect("an NFA of a few thousand short literals fits")
        });
        let regexes = (!regex_entry.is_empty()).then(|| Regexes::build(nfa, regex_entry));
        Self {
            entries,
            literals,
            literal_entry,
            regexes,
        }
    }

    /// The first entry, in list order, whose pattern matches `ua`.
    #[cfg(test)]
    pub(crate) fn first_match(&self, ua: &[u8]) -> Option<&E> {
        self.first_index(ua).map(|i| &self.entries[i as usize])
    }

    /// The first entry, in list order, whose pattern matches any of `forms`
    /// (the spellings of one user agent).
    pub(crate) fn first_match_any<S: AsRef<str>>(&self, forms: &[S]) -> Option<&E> {
        (forms.iter())
            .filter_map(|f| self.first_index(f.as_ref().as_bytes()))
            .min()
            .map(|i| &self.entries[i as usize])
    }

    /// The position in the list of the first entry whose pattern matches `ua`.
    fn first_index(&self, ua: &[u8]) -> Option<u32> {
        let mut best = u32::MAX;
        if let Some(ac) = &self.literals {
            for m in ac.find_overlapping_iter(ua) {
                let (entry, at_start) = self.literal_entry[m.pattern().as_usize()];
                if entry < best && (!at_start || m.start() == 0) {
                    best = entry;
                }
            }
        }
        if let Some(re) = &self.regexes {
            // Regexes are only worth running if one could come first.
            if re.entry[0] < best {
                if let Some(entry) = re.first(ua) {
                    best = best.min(entry);
                }
            }
        }
        (best != u32::MAX).then_some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the list must agree with: `regex::bytes::RegexSet`, first match
    /// in list order, over the patterns it accepts.
    fn oracle(patterns: &[String]) -> impl Fn(&[u8]) -> Option<usize> {
        let set = regex::bytes::RegexSetBuilder::new(patterns)
            .unicode(false)
            .size_limit(NFA_SIZE_LIMIT)
            .dfa_size_limit(NFA_SIZE_LIMIT)
            .build()
            .unwrap();
        move |ua| set.matches(ua).iter().next()
    }

    fn list(patterns: &[String]) -> (PatternList<usize>, Vec<String>) {
        let mut skipped = Vec::new();
        let items = patterns.iter().cloned().enumerate().collect();
        let list = PatternList::build(items, |_| "p", &mut skipped);
        (list, skipped)
    }

    fn lit(at_start: bool, s: &str) -> Literal {
        Literal {
            at_start,
            bytes: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn plain_strings_and_their_alternatives_are_literals() {
        assert_eq!(
            literal_alternatives("^Podcasts/|AirPodcasts\\/|^Pocket Casts"),
            Some(vec![
                lit(true, "Podcasts/"),
                lit(false, "AirPodcasts/"),
                lit(true, "Pocket Casts")
            ])
        );
        assert_eq!(
            literal_alternatives(r"^Mozilla/5\.0 \(x\)"),
            Some(vec![lit(true, "Mozilla/5.0 (x)")])
        );
        for regex in [
            r"^Aisten/\d",
            "^Adori(-Dev)?/",
            "a|",
            "|a",
            "^",
            "",
            "x$",
            "a.b",
            "(?i)overcast",
            r"a\ b",
            "caf\u{e9}",
            "a]",
            "a#b",
        ] {
            assert_eq!(literal_alternatives(regex), None, "{regex:?}");
        }
    }

    #[test]
    fn the_first_entry_in_list_order_wins_whichever_path_it_takes() {
        let patterns: Vec<String> = ["^Exo", r"Exo\d", "Player", "^ExoPlayer", "x(", "Lib$"]
            .map(String::from)
            .to_vec();
        let (list, skipped) = list(&patterns);
        assert_eq!(
            skipped,
            vec!["p: ".to_string() + &compile(&["x("]).unwrap_err().to_string()]
        );
        // Entries are numbered among the kept patterns.
        let kept: Vec<String> = patterns.iter().filter(|p| *p != "x(").cloned().collect();
        assert_eq!(list.entries, vec![0, 1, 2, 3, 5]);
        let oracle = oracle(&kept);
        for (ua, want) in [
            ("ExoPlayerLib", Some(0)),
            ("MyExo2 Player", Some(1)),
            ("MyExo Player", Some(2)),
            ("AppleLib", Some(5)),
            ("Lib x", None),
        ] {
            let got = list.first_match(ua.as_bytes()).copied();
            assert_eq!(got, want, "{ua}");
            let by_regex_set = oracle(ua.as_bytes()).map(|i| list.entries[i]);
            assert_eq!(got, by_regex_set, "{ua}");
        }
    }

    /// Strings joined from `pieces`: patterns and haystacks share an
    /// alphabet, so patterns often match, and regex syntax shows up often.
    fn joined(
        pieces: &'static [&'static str],
        len: std::ops::Range<usize>,
    ) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(pieces), len)
            .prop_map(|parts| parts.concat())
    }

    fn pattern() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "a", "b", "/", " ", "^", "|", r"\.", ".", "?", "+", r"\d", "1", "(", ")", "$", r"\(",
            "[ab]", "A",
        ];
        joined(PIECES, 1..8)
    }

    fn haystack() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &["a", "b", "/", " ", ".", "1", "(", "A", "ab", "a/"];
        joined(PIECES, 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_literal_reading_matches_what_the_regex_matches(p in pattern(), hays in proptest::collection::vec(haystack(), 1..16)) {
            let Some(alts) = literal_alternatives(&p) else { return Ok(()) };
            let re = regex::bytes::RegexBuilder::new(&p).unicode(false).build().unwrap();
            for h in &hays {
                let h = h.as_bytes();
                let lit = alts.iter().any(|l| {
                    if l.at_start { h.starts_with(&l.bytes) } else { h.windows(l.bytes.len()).any(|w| w == l.bytes) }
                });
                prop_assert_eq!(lit, re.is_match(h), "{:?} on {:?}", p, String::from_utf8_lossy(h));
            }
        }

        #[test]
        fn a_list_agrees_with_a_regex_set(patterns in proptest::collection::vec(pattern(), 1..12), hays in proptest::collection::vec(haystack(), 1..16)) {
            let kept: Vec<String> = patterns.iter().filter(|p| compile(&[p.as_str()]).is_ok()).cloned().collect();
            let (list, skipped) = list(&patterns);
            prop_assert_eq!(skipped.len(), patterns.len() - kept.len());
            let oracle = oracle(&kept);
            for h in &hays {
                let want = oracle(h.as_bytes()).map(|i| list.entries[i]);
                prop_assert_eq!(list.first_match(h.as_bytes()).copied(), want, "{:?} on {:?}", patterns, h);
            }
        }
    }

    /// Every list of the OPAWG files compiled into the crate against a regex
    /// set, on every example user agent of every list.
    #[test]
    fn the_real_opawg_lists_agree_with_a_regex_set() {
        let files = crate::ua::EMBEDDED_LISTS.map(|(_, json)| {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            v["entries"].as_array().unwrap().clone()
        });
        let mut uas: Vec<String> = Vec::new();
        for e in files.iter().flatten() {
            for ex in e["examples"].as_array().into_iter().flatten() {
                uas.push(ex.as_str().unwrap().to_owned());
            }
        }
        assert!(uas.len() > 500, "{}", uas.len());
        let mut matched = 0;
        for entries in &files {
            let patterns: Vec<String> = entries
                .iter()
                .map(|e| e["pattern"].as_str().unwrap().to_owned())
                .collect();
            let kept: Vec<String> = patterns
                .iter()
                .filter(|p| compile(&[p.as_str()]).is_ok())
                .cloned()
                .collect();
            let (list, _) = list(&patterns);
            let oracle = oracle(&kept);
            for ua in &uas {
                let want = oracle(ua.as_bytes()).map(|i| list.entries[i]);
                let got = list.first_match(ua.as_bytes()).copied();
                assert_eq!(got, want, "{ua}");
                matched += usize::from(got.is_some());
            }
        }
        assert!(matched > 500, "{matched}");
    }
}
