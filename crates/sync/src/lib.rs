//! # rs2p-sync
#![forbid(unsafe_code)]

mod config;
mod error;
pub mod proto;

pub use config::SyncConfig;
pub use error::{DelError, RecordError, SetError, SyncError};
#[cfg(feature = "net")]
mod net;

#[cfg(feature = "net")]
pub use net::{SyncEventItem, SyncEvents, SyncOptions, SyncSocket};
pub use proto::{SyncEvent, SyncMachine, SyncStats, PROTOCOL};
