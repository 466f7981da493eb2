//! The real binary in local mode with the directory sink, killed with
//! SIGKILL: the hits it acknowledged are in its unfinished temporary file,
//! and the next edge to start in the directory gives that file its final
//! name, so the loader gets every acknowledged event.

use std::path::Path;

use earshot_testkit::edge::{decode_ndjson, match_events_to_hits, mixed_hits, send_sequentially};
use earshot_testkit::LocalEdge;

const HITS: usize = 40;

fn edge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_earshot-edge"))
}

fn env(dir: &Path) -> Vec<(String, String)> {
    vec![
        ("EARSHOT_SINK".into(), format!("dir:{}", dir.display())),
        ("EARSHOT_FLUSH".into(), "sync".into()),
        (
            "EARSHOT_LISTENER_SECRET".into(),
            "dir-crash-listener-secret-0123456789".into(),
        ),
    ]
}

/// The directory's file names, split into final and temporary ones.
fn files(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().partition(|n| !n.starts_with('.'))
}

#[tokio::test]
async fn an_edge_killed_mid_file_leaves_its_acknowledged_hits_to_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = LocalEdge::spawn(edge_bin(), env(dir.path())).await.unwrap();
    let hits = mixed_hits(HITS, "dir-crash");
    // Sequential hits on loopback take milliseconds, far less than the
    // second after which the sink closes a file: all land in one open file.
    send_sequentially(&hits, &edge.base_url()).await.unwrap();
    edge.process.kill().await.unwrap();

    let (finished, unfinished) = files(dir.path());
    assert!(finished.is_empty(), "{finished:?}");
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    let left = &unfinished[0];

    // The next edge finalizes it before it listens, and says so.
    let mut next = LocalEdge::spawn(edge_bin(), env(dir.path())).await.unwrap();
    let (finished, unfinished) = files(dir.path());
    assert_eq!(finished, vec![final_name(left)]);
    assert!(unfinished.is_empty(), "{unfinished:?}");
    assert!(
        next.process
            .stderr_lines()
            .iter()
            .any(|l| l.contains("finalized an events file a stopped process left unfinished")),
        "{}",
        next.process.output_text()
    );
    next.stop().await.unwrap();

    let events = decode_ndjson(&std::fs::read(dir.path().join(&finished[0])).unwrap()).unwrap();
    match_events_to_hits(&hits, &events).unwrap();
}

fn final_name(tmp: &str) -> String {
    tmp.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .expect("a temporary name")
        .to_owned()
}
