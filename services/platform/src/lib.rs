#![doc = include_str!("../README.md")]

pub mod audit;
pub mod config;
pub mod db;
pub mod id_periods;
pub mod metrics;
pub mod roles;
pub mod rollup;
pub mod shutdown;
pub mod sketch;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{DatabaseSettings, DbRole};
