//! The real binary in local mode, started without `EARSHOT_UA_PATTERNS_DIR`:
//! it classifies with the OPAWG lists compiled into it. And with the
//! variable, a folder's lists replace them.
//!
//! `EARSHOT_EDGE_BIN` runs these against another build of the binary (a
//! release build, `target/release/earshot-edge`); by default cargo's.

use std::path::{Path, PathBuf};

use earshot_domain::{TrackingEvent, Verdict};
use earshot_testkit::edge::events_in_sink_dir;
use earshot_testkit::LocalEdge;

const SECRET: &str = "ua-test-listener-secret-0123456789";

fn edge_bin() -> PathBuf {
    std::env::var_os("EARSHOT_EDGE_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_earshot-edge")))
}

/// Sends one pixel hit per user agent (raw header bytes), stops the edge
/// and returns the events in the order sent.
async fn classify(patterns_dir: &str, agents: &[&str]) -> Vec<TrackingEvent> {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "EARSHOT_SINK".into(),
            format!("dir:{}", dir.path().display()),
        ),
        ("EARSHOT_LISTENER_SECRET".into(), SECRET.into()),
        // Empty is unset: no folder, whatever this process's environment says.
        ("EARSHOT_UA_PATTERNS_DIR".into(), patterns_dir.into()),
    ];
    let mut edge = LocalEdge::spawn(&edge_bin(), env).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (i, ua) in agents.iter().enumerate() {
        let resp = client
            .get(format!(
                "{}/v1/t?c=ua-campaign&cr=cr_30s&ev=impression&cb={i}",
                edge.base_url()
            ))
            .header(
                "user-agent",
                reqwest::header::HeaderValue::from_bytes(ua.as_bytes()).unwrap(),
            )
            .header("x-amzn-trace-id", format!("Root=1-00000000-{i:024x}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    edge.stop().await.unwrap();
    let mut events = events_in_sink_dir(dir.path()).unwrap();
    events.sort_by(|a, b| a.trace_id.cmp(&b.trace_id));
    assert_eq!(events.len(), agents.len());
    events
}

fn outcome(e: &TrackingEvent) -> (Verdict, Option<&str>, Option<&str>) {
    (e.verdict, e.reason.as_deref(), e.app.as_deref())
}

#[tokio::test]
async fn without_a_patterns_folder_the_binary_classifies_with_the_compiled_in_opawg_lists() {
    let agents = [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        // A podcast crawler OPAWG lists (bots.json, "Blubrry Crawler").
        "Blubrry Podcasting/1.0",
        "Overcast/3.0 (+http://overcast.fm/; Apple Watch podcast app)",
        // An app OPAWG lists whose name says "bot".
        "Tweetbot/53300 CFNetwork/1335.0.3 Darwin/21.6.0",
        // Apple Podcasts in Russian, raw and as CFNetwork encodes it.
        "Подкасты/1520.39 CFNetwork/1206 Darwin/20.1.0",
        "%D0%9F%D0%BE%D0%B4%D0%BA%D0%B0%D1%81%D1%82%D1%8B/1410.25.1 CFNetwork/1107.1 Darwin/19.0.0",
    ];
    let events = classify("", &agents).await;
    let got: Vec<_> = events.iter().map(outcome).collect();
    assert_eq!(
        got,
        vec![
            (Verdict::Bot, Some("ua_listed:Googlebot"), Some("Googlebot")),
            (Verdict::Bot, Some("ua_listed:AhrefsBot"), Some("AhrefsBot")),
            (
                Verdict::Bot,
                Some("ua_listed:Blubrry Crawler"),
                Some("Blubrry Crawler")
            ),
            (Verdict::Valid, None, Some("Overcast")),
            (Verdict::Valid, None, Some("Tweetbot")),
            (Verdict::Valid, None, Some("Apple Podcasts")),
            (Verdict::Valid, None, Some("Apple Podcasts")),
        ]
    );
    assert_eq!(events[5].ua.as_deref(), Some(agents[5]), "recorded as sent");
}

#[tokio::test]
async fn a_patterns_folder_replaces_the_compiled_in_lists() {
    let mini = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/opawg-mini");
    let events = classify(
        mini.to_str().unwrap(),
        &[
            "ExampleChecker/2.0",
            "Overcast/3.0 (+http://overcast.fm/; iOS podcast app)",
        ],
    )
    .await;
    assert_eq!(
        events.iter().map(outcome).collect::<Vec<_>>(),
        vec![
            (
                Verdict::Bot,
                Some("ua_listed:Example Checker"),
                Some("Example Checker")
            ),
            // Not in the folder's apps list.
            (Verdict::Valid, None, None),
        ]
    );
}
