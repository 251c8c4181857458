//! # rs2p-chord: a distributed hash table over the mesh
//!
//! The third socket of the py2p family: a dictionary spread over the peers instead of copied to
//! all of them, for large data that changes rarely. Peers and keys hash onto one 2^64 ring
//! ([`ring`]); each key lives on its successor and the next `replicas − 1` peers (default 3);
//! lookups follow finger tables and take O(log n) hops; stabilisation keeps successors, fingers
//! and replicas right while peers join, leave and fail. Values are the sync socket's signed
//! records ([`rs2p_record`]): every replica checks the writer's signature and keeps the newest
//! write by the same order.
//!
//! Layers: [`proto::ChordMachine`] is the whole protocol as a mesh
//! [`Handler`](rs2p_mesh::Handler) without I/O (it runs in the deterministic simulator:
//! `sim::SimRing` with the `sim` feature); [`ChordSocket`] (feature `net`, default) drives it
//! with tokio and offers the dict API.
//!
//! ## Choosing between the sync and the chord socket
//! The sync socket copies the whole dictionary to every peer: reads are local and instant, every
//! write reaches everyone, and it suits small, often-read shared state. The chord socket stores
//! each key on `replicas` peers only: memory per peer shrinks as the ring grows, but every read
//! and write is a lookup over the network (a few hops), and `keys()`/`len()` walk the ring.
//!
//! ```
//! # #[cfg(feature = "net")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rs2p_chord::ChordError> {
//! use std::time::Duration;
//! use rs2p_chord::{ChordOptions, ChordSocket};
//!
//! let a = ChordSocket::bind(ChordOptions::default()).await?;
//! let b = ChordSocket::bind(ChordOptions::default()).await?;
//! b.mesh().connect(a.mesh().local_addr()).await?;
//! assert!(b.wait_joined(Duration::from_secs(10)).await);
//!
//! a.set("fruit", "apple").await?;
//! assert_eq!(b.get("fruit").await?.as_deref(), Some(&b"apple"[..]));
//! assert_eq!(b.get("missing").await?, None); // answered by the owner, no timeout
//! assert_eq!(a.len().await?, 1);
//! assert_eq!(b.pop("fruit").await?.as_ref(), b"apple");
//! # b.close().await?;
//! # a.close().await?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "net"))]
//! # fn main() {}
//! ```

mod config;
mod error;
#[cfg(feature = "net")]
mod net;
pub mod proto;
pub mod ring;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::ChordConfig;
pub use error::ChordError;
#[cfg(feature = "net")]
pub use net::{ChordOptions, ChordSocket};
pub use proto::{ChordMachine, ChordStats, Completion, NodeRef, Outcome, PROTOCOL};
#[cfg(feature = "net")]
pub use rs2p_persist::{DataOptions, DiskStats};
