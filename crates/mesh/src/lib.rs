//! # rs2p-mesh: the mesh socket
//!
//! placeholder docs
#![forbid(unsafe_code)]

mod config;
mod error;
#[cfg(feature = "net")]
pub mod net;
pub mod proto;

pub use config::MeshConfig;
pub use error::MeshError;
#[cfg(feature = "net")]
pub use net::{EventStream, MeshOptions, MeshSocket};
pub use proto::{
    Context, Delivery, Handler, InboundMessage, MeshEvent, MeshStats, Shared, Verdict,
};
pub use rs2p_base::{Keypair, Network, PeerId};
