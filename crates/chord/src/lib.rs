//! # rs2p-chord: a distributed hash table over the mesh
//!
//! placeholder docs
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
pub mod proto;
pub mod ring;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::ChordConfig;
pub use error::ChordError;
pub use proto::{ChordMachine, ChordStats, Completion, NodeRef, Outcome, PROTOCOL};
