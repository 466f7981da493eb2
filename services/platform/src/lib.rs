#![doc = include_str!("../README.md")]

pub mod config;
pub mod db;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::Settings;
