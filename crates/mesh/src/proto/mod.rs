//! The mesh layer without I/O: the [`Mesh`] state machine, the [`Handler`] extension point, and
//! [`Node`], which joins them. Builds without tokio (`--no-default-features`).

mod flood;
mod handler;
mod mesh;
mod node;
mod rate;
mod relay_tree;
mod seen_cache;
mod shared;
mod stats;

pub use flood::{msg_id, FEATURES, FEATURE_COMPACT_FLOODS, FEATURE_FLAT_FLOODS};
pub use handler::{Context, Delivery, Handler, InboundMessage, Verdict};
pub use mesh::{CloseReason, ConnId, Direction, Inbound, Mesh, MeshEvent, Output, Relay};
pub use node::Node;
pub use rate::TokenBucket;
pub use relay_tree::{RelayTree, TreeMsg, TreeOp, MAX_ORIGINS};
pub use seen_cache::{MsgId, SeenCache};
pub use shared::Shared;
pub use stats::{MeshStats, PeerStats, Traffic};

/// Time in the state machines: Unix milliseconds (virtual in simulations).
pub type Millis = u64;
