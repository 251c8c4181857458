//! The sync socket without I/O: records, resolution, the store and the state machine.

pub mod machine;
pub mod merkle;
pub mod record;
pub mod resolve;
pub mod store;

pub use machine::{SyncEvent, SyncMachine, SyncStats, PROTOCOL};
