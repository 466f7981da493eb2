#![doc = include_str!("../README.md")]

pub mod compact;
pub mod copy;
pub mod counting;
pub mod daily;
mod day_sketches;
pub mod parse;
pub mod partitions;
pub mod pipeline;
pub mod recount;
pub mod run;
pub mod sequences;
pub mod settings;
pub mod sketch_blocks;
pub mod source;
pub mod store;
pub mod verify;
pub mod watchdog;

pub use run::{LoadOptions, Loader, RunSummary};
pub use settings::LoaderSettings;
pub use source::{Object, Source, SourceSpec};
