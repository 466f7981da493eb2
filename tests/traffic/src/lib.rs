#![doc = include_str!("../README.md")]

pub mod agents;
pub mod expected;
pub mod generate;
pub mod plan;
pub mod record;
pub mod send;

pub use expected::{CampaignReport, Counts, Expected};
pub use generate::{Forgery, Generator, Hit, HitKind};
pub use plan::{Amount, Burst, CampaignSpec, Mix, Plan};
pub use send::{send, Outcome, SendOptions, SendReport};
