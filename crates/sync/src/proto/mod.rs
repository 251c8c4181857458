//! The sync socket without I/O: records, resolution, the store and the state machine.

mod chunk;
pub mod hash_index;
pub mod key_map;
pub mod machine;
pub use rs2p_record::{merkle, record, relative, resolve};
pub mod store;

pub(crate) use machine::slices;
pub use machine::{live_batch_bytes, write_size, LIVE_BATCH_BYTES};
pub use machine::{SyncEvent, SyncMachine, SyncStats, PROTOCOL, PROTOCOL_UNSIGNED};
