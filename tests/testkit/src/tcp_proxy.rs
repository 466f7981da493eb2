//! A loopback TCP proxy whose open connections can be made to go silent.
//!
//! The fault it injects is a peer that stops answering without closing:
//! after [`TcpProxy::silence`], the connections open at that moment still
//! accept bytes from both ends but deliver none, so each end waits for the
//! other for good (what a hung client task, a frozen host or a dropped
//! route looks like). When one end closes, the proxy closes the other, as
//! the kernel would once the process holding it exits. Connections opened
//! after `silence` are forwarded normally.

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
    swallowed: AtomicU64,
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
        for c in self.shared.connections.lock().expect("not poisoned").iter() {
            c.store(true, Ordering::SeqCst);
        }
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
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(target).await else {
            continue; // the client sees its connection closed
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let silent = Arc::new(AtomicBool::new(false));
        shared
            .connections
            .lock()
            .expect("not poisoned")
            .push(silent.clone());
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        tokio::spawn(pump(cr, sw, silent.clone(), shared.clone()));
        tokio::spawn(pump(sr, cw, silent, shared.clone()));
    }
}

/// Copies `from` to `to` until `from` ends, dropping what it reads while
/// `silent`; then closes `to`'s direction.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    silent: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
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
