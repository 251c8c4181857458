//! # rs2p-sync: the sync socket
//!
//! A dictionary replicated on every peer of a mesh (py2p's `SyncSocket`), built on
//! [`rs2p_mesh`] exactly as a user would build a socket type: a [`SyncMachine`] (a
//! [`rs2p_mesh::Handler`] under [`PROTOCOL`], no I/O) and the tokio-facing [`SyncSocket`].
//!
//! - **API:** `get` (local, O(1)), `set`, `del`, `update` (all or none), `set_many` (each write
//!   its own result, signed together), `keys`, `values`, `items`, `pop`, `popitem`, `len`,
//!   `contains`, and a stream of [`SyncEvent`]s. Keys and values are bytes; any
//!   `AsRef<[u8]>` works, so `"测试"` and `b"test"` are keys.
//! - **Leases** (on by default, [`SyncConfig::leasing`]): a key written by one peer cannot be
//!   overwritten or deleted by another for an hour ([`SetError::LeaseHeld`], py2p's `KeyError`);
//!   the owner's writes renew it, its delete relinquishes it; a tie in the same millisecond goes
//!   to the lower peer id. Without leasing, the last writer wins with the same tie-break.
//! - **Signed records:** every write is a record signed by its owner (in batches, one signature
//!   over a Merkle root), verified by every receiver on every path; owner and time come from the
//!   signed record, never from the neighbour that relayed it. A trusted network may turn
//!   signatures off ([`SyncConfig::signed`]): unsigned nodes form their own dictionary under
//!   [`PROTOCOL_UNSIGNED`].
//! - **Convergence:** a key shows a pure function of its set of valid records (see
//!   [`proto::resolve`]), so replicas holding the same records agree whatever the arrival order;
//!   join and periodic repair exchange digests and send what the other lacks. Under a partition
//!   both sides may grant a lease; after healing one write wins deterministically and every node
//!   gets [`SyncEvent::WriteLost`].
//! - **What is kept:** see [`proto::store`] for the exact guarantee. Without leasing a key keeps
//!   only its greatest record; with leasing, records older than the finality horizon
//!   ([`SyncConfig::horizon_ms`]) are folded into a per-key checkpoint, which is exact as long as
//!   every record reaches every node within the horizon.
//!
//! ```
//! use rs2p_sync::{SetError, SyncOptions, SyncSocket};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = SyncSocket::bind(SyncOptions::default()).await?;
//! let b = SyncSocket::bind(SyncOptions::default()).await?;
//! b.mesh().connect(a.mesh().local_addr()).await?;
//! a.set("测试", "test").await?;
//! while b.get("测试").is_none() {
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//! }
//! assert_eq!(b.get("测试").as_deref(), Some(&b"test"[..]));
//! // a leases the key: b may not overwrite it.
//! assert!(matches!(b.set("测试", "mine").await, Err(SetError::LeaseHeld { .. })));
//! # Ok(()) }
//! ```
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
pub use proto::{SyncEvent, SyncMachine, SyncStats, PROTOCOL, PROTOCOL_UNSIGNED};
#[cfg(feature = "net")]
pub use rs2p_persist::{DataOptions, DiskStats, PersistError};
