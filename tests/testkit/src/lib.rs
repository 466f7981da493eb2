#![doc = include_str!("../README.md")]

pub mod edge;
pub mod firehose_proxy;
pub mod lambda;
pub mod moto;
pub mod process;
pub mod s3_notify;
pub mod server;
pub mod tcp_proxy;

pub use edge::LocalEdge;
pub use firehose_proxy::{FirehoseFault, FirehoseFaultProxy, ProxyStats};
pub use lambda::{InvokeOptions, LambdaFunction, LambdaRuntimeEmulator};
pub use moto::Moto;
pub use process::{ChildProcess, ProcessSpec};
pub use tcp_proxy::{TcpProxy, TcpProxyStats};
