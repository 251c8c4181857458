//! # rs2p-mesh: the mesh socket
//!
//! The layer every rs2p socket stands on, above [`rs2p_base`] (identities and the secure
//! handshake). A [`MeshSocket`] listens on TCP, dials the peers it is given and the ones it hears
//! of (keeping between `min_peers` and `max_peers`, one connection per peer, redialing with
//! backoff), floods messages signed by their origin to every node exactly once, whispers to
//! direct peers, and hosts socket types.
//!
//! - [`proto`]: the state machine without I/O ([`proto::Mesh`]), the extension point
//!   ([`Handler`], [`Context`]) and [`proto::Node`], which joins them. Builds without tokio
//!   (`--no-default-features`) and runs in `rs2p-testkit`'s simulator.
//! - [`net`] (feature `net`, on by default): the tokio driver behind [`MeshSocket`].
//!
//! A **socket type** is a [`Handler`] registered under a protocol id (the sync socket is
//! `/rs2p/sync/2`); messages for protocols without a handler come out as
//! [`MeshEvent::Message`], so the mesh is also usable on its own:
//!
//! ```
//! use rs2p_mesh::{net::EventItem, MeshEvent, MeshOptions, MeshSocket};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rs2p_mesh::MeshError> {
//! let a = MeshSocket::bind(MeshOptions::default()).await?;
//! let b = MeshSocket::bind(MeshOptions::default()).await?;
//! b.connect(a.local_addr()).await?;
//! let mut events = a.events();
//! b.broadcast("/chat/1", "hello").await?;
//! loop {
//!     if let Some(EventItem::Event(MeshEvent::Message { payload, origin, .. })) = events.next().await {
//!         assert_eq!(&payload[..], b"hello");
//!         assert_eq!(origin, b.local_id());
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
#[cfg(feature = "net")]
pub mod net;
pub mod proto;

pub use config::{MeshConfig, FRAME_MARGIN};
pub use error::MeshError;
#[cfg(feature = "net")]
pub use net::{EventStream, MeshOptions, MeshSocket};
pub use proto::{
    Context, Delivery, Handler, InboundMessage, MeshEvent, MeshStats, Shared, Verdict,
};
pub use rs2p_base::{Keypair, Network, PeerId};
