//! A loopback TCP proxy whose open connections can be made to go silent.
//!
//! The fault it injects is a peer that stops answering without closing:
//! after [`TcpProxy::silence`], the connections open at that moment still
//! accept bytes from both ends but deliver none, so each end waits for the
//! other for good (what a hung client task, a frozen host or a dropped
//! route looks like). When one end closes, the proxy closes the other, as
//! the kernel would once the process holding it exits. Connections opened
//! after `silence` are forwarded normally. [`TcpProxy::silence_when_client_sends`]
//! strikes at a chosen statement instead of at a moment, so a test does not
//! depend on how fast a loaded machine gets there.
//!
//! Dropping the proxy shuts every connection down at once, from the
//! dropping thread: its tasks may never run again (a test that panics
//! blocks its runtime in its clean-up), and a silent connection left open
//! keeps a PostgreSQL backend waiting in a `COPY` that stalls even
//! `DROP DATABASE` on other databases.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpProxyStats {
    pub connections: u64,
    /// Bytes read while silent, and dropped.
    pub swallowed: u64,
}

#[derive(Default)]
struct Shared {
    /// The silence flag of every connection opened so far.
    connections: Mutex<Vec<Arc<AtomicBool>>>,
    /// A second handle on both sockets of every connection, to shut them
    /// down on drop without the tasks that own them.
    sockets: Mutex<Vec<std::net::TcpStream>>,
    swallowed: AtomicU64,
    /// Bytes that, once a client sends them, silence every connection
    /// (that chunk included).
    trigger: Mutex<Option<Vec<u8>>>,
}

impl Shared {
    fn silence(&self) {
        for c in self.connections.lock().expect("not poisoned").iter() {
            c.store(true, Ordering::SeqCst);
        }
    }

    /// Does a client chunk, after `tail` (the end of its previous chunk),
    /// hold the trigger? Then silence. `tail` keeps what a trigger split
    /// across two reads needs.
    fn strike_on(&self, tail: &mut Vec<u8>, chunk: &[u8]) {
        let trigger = self.trigger.lock().expect("not poisoned");
        let Some(needle) = trigger.as_deref().filter(|n| !n.is_empty()) else {
            return;
        };
        tail.extend_from_slice(chunk);
        let hit = tail.windows(needle.len()).any(|w| w == needle);
        let keep = tail.len().saturating_sub(needle.len() - 1);
        tail.drain(..keep);
        drop(trigger);
        if hit {
            self.silence();
        }
    }
}

pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every connection open now go silent, for good.
    pub fn silence(&self) {
        self.shared.silence();
    }

    /// Silences every connection, for good, as soon as a client sends
    /// `needle` (for example the start of one SQL statement); the chunk
    /// holding it is swallowed too, so the server never sees it.
    pub fn silence_when_client_sends(&self, needle: &[u8]) {
        *self.shared.trigger.lock().expect("not poisoned") = Some(needle.to_vec());
    }

    pub fn stats(&self) -> TcpProxyStats {
        TcpProxyStats {
            connections: self.shared.connections.lock().expect("not poisoned").len() as u64,
            swallowed: self.shared.swallowed.load(Ordering::SeqCst),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        let sockets = std::mem::take(
            &mut *self
                .shared
                .sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for s in sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A handle on `s`'s socket that outlives the task owning `s`.
fn second_handle(s: &TcpStream) -> Option<std::net::TcpStream> {
    use std::os::fd::AsFd as _;
    s.as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(target).await else {
            continue; // the client sees its connection closed
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let silent = Arc::new(AtomicBool::new(false));
        // Before the connection is counted: a counted connection can be
        // shut down by a drop.
        shared.sockets.lock().expect("not poisoned").extend(
            [second_handle(&client), second_handle(&server)]
                .into_iter()
                .flatten(),
        );
        shared
            .connections
            .lock()
            .expect("not poisoned")
            .push(silent.clone());
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::spawn(pump(cr, sw, silent.clone(), shared.clone(), true));
        tokio::spawn(pump(sr, cw, silent, shared.clone(), false));
    }
}

/// Copies `from` to `to` until `from` ends, dropping what it reads while
/// `silent`; then closes `to`'s direction. `from_client`: this direction
/// is watched for the trigger.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    silent: Arc<AtomicBool>,
    shared: Arc<Shared>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if from_client {
            shared.strike_on(&mut tail, &buf[..n]);
        }
        if silent.load(Ordering::SeqCst) {
            shared.swallowed.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::time::Duration;

    /// A trigger split across two reads still strikes; before it, nothing.
    #[test]
    fn a_trigger_split_across_reads_silences_every_connection() {
        let shared = Shared::default();
        let flag = Arc::new(AtomicBool::new(false));
        shared.connections.lock().unwrap().push(flag.clone());
        *shared.trigger.lock().unwrap() = Some(b"COPY events ".to_vec());
        let mut tail = Vec::new();
        shared.strike_on(&mut tail, b"BEGIN; COPY ev");
        assert!(!flag.load(Ordering::SeqCst));
        shared.strike_on(&mut tail, b"ents (id) FROM STDIN");
        assert!(flag.load(Ordering::SeqCst));
    }

    /// The case it exists for: the runtime's one thread is busy (a test
    /// panicked and is cleaning up), so no proxy task runs, and the upstream
    /// end of a silent connection must still see it close.
    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections_even_when_its_tasks_cannot_run() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = TcpProxy::start(upstream.local_addr().unwrap())
            .await
            .unwrap();
        let _client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut accepted, _) = tokio::task::spawn_blocking(move || upstream.accept().unwrap())
            .await
            .unwrap();
        while proxy.stats().connections == 0 {
            tokio::task::yield_now().await;
        }
        proxy.silence();
        // From here on this thread does not return to the runtime.
        let reader = std::thread::spawn(move || {
            accepted
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            accepted.read(&mut [0u8; 1]).map_err(|e| e.kind())
        });
        drop(proxy);
        assert_eq!(
            reader.join().unwrap(),
            Ok(0),
            "the upstream end sees the connection end"
        );
    }
}
