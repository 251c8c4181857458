//! # rs2p: peer-to-peer sockets for Rust
//!
//! The Rust member of the py2p / js2p family: machines that share state without a server. This
//! crate re-exports the layers; depend on one layer alone if that is all you need.
//!
//! | layer | crate | what it gives |
//! | --- | --- | --- |
//! | [`wire`] | `rs2p-wire` | protobuf messages, size-limited framing |
//! | [`base`] | `rs2p-base` | ed25519 identities, networks, the Noise `XXpsk3` handshake |
//! | [`mesh`] | `rs2p-mesh` | `MeshSocket`: peers, discovery, signed floods, whispers, handlers |
//! | [`record`] | `rs2p-record` | signed records and the order that picks a key's newest write |
//! | [`sync`] | `rs2p-sync` | `SyncSocket`: a dictionary replicated on every peer, with leases |
//! | [`chord`] | `rs2p-chord` | `ChordSocket`: a distributed hash table, each key on a few peers |
//!
//! ```no_run
//! use rs2p::sync::{SyncOptions, SyncSocket};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let a = SyncSocket::bind(SyncOptions::default()).await?;
//! let b = SyncSocket::bind(SyncOptions::default()).await?;
//! b.mesh().connect(a.mesh().local_addr()).await?;
//! a.set("测试", "test").await?;
//! // ... a moment later, on every peer:
//! assert_eq!(b.get("测试").as_deref(), Some(&b"test"[..]));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use rs2p_base as base;
pub use rs2p_chord as chord;
pub use rs2p_mesh as mesh;
pub use rs2p_record as record;
pub use rs2p_sync as sync;
pub use rs2p_wire as wire;
