//! # rs2p-base: identities, networks and the secure handshake
//!
//! The second layer of rs2p, above [`rs2p_wire`] and below the mesh. It gives every node an
//! ed25519 identity ([`Keypair`], whose public key is its [`PeerId`]), separates meshes by
//! [`Network`] (a name and an optional secret, turned into a pre-shared key), and establishes
//! connections with the Noise `XXpsk3_25519_ChaChaPoly_BLAKE2s` handshake, in which each side
//! proves its ed25519 identity by signing its Noise static key.
//!
//! The handshake is a state machine without I/O ([`handshake::Handshake`]); the `net` feature
//! (on by default) adds the tokio driver ([`net`]) that runs it over TCP with a timeout and then
//! carries length-prefixed frames in Noise transport messages.
//!
//! ```
//! use rs2p_base::{handshake::{Handshake, LocalInfo}, Keypair, LocalIdentity, Network};
//!
//! let network = Network::named("example");
//! let alice = LocalIdentity::new(Keypair::generate());
//! let bob = LocalIdentity::new(Keypair::generate());
//!
//! let mut a = Handshake::initiator(&alice, &network, LocalInfo::default(), Some(bob.peer_id()))?;
//! let mut b = Handshake::responder(&bob, &network, LocalInfo::default())?;
//! // Pump messages between the two state machines until both are done.
//! while !(a.is_done() && b.is_done()) {
//!     while let Some(msg) = a.poll_transmit()? { b.handle_message(&msg)?; }
//!     while let Some(msg) = b.poll_transmit()? { a.handle_message(&msg)?; }
//! }
//! let (a_sees, _a_cipher) = a.finish()?;
//! let (b_sees, _b_cipher) = b.finish()?;
//! assert_eq!(a_sees.peer_id, bob.peer_id());
//! assert_eq!(b_sees.peer_id, alice.peer_id());
//! # Ok::<(), rs2p_base::HandshakeError>(())
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod handshake;
mod hash;
mod identity;
#[cfg(feature = "net")]
pub mod net;
mod network;

pub use error::{BaseError, ConnectionError, HandshakeError};
pub use hash::{hash256, hash256_many, Hash256};
pub use identity::{Keypair, LocalIdentity, PeerId, Signature};
pub use network::Network;
pub use rs2p_wire as wire;

/// The rs2p protocol version spoken in the handshake; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 1;
