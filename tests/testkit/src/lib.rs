#![doc = include_str!("../README.md")]

pub mod edge;
pub mod events;
pub mod files;
pub mod firehose_proxy;
pub mod lambda;
#[cfg(feature = "loader")]
pub mod loader;
pub mod mmdb;
pub mod moto;
pub mod process;
pub mod s3_deny_proxy;
pub mod s3_notify;
pub mod server;
pub mod tcp_proxy;

pub use edge::LocalEdge;
pub use events::{event, gzip, gzip_at, listener, ndjson, v7_at, v7_seeded, EventBuilder};
pub use files::{temp_dir, TempDir};
pub use firehose_proxy::{FirehoseFault, FirehoseFaultProxy, ProxyStats};
pub use lambda::{InvokeOptions, LambdaFunction, LambdaRuntimeEmulator};
pub use moto::Moto;
pub use process::{ChildProcess, ProcessSpec};
pub use s3_deny_proxy::S3DenyProxy;
pub use tcp_proxy::{TcpProxy, TcpProxyStats};
