//! # rs2p-record: signed records and the order that picks the newest
//!
//! The storage sockets share one notion of a write: a [`Record`] (key, value or tombstone, owner,
//! timestamp, version, lease) signed by its owner in a batch whose Merkle root one ed25519
//! signature covers ([`seal`], [`open`]), and one deterministic order over records of a key
//! ([`resolve`]). The sync socket (`rs2p-sync`) replicates them to every peer; the chord socket
//! (`rs2p-chord`) stores them on the key's successors. Both agree on which write is the newest
//! because both fold with [`resolve::fold`].
//!
//! Everything here is pure: no I/O, no clock.
//!
//! ```
//! use rs2p_base::Keypair;
//! use rs2p_record::{open, seal, Limits, Record};
//!
//! let kp = Keypair::generate();
//! let net = [7u8; 32];
//! let rec = Record {
//!     key: b"k".to_vec().into(),
//!     value: b"v".to_vec().into(),
//!     tombstone: false,
//!     owner: kp.peer_id(),
//!     issued_at: 1_700_000_000_000,
//!     version: 1,
//!     lease_until: 1_700_000_000_000,
//! };
//! let (_stored, batch) = seal(&kp, &net, vec![rec.clone()]);
//! let limits = Limits {
//!     network_id: net,
//!     now: 1_700_000_000_000,
//!     max_skew: 10_000,
//!     max_lease: 0,
//!     max_key_len: 1024,
//!     max_value_len: 1024,
//!     accept_unsigned: false,
//! };
//! let opened = open(batch, &limits).expect("a valid batch");
//! assert_eq!(opened[0].record(), rec);
//! ```

mod encode;
mod error;
pub mod merkle;
pub mod record;
pub mod relative;
pub mod resolve;
mod verified;

pub use error::RecordError;
pub use record::{
    open, open_flooded, open_with, regroup, reopen, seal, seal_unsigned, short, BatchAuth, Limits,
    Record, RecordFields, Stored,
};
pub use verified::VerifiedBatches;
