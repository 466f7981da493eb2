//! The local server: the same handler over plain HTTP/1.1 on a socket, for
//! development, the local stack and benchmarks. Stops on SIGTERM or SIGINT
//! after delivering what it holds and finalizing its files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::hit::HitRequest;
use crate::sequence::HEARTBEAT_INTERVAL;
use crate::App;

/// How long the accept loop pauses after an error that is not about one
/// connection: out of file descriptors (EMFILE, ENFILE) or memory (ENOBUFS,
/// ENOMEM). Retrying at once fails the same way while the connection waits
/// in the backlog: the loop would spin a core and write that warning
/// thousands of times a second. axum's `serve` pauses 1 s (as hyper 0.14's
/// `AddrIncoming` did); players' connections end within milliseconds, so
/// the edge tries again sooner.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long a stopping server waits for requests in flight. A sync hit waits
/// at most for its Firehose call's retries; the ones still busy after this
/// are cut off (their events were submitted before they waited, and the
/// pipeline's shutdown delivers them). Kubernetes and ECS give 30 s between
/// SIGTERM and SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the pipeline's last delivery may take after the drain; what is
/// not delivered by then is dead-lettered. With [`DRAIN_TIMEOUT`], inside
/// the 30 s Kubernetes and ECS allow.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(20);

/// How often an idle local edge checks whether a heartbeat is due: a tenth
/// of [`HEARTBEAT_INTERVAL`], so one is at most that late.
pub const HEARTBEAT_CHECK: Duration = Duration::from_secs(HEARTBEAT_INTERVAL.as_secs() / 10);

/// Whether an accept error concerns only the connection it was for (gone
/// already: the next one can be accepted at once).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// Serves on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    // Heartbeats while no hits come in (hits write them too when due);
    // the last one is written by the shutdown below.
    let beats = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                app.heartbeat_if_due().await;
            }
        })
    };
    // Tells every connection to finish: idle ones close at once, busy ones
    // after their answer.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                if !is_connection_error(&e) {
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        _ = &mut shutdown => break,
                    }
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut stopping = stopping.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&app, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                // A request whose client hangs up at once (a beacon fired
                // and forgotten) is still recorded; its answer goes to a
                // closed socket. Without this, hyper reads on while the
                // request is in flight, sees the EOF and drops the handler
                // before it first runs: the hit is lost
                // (tests/firehose_faults.rs: 29-30 of 30 such hits had no
                // event). It also spares that read on every request: about
                // 550 instructions, 1,100 for a sync pixel hit, which waits
                // (callgrind, docs/BENCHMARKS.md).
                .half_close(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stopped(&mut stopping) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections so the set does not grow forever.
        while conns.try_join_next().is_some() {}
    }
    // Idle connections close now; in-flight requests finish (their events
    // are submitted already), then the pipeline delivers everything and the
    // sink closes its files.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "connections still busy at the drain timeout are dropped; their events are recorded"
        );
    }
    beats.abort();
    app.shutdown(Some(FLUSH_TIMEOUT)).await;
    Ok(())
}

/// Resolves once the server stops (or is gone).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

async fn answer(
    app: &App,
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let resp = app
        .handle(HitRequest {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            source_ip: Some(peer.ip()),
            runtime_trace_id: None,
            deadline: None,
        })
        .await;
    resp.map(Full::new)
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when it is first polled: a signal that arrives as soon as
/// the edge says it listens must stop it cleanly, not by the default
/// action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}
