#![doc = include_str!("../README.md")]

pub mod event;
pub mod geo;
mod hex;
pub mod ids;
pub mod listener;
pub mod metric;
mod patterns;
pub mod pixel;
pub mod sequence;
pub mod signing;
pub mod ssai;
pub mod ua;
pub mod wire;

pub use event::{EventKind, Placement, TrackingEvent, Verdict};
pub use geo::{CountryCode, RegionCode};
pub use ids::{CampaignId, CreativeId, EpisodeId, IdError, ShowId};
pub use listener::{ListenerHasher, ListenerId, ListenerPeriod, ListenerSecret};
pub use pixel::{CheckedHit, InvalidReason, PixelParams};
pub use sequence::{EdgeId, EdgeSeq, Heartbeat};
pub use signing::{KeyId, SignatureError, SignedFields, SigningKey, SigningKeys};
pub use ssai::{DeviceHeaders, SsaiError};
pub use ua::{UaClass, UaClassifier, UaInfo, UaLoadReport};
pub use wire::{DecodeError, WireField, WireType, WIRE_FIELDS, WIRE_SCHEMA_VERSION};
