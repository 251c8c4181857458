//! Data directories for rs2p's storage sockets: a node's identity and its records in an
//! embedded database ([redb]), written by one thread in group commits.
//!
//! A data directory holds one file, `rs2p.redb`, with three tables:
//!
//! - `meta`: the format (`rs2p-data/2`; version 1 stored each record with its owner inside and
//!   is refused), the socket kind, the network id, the settings that change what records mean,
//!   and the node's secret key (the directory is made mode 0700);
//! - `keys`: per key, its checkpoint and records (`DiskKey` in `proto/rs2p/v1/store.proto`);
//! - `batches`: each signed batch's owner and leaves, once however many of its records are kept.
//!
//! A socket submits the keys a call changed ([`Disk::submit`]); the writer thread takes
//! everything queued, writes it in one transaction and commits it with one `fsync`, then the
//! next group. Writes queued for the same key coalesce. With [`DataOptions::durable`] the socket
//! waits for [`Committed::Upto`] before it acknowledges a write; otherwise a crash loses at most
//! the writes queued since the last commit began (one commit window).
//!
//! Records are verified when they first arrive; on load, each record's bytes are checked against
//! its leaf hash and its key, not its signature again. Opening refuses, with a typed
//! [`PersistError`], a directory that is not empty and not a data directory, a damaged
//! database, one written by another kind of socket, network, settings or identity, and one
//! another process has open.
//!
//! ```
//! use rs2p_persist::{DataOptions, Disk, Expect};
//!
//! let dir = std::env::temp_dir().join(format!("rs2p-persist-doc-{}", std::process::id()));
//! let _ = std::fs::remove_dir_all(&dir);
//! let expect = Expect { kind: "example", network: [1; 32], settings: String::new(), keypair: None };
//! let (disk, loaded) = Disk::open(&DataOptions::new(&dir), expect.clone(), |_| {}).unwrap();
//! assert!(loaded.created);
//! let me = loaded.keypair.peer_id();
//! disk.close().unwrap();
//! drop(disk);
//!
//! // The same directory gives the same identity; another network's is refused.
//! let (_disk, again) = Disk::open(&DataOptions::new(&dir), expect.clone(), |_| {}).unwrap();
//! assert_eq!(again.keypair.peer_id(), me);
//! drop(_disk);
//! let other = Expect { network: [2; 32], ..expect };
//! assert!(Disk::open(&DataOptions::new(&dir), other, |_| {}).is_err());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! [redb]: https://docs.rs/redb

mod codec;
mod disk;
mod error;
#[cfg(feature = "async")]
mod link;

pub use codec::KeyEntry;
pub use disk::{Committed, DataOptions, Disk, DiskStats, Expect, Loaded, Op, FILE, FORMAT, GATHER};
pub use error::PersistError;
#[cfg(feature = "async")]
pub use link::DiskLink;
