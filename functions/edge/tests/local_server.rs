//! The real binary in local mode, out of file descriptors under a flood of
//! connections: its accept loop pauses instead of spinning on the same
//! error, and it serves and records hits again once descriptors are free.

use std::path::Path;
use std::time::Duration;

use earshot_edge::local::ACCEPT_ERROR_PAUSE;
use earshot_testkit::edge::{
    events_in_sink_dir, match_events_to_hits, mixed_hits, send_sequentially,
};
use earshot_testkit::LocalEdge;
use rustix::process::{getrlimit, prlimit, Pid, Resource, Rlimit};

/// Connections opened at once: far more than the descriptors left to the edge.
const FLOOD: usize = 40;
/// Descriptors the edge may open beyond those it holds when the flood starts.
const SPARE_FDS: u64 = 4;
/// How long the flood is held.
const HOLD: Duration = Duration::from_secs(1);

/// The edge in local mode with the directory sink in `dir`.
async fn spawn_edge(dir: &Path, listener_secret: &str) -> LocalEdge {
    let env = vec![
        ("EARSHOT_SINK".into(), format!("dir:{}", dir.display())),
        ("EARSHOT_LISTENER_SECRET".into(), listener_secret.into()),
    ];
    LocalEdge::spawn(Path::new(env!("CARGO_BIN_EXE_earshot-edge")), env)
        .await
        .unwrap()
}

#[tokio::test]
async fn out_of_descriptors_the_edge_pauses_accepting_then_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = spawn_edge(dir.path(), "fd-flood-listener-secret-0123456789").await;
    let hits = mixed_hits(2, "fd-flood");
    // The first hit opens the sink's file, so the edge holds it from now on.
    send_sequentially(&hits[..1], &edge.base_url())
        .await
        .unwrap();

    let raw_pid = edge.process.pid().unwrap();
    let open = std::fs::read_dir(format!("/proc/{raw_pid}/fd"))
        .unwrap()
        .count() as u64;
    let pid = Pid::from_raw(raw_pid as i32).expect("a live pid");
    let limit = open + SPARE_FDS;
    // The edge inherited this process's limits; only the soft one changes.
    let ours = getrlimit(Resource::Nofile);
    let old = prlimit(
        Some(pid),
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: ours.maximum,
        },
    )
    .expect("setting the edge's descriptor limit");

    let addr = edge.addr;
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        // The kernel completes each handshake; the edge runs out of
        // descriptors accepting them.
        flood.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(HOLD).await;
    let failures = edge
        .process
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    // One failed accept per pause, give or take the hold's edges; spinning
    // on the error logs it thousands of times in that second.
    let most = 2 * (HOLD.as_millis() / ACCEPT_ERROR_PAUSE.as_millis()) as usize + 2;
    assert!(
        (1..=most).contains(&failures),
        "{failures} failed accepts in {HOLD:?} (expected 1..={most})"
    );

    prlimit(Some(pid), Resource::Nofile, old).unwrap();
    drop(flood);
    send_sequentially(&hits[1..], &edge.base_url())
        .await
        .expect("served again");
    edge.stop().await.unwrap();

    match_events_to_hits(&hits, &events_in_sink_dir(dir.path()).unwrap()).unwrap();
}

#[tokio::test]
async fn a_stop_closes_idle_connections_at_once_instead_of_waiting_out_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = spawn_edge(dir.path(), "idle-stop-listener-secret-0123456789").await;
    // A player (or a load balancer) that keeps its connection open after a
    // hit: the client below holds it idle in its pool until it is dropped.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let hits = mixed_hits(1, "idle-stop");
    hits[0].send(&client, &edge.base_url()).await.unwrap();

    edge.stop().await.unwrap();
    let stderr = edge.process.stderr_lines();
    assert!(
        !stderr.iter().any(|l| l.contains("drain timeout")),
        "the idle connection held the stop until the drain timeout:\n{}",
        edge.process.output_text()
    );
    drop(client);
    match_events_to_hits(&hits, &events_in_sink_dir(dir.path()).unwrap()).unwrap();
}
