//! An S3 proxy in front of moto that denies reading chosen objects.
//!
//! moto lets every caller read everything (it does not enforce IAM unless
//! told to, and then for every call), so an object the loader's role may
//! not read is made here, at the network layer: a `GetObject` whose key
//! contains one of the denied fragments is answered 403 `AccessDenied` with
//! S3's XML error body; every other call is forwarded to moto unchanged.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;

use crate::server::{Proxy, Req, Resp, Upstream};

/// What the proxy keeps: where it forwards, what it denies, and how often
/// it did.
pub struct S3Deny {
    upstream: Upstream,
    denied: Vec<String>,
    denials: Mutex<usize>,
}

/// The proxy; stops when dropped. Its [`Proxy::aws_env`] points a child's
/// AWS SDK (S3 and SQS) at it.
pub type S3DenyProxy = Proxy<S3Deny>;

impl Proxy<S3Deny> {
    /// Listens on 127.0.0.1:0, forwards to `upstream` (moto's endpoint), and
    /// denies `GET`s of object keys containing any of `denied`.
    pub async fn start(upstream: &str, denied: &[&str]) -> anyhow::Result<Self> {
        let state = S3Deny {
            upstream: Upstream::new(upstream)?,
            denied: denied.iter().map(|d| (*d).to_owned()).collect(),
            denials: Mutex::new(0),
        };
        Self::serve(state, |s, req| async move { handle(&s, req).await }).await
    }

    /// `GetObject` calls answered AccessDenied so far.
    pub fn denials(&self) -> usize {
        *self.state.denials.lock().expect("lock")
    }
}

async fn handle(state: &S3Deny, req: Req) -> Resp {
    let path = req.uri().path();
    if req.method() == http::Method::GET && state.denied.iter().any(|d| path.contains(d.as_str())) {
        *state.denials.lock().expect("lock") += 1;
        return access_denied(path);
    }
    let body = req.body().clone();
    state.upstream.forward(&req, body).await.0
}

/// What S3 answers a caller whose policy does not allow `s3:GetObject`.
fn access_denied(resource: &str) -> Resp {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
         <Message>Access Denied</Message><Resource>{resource}</Resource>\
         <RequestId>EARSHOTTESTDENY</RequestId></Error>"
    );
    http::Response::builder()
        .status(403)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
