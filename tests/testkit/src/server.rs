//! A tiny HTTP/1.1 server on 127.0.0.1:0 for the test doubles that speak
//! HTTP (the Firehose proxy, the Lambda Runtime API emulator).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A request with its body read.
pub type Req = http::Request<Bytes>;
pub type Resp = http::Response<Full<Bytes>>;
pub type BoxFut = Pin<Box<dyn Future<Output = Resp> + Send>>;
pub type Handler = Arc<dyn Fn(Req) -> BoxFut + Send + Sync>;

/// A proxy on 127.0.0.1:0 in front of moto: its server, and the state its
/// handler shares with the test. Stops when dropped.
pub struct Proxy<S> {
    server: Server,
    pub(crate) state: Arc<S>,
}

impl<S: Send + Sync + 'static> Proxy<S> {
    /// Serves `handle` over `state`.
    pub(crate) async fn serve<F, Fut>(state: S, handle: F) -> anyhow::Result<Self>
    where
        F: Fn(Arc<S>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let state = Arc::new(state);
        let server = Server::serve(state.clone(), handle).await?;
        Ok(Self { server, state })
    }
}

impl<S> Proxy<S> {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Environment pointing a child's AWS SDK at the proxy.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        crate::moto::aws_env(&self.endpoint())
    }
}

/// A running server; stops (and drops its connections) when dropped.
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(handler: Handler) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task ends them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let resp = match body.collect().await {
                                Ok(b) => {
                                    handler(http::Request::from_parts(parts, b.to_bytes())).await
                                }
                                Err(e) => text(400, &format!("reading the body: {e}")),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, task })
    }

    /// Serves `handle(state, request)`.
    pub async fn serve<S, F, Fut>(state: Arc<S>, handle: F) -> anyhow::Result<Self>
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let handle = Arc::new(handle);
        Self::start(Arc::new(move |req| {
            let (state, handle) = (state.clone(), handle.clone());
            Box::pin(async move { handle(state, req).await })
        }))
        .await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn text(status: u16, body: &str) -> Resp {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid response")
}

pub fn json(status: u16, content_type: &str, body: &serde_json::Value) -> Resp {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// Where a proxy sends what it does not answer itself.
pub struct Upstream {
    /// `http://host:port`, no trailing slash.
    base: String,
    http: reqwest::Client,
}

impl Upstream {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    /// Sends `req` (with `body`) upstream and answers with upstream's
    /// answer, and its body when there was one.
    pub async fn forward(&self, req: &Req, body: Bytes) -> (Resp, Option<Bytes>) {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut rb = self
            .http
            .request(req.method().clone(), format!("{}{path}", self.base));
        for (name, value) in req.headers() {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "connection" | "transfer-encoding"
            ) {
                rb = rb.header(name, value);
            }
        }
        let upstream = match rb.body(body).send().await {
            Ok(r) => r,
            Err(e) => return (text(502, &format!("proxy: upstream: {e}")), None),
        };
        let status = upstream.status();
        let headers = upstream.headers().clone();
        let bytes = match upstream.bytes().await {
            Ok(b) => b,
            Err(e) => return (text(502, &format!("proxy: upstream body: {e}")), None),
        };
        let mut resp = http::Response::builder().status(status);
        for (name, value) in &headers {
            if !matches!(
                name.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            ) {
                resp = resp.header(name, value);
            }
        }
        let resp = resp
            .body(Full::new(bytes.clone()))
            .unwrap_or_else(|e| text(502, &format!("proxy: {e}")));
        (resp, Some(bytes))
    }
}
